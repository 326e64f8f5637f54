package ociimage

import (
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

var bothPlatforms = []v1.Platform{{OS: "linux", Architecture: "amd64"}, {OS: "linux", Architecture: "arm64"}}

// An index written as an OCI layout reads back as the same index (same digest, OCI media types, the platforms in
// order, the layout naming it), and CheckIndex refuses it for what it is not: a script is not a binary of either
// machine, and an index of one platform is not one of two. (hack/release's test checks real cross-compiled ELFs.)
func TestALayoutReadsBackAsTheIndexAndCheckIndexRefusesWhatItIsNot(t *testing.T) {
	spec := testSpec(t) // its /opt/app/app is executable and not an ELF
	var imgs []Platformed
	for _, p := range bothPlatforms {
		img, err := BuildFor(spec, p.Architecture)
		if err != nil {
			t.Fatal(err)
		}
		imgs = append(imgs, Platformed{Platform: p, Image: img})
	}
	idx, err := NewIndex(imgs)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "layout")
	digest, err := WriteLayout(dir, "v1.2.3", idx)
	if err != nil {
		t.Fatal(err)
	}
	back, name, err := ReadLayout(dir)
	if err != nil {
		t.Fatal(err)
	}
	if d, _ := back.Digest(); d != digest || name != "v1.2.3" {
		t.Errorf("read back %s named %q, wrote %s named v1.2.3", d, name, digest)
	}
	m, _ := back.IndexManifest()
	if mt, _ := back.MediaType(); mt != types.OCIImageIndex || len(m.Manifests) != 2 || m.Manifests[1].Platform.Architecture != "arm64" {
		t.Fatalf("index %s with %+v", mt, m.Manifests)
	}
	if raw, _ := back.RawManifest(); strings.Contains(string(raw), "artifactType") {
		t.Errorf("the index names an artifactType, which skopeo 1.9 drops when it copies the index: %s", raw)
	}
	img, _ := back.Image(m.Manifests[1].Digest)
	if mt, _ := img.MediaType(); mt != types.OCIManifestSchema1 {
		t.Errorf("arm64 manifest media type %s", mt)
	}
	if cf, _ := img.ConfigFile(); cf.Architecture != "arm64" || cf.OS != "linux" {
		t.Errorf("arm64 config says %s/%s", cf.OS, cf.Architecture)
	}
	_, err = CheckIndex(back, bothPlatforms)
	if err == nil || !strings.Contains(err.Error(), "linux/arm64: /opt/app/app is executable but not an ELF binary") {
		t.Errorf("a script in place of a binary: CheckIndex says %v", err)
	}
	_, err = CheckIndex(back, bothPlatforms[:1])
	if err == nil || err.Error() != "the index holds platforms [linux/amd64 linux/arm64], want [linux/amd64]" {
		t.Errorf("one platform asked for: CheckIndex says %v", err)
	}
}

func TestParsePlatformsTakesLinuxAmd64AndArm64Only(t *testing.T) {
	got, err := ParsePlatforms("platforms", "linux/amd64, linux/arm64")
	if err != nil || len(got) != 2 || got[0].Architecture != "amd64" || got[1].Architecture != "arm64" {
		t.Fatalf("got %v, %v", got, err)
	}
	if _, err := ParsePlatforms("platforms", "linux/386"); err == nil || !strings.HasPrefix(err.Error(), "-platforms: unknown architecture \"386\"") {
		t.Errorf("linux/386: %v", err)
	}
}
