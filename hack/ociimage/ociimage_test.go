package ociimage

import (
	"archive/tar"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

func testSpec(t *testing.T) Spec {
	t.Helper()
	src := filepath.Join(t.TempDir(), "app")
	if err := os.WriteFile(src, []byte("#!binary"), 0o755); err != nil {
		t.Fatal(err)
	}
	return Spec{
		Ref:        "cnimedic.local/test:dev",
		Files:      []File{{Path: "/opt/app/app", Source: src, Mode: 0o755}, {Path: "/etc/motd", Data: []byte("hi\n"), UID: 65532, GID: 65532}},
		Dirs:       []string{"/tmp"},
		Entrypoint: []string{"/opt/app/app"},
		User:       "65532:65532",
		Labels:     map[string]string{"k": "v"},
	}
}

// The archive reads back as the image that was built: config, files with their modes and owners, and the tag
// ctr import uses as the image name.
func TestWriteArchiveRoundTrip(t *testing.T) {
	spec := testSpec(t)
	img, err := Build(spec)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "test.tar")
	if err := WriteArchive(file, spec.Ref, img); err != nil {
		t.Fatal(err)
	}
	manifest, err := tarball.LoadManifest(func() (io.ReadCloser, error) { return os.Open(file) })
	if err != nil {
		t.Fatal(err)
	}
	if len(manifest) != 1 || len(manifest[0].RepoTags) != 1 || manifest[0].RepoTags[0] != spec.Ref {
		t.Fatalf("manifest.json: want one image tagged %s, got %+v", spec.Ref, manifest)
	}
	tag, _ := name.NewTag(spec.Ref)
	back, err := tarball.ImageFromPath(file, &tag)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := back.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cf.OS != "linux" || cf.Config.User != "65532:65532" || len(cf.Config.Entrypoint) != 1 || cf.Config.Entrypoint[0] != "/opt/app/app" || cf.Config.Labels["k"] != "v" {
		cfJSON, _ := json.Marshal(cf)
		t.Fatalf("config does not carry the spec: %s", cfJSON)
	}
	layers, err := back.Layers()
	if err != nil || len(layers) != 1 {
		t.Fatalf("want one layer, got %d (%v)", len(layers), err)
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	got := map[string]*tar.Header{}
	tr := tar.NewReader(rc)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got[hdr.Name] = hdr
	}
	for name, want := range map[string]int64{"opt/": 0o755, "opt/app/": 0o755, "opt/app/app": 0o755, "etc/motd": 0o644, "tmp/": 0o1777} {
		h, ok := got[name]
		if !ok {
			t.Errorf("layer lacks %s (has %v)", name, keys(got))
			continue
		}
		if h.Mode != want {
			t.Errorf("%s: mode %o, want %o", name, h.Mode, want)
		}
	}
	if h := got["etc/motd"]; h != nil && (h.Uid != 65532 || h.Gid != 65532) {
		t.Errorf("etc/motd owned by %d:%d, want 65532:65532", h.Uid, h.Gid)
	}
	if d, err := ArchiveDigest(file); err != nil {
		t.Fatal(err)
	} else if want, _ := img.Digest(); d != want {
		t.Errorf("ArchiveDigest %s, want %s", d, want)
	}
}

// Same inputs, same digest: the lab relies on it to skip rewriting unchanged images.
func TestBuildIsReproducible(t *testing.T) {
	spec := testSpec(t)
	a, err := Build(spec)
	if err != nil {
		t.Fatal(err)
	}
	b, err := Build(spec)
	if err != nil {
		t.Fatal(err)
	}
	da, _ := a.Digest()
	db, _ := b.Digest()
	if da != db {
		t.Fatalf("two builds of one spec differ: %s vs %s", da, db)
	}
	spec.Files[1].Data = []byte("changed\n")
	c, err := Build(spec)
	if err != nil {
		t.Fatal(err)
	}
	if dc, _ := c.Digest(); dc == da {
		t.Fatal("a changed file did not change the digest")
	}
}

func TestSpecValidation(t *testing.T) {
	for name, s := range map[string]Spec{
		"bad ref":       {Ref: "Not A Ref", Files: []File{{Path: "/a", Data: []byte{}}}},
		"relative path": {Ref: "x.local/a:b", Files: []File{{Path: "a", Data: []byte{}}}},
		"both sources":  {Ref: "x.local/a:b", Files: []File{{Path: "/a", Data: []byte{}, Source: "/etc/hostname"}}},
		"no source":     {Ref: "x.local/a:b", Files: []File{{Path: "/a"}}},
		"twice":         {Ref: "x.local/a:b", Files: []File{{Path: "/a", Data: []byte{}}, {Path: "/a/", Data: []byte{}}}},
	} {
		if _, err := Build(s); err == nil {
			t.Errorf("%s: Build accepted %+v", name, s)
		}
	}
}

func keys(m map[string]*tar.Header) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}
