package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

func committedManifest(t *testing.T) (Plugin, []byte) {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	raw, err := os.ReadFile(filepath.Join(filepath.Dir(file), "..", "..", "deploy", "krew", "cnimedic.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var p Plugin
	if err := yaml.UnmarshalStrict(raw, &p); err != nil {
		t.Fatalf("deploy/krew/cnimedic.yaml: %v", err)
	}
	return p, raw
}

// TestManifestIsAValidKrewPlugin checks the committed manifest against krew's rules for an index plugin: its
// name matches the file, the version is semantic, and each platform selects one os/arch, downloads an archive of
// that version with a sha256, and names a binary the archive holds.
func TestManifestIsAValidKrewPlugin(t *testing.T) {
	p, raw := committedManifest(t)
	if p.APIVersion != "krew.googlecontainertools.github.com/v1alpha2" || p.Kind != "Plugin" || p.Metadata.Name != "cnimedic" {
		t.Errorf("apiVersion %q kind %q name %q", p.APIVersion, p.Kind, p.Metadata.Name)
	}
	if !regexp.MustCompile(`^v\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?$`).MatchString(p.Spec.Version) {
		t.Errorf("version %q is not a semantic version with a v", p.Spec.Version)
	}
	if p.Spec.ShortDescription == "" || len(p.Spec.ShortDescription) > 80 || p.Spec.Homepage == "" || p.Spec.Description == "" {
		t.Error("shortDescription (at most 80 characters), homepage and description are required")
	}
	seen := map[Target]bool{}
	sha := regexp.MustCompile(`^[0-9a-f]{64}$`)
	for _, pl := range p.Spec.Platforms {
		tg := Target{OS: pl.Selector.MatchLabels["os"], Arch: pl.Selector.MatchLabels["arch"]}
		seen[tg] = true
		if !sha.MatchString(pl.Sha256) {
			t.Errorf("%v: sha256 %q", tg, pl.Sha256)
		}
		if !strings.HasPrefix(pl.URI, "https://") || !strings.HasSuffix(pl.URI, "/"+tg.Archive(p.Spec.Version)) {
			t.Errorf("%v: uri %q is not the https archive of version %s", tg, pl.URI, p.Spec.Version)
		}
		if pl.Bin != tg.Binary() || len(pl.Files) != 1 || pl.Files[0].From != tg.Binary() {
			t.Errorf("%v: bin %q, files %v", tg, pl.Bin, pl.Files)
		}
	}
	for _, tg := range Targets {
		if !seen[tg] {
			t.Errorf("no platform for %v", tg)
		}
	}
	// The file is what the generator writes for these sums: a hand edit is caught here.
	sums := map[Target]string{}
	for _, pl := range p.Spec.Platforms {
		sums[Target{OS: pl.Selector.MatchLabels["os"], Arch: pl.Selector.MatchLabels["arch"]}] = pl.Sha256
	}
	want, err := Render(Manifest(p.Spec.Version, sums))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(raw, want) {
		t.Error("deploy/krew/cnimedic.yaml differs from what hack/krew writes: regenerate it with go run ./hack/krew")
	}
}

// TestArchiveIsReproducibleAndHoldsTheBinary: the same binary gives the same bytes (the manifest's sums can be
// re-checked), and the archive holds it executable under the name the manifest's bin and files use.
func TestArchiveIsReproducibleAndHoldsTheBinary(t *testing.T) {
	bin := []byte("\x7fELF not really")
	var a, b bytes.Buffer
	if err := Archive(&a, "kubectl-cnimedic", bin); err != nil {
		t.Fatal(err)
	}
	if err := Archive(&b, "kubectl-cnimedic", bin); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a.Bytes(), b.Bytes()) {
		t.Fatal("two archives of one binary differ")
	}
	gz, err := gzip.NewReader(&a)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(gz)
	hdr, err := tr.Next()
	if err != nil {
		t.Fatal(err)
	}
	content, _ := io.ReadAll(tr)
	if hdr.Name != "kubectl-cnimedic" || hdr.Mode&0o111 == 0 || !bytes.Equal(content, bin) {
		t.Errorf("archive holds %s mode %o (%d bytes)", hdr.Name, hdr.Mode, len(content))
	}
	if _, err := tr.Next(); err != io.EOF {
		t.Errorf("archive holds more than the binary: %v", err)
	}
}
