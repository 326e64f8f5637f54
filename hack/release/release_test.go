package main

import (
	"bytes"
	"debug/elf"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/cnimedic/cnimedic/hack/images/imagespec"
	"github.com/cnimedic/cnimedic/hack/krew/krewplugin"
	"github.com/cnimedic/cnimedic/hack/ociimage"
	"github.com/cnimedic/cnimedic/test/labtest"
)

// TestMain keeps the tests' temporary files under the repository's .lab/tmp, never /tmp.
func TestMain(m *testing.M) { labtest.Main(m) }

const tinyPkg = "./hack/release/testdata/tiny"

var platforms = []v1.Platform{{OS: "linux", Architecture: "amd64"}, {OS: "linux", Architecture: "arm64"}}

// repoRoot is the repository, where go build resolves ./hack/... and the committed install and chart are.
func repoRoot(t *testing.T) string {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// tiny cross-compiles the tiny program for every platform with the release's own goBuild (Go's build cache makes
// repeats quick); it returns the directory holding ARCH/tiny.
func tiny(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	wd, _ := os.Getwd()
	defer os.Chdir(wd)
	if err := os.Chdir(repoRoot(t)); err != nil {
		t.Fatal(err)
	}
	for _, p := range platforms {
		if err := goBuild(filepath.Join(dir, p.Architecture, "tiny"), tinyPkg, p.Architecture); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// bundle writes a one-plugin bundle (the tiny binary of arch) with its SHA256SUMS, as hack/build-cni-plugins.sh
// lays one out.
func bundle(t *testing.T, bin string) string {
	t.Helper()
	dir := t.TempDir()
	data, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "bridge"), data, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "SHA256SUMS"), []byte(sha256hex(data)+"  bridge\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

func sha256hex(b []byte) string {
	return fmt.Sprintf("%x", sha256sum(b))
}

// tinySpecs are the three released images for arch, as the release makes them (imagespec), with the tiny program
// standing in for every binary and for the executor's plugin bundle.
func tinySpecs(t *testing.T, tinyDir, arch, registry, version string) []ociimage.Spec {
	t.Helper()
	src := filepath.Join(tinyDir, arch, "tiny")
	binDir := t.TempDir()
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range imagespec.Binaries {
		if err := os.WriteFile(filepath.Join(binDir, b.Name), data, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	files, err := imagespec.BundleFiles(bundle(t, src))
	if err != nil {
		t.Fatal(err)
	}
	specs, err := imagespec.Specs(imagespec.Inputs{Ref: func(n string) string { return registry + "/" + n + ":" + version }, BinDir: binDir, Bundle: files, Title: "cnimedic"})
	if err != nil {
		t.Fatal(err)
	}
	return specs
}

// tinyRelease writes the images, the pinned install and chart, and the krew archives and manifest of a release
// made of the tiny program into a directory laid out as `make release` lays one out.
func tinyRelease(t *testing.T) (string, string, []Pin) {
	t.Helper()
	const version, registry = "v0.0.0-test.1", "registry.example/cnimedic"
	dir := filepath.Join(t.TempDir(), version)
	perArch := map[string][]ociimage.Spec{}
	tinyDir := tiny(t)
	for _, p := range platforms {
		perArch[p.Architecture] = tinySpecs(t, tinyDir, p.Architecture, registry, version)
	}
	var pins []Pin
	for _, n := range Released {
		var specs []ociimage.Spec
		for _, p := range platforms {
			specs = append(specs, specNamed(perArch[p.Architecture], n))
		}
		pin, err := Assemble(n, registry+"/"+n+":"+version, version, filepath.Join(dir, "images", n), platforms, specs)
		if err != nil {
			t.Fatal(err)
		}
		pins = append(pins, pin)
	}
	root := repoRoot(t)
	dev, err := os.ReadFile(filepath.Join(root, "deploy", "cnimedic.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	pinned, err := PinInstall(dev, pins)
	if err != nil {
		t.Fatal(err)
	}
	if err := writeFile(filepath.Join(dir, "cnimedic.yaml"), pinned); err != nil {
		t.Fatal(err)
	}
	if _, err := PinChart(filepath.Join(root, "deploy", "helm", "cnimedic"), version, pins, filepath.Join(dir, "helm")); err != nil {
		t.Fatal(err)
	}
	targets := []krewplugin.Target{{OS: "linux", Arch: "amd64"}, {OS: "linux", Arch: "arm64"}, {OS: "darwin", Arch: "arm64"}}
	wd, _ := os.Getwd()
	if err := os.Chdir(root); err != nil {
		t.Fatal(err)
	}
	sums, err := krewplugin.Package(version, tinyPkg, filepath.Join(t.TempDir(), "build"), filepath.Join(dir, "kubectl-cnimedic"), targets)
	os.Chdir(wd)
	if err != nil {
		t.Fatal(err)
	}
	manifest, err := krewplugin.Render(krewplugin.ManifestFor(version, sums, targets))
	if err != nil {
		t.Fatal(err)
	}
	if err := writeFile(filepath.Join(dir, "krew", "cnimedic.yaml"), manifest); err != nil {
		t.Fatal(err)
	}
	return dir, tinyDir, pins
}

// TestEveryReleasedIndexHoldsBothPlatformsWithBinariesOfTheirOwnMachine builds a release of the tiny program with
// the release's code (cross-compiled binaries, per-arch verified bundles, indexes written as OCI layouts and read
// back) and checks it: each index holds exactly linux/amd64 and linux/arm64, every binary in each image is an ELF
// of that platform's machine, the pinned install and chart name the indexes' digests, and the krew manifest's
// sums are the archives'.
func TestEveryReleasedIndexHoldsBothPlatformsWithBinariesOfTheirOwnMachine(t *testing.T) {
	dir, _, pins := tinyRelease(t)
	for _, pin := range pins {
		idx, name, err := ociimage.ReadLayout(filepath.Join(dir, "images", pin.Name))
		if err != nil {
			t.Fatal(err)
		}
		if name != "v0.0.0-test.1" {
			t.Errorf("%s: the layout names the index %q, want the version", pin.Name, name)
		}
		report, err := ociimage.CheckIndex(idx, platforms)
		if err != nil {
			t.Errorf("%s: %v", pin.Name, err)
		}
		for _, p := range platforms {
			bins := report[p.OS+"/"+p.Architecture]
			// Checked independently of CheckIndex: each binary's ELF machine, read from the image's layer.
			if len(bins) == 0 {
				t.Errorf("%s %s: no binary checked", pin.Name, p.Architecture)
			}
		}
		if pin.Name == "executor" {
			bins := strings.Join(report["linux/arm64"], " ")
			if !strings.Contains(bins, "/opt/cnimedic/cni-bundle/bridge") || !strings.Contains(bins, "/remediator") {
				t.Errorf("executor arm64: checked binaries %s, want the remediator and the bundle's plugin", bins)
			}
		}
		m, _ := idx.IndexManifest()
		if len(m.Manifests) != 2 {
			t.Errorf("%s: %d manifests, want 2", pin.Name, len(m.Manifests))
		}
		for _, d := range m.Manifests {
			img, _ := idx.Image(d.Digest)
			machine := elfMachineOf(t, img, entrypointOf(pin.Name))
			if want := ociimage.Machines[d.Platform.Architecture]; machine != want {
				t.Errorf("%s %s: the entrypoint is an ELF for %s, want %s", pin.Name, d.Platform.Architecture, machine, want)
			}
		}
	}
	if err := Verify(dir, platforms); err != nil {
		t.Fatalf("the tiny release does not verify: %v", err)
	}
	install, _ := os.ReadFile(filepath.Join(dir, "cnimedic.yaml"))
	for _, pin := range pins {
		if !bytes.Contains(install, []byte(pin.Ref+"@"+pin.Digest)) {
			t.Errorf("the pinned install does not name %s@%s", pin.Ref, pin.Digest)
		}
	}
	if bytes.Contains(install, []byte("cnimedic.local/")) {
		t.Error("the pinned install still names a dev image")
	}
}

// TestAReleaseWhosePinsOrSumsDisagreeDoesNotVerify: the checks fail for a pin that is not the index's digest, an
// archive that is not the one the krew manifest describes, and an index whose arm64 image holds an amd64 binary.
func TestAReleaseWhosePinsOrSumsDisagreeDoesNotVerify(t *testing.T) {
	dir, tinyDir, pins := tinyRelease(t)
	// A pin of another digest.
	install := filepath.Join(dir, "cnimedic.yaml")
	orig, _ := os.ReadFile(install)
	other := strings.Replace(string(orig), pins[1].Digest, "sha256:"+strings.Repeat("0", 64), 1)
	if err := os.WriteFile(install, []byte(other), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := Verify(dir, platforms); err == nil || !strings.Contains(err.Error(), "names the executor image by") {
		t.Errorf("a wrong executor pin: Verify says %v", err)
	}
	os.WriteFile(install, orig, 0o644)
	// An archive changed after the manifest was written.
	archives, _ := filepath.Glob(filepath.Join(dir, "kubectl-cnimedic", "*linux_arm64.tar.gz"))
	if len(archives) != 1 {
		t.Fatalf("want one linux/arm64 archive, have %v", archives)
	}
	if err := os.WriteFile(archives[0], []byte("not the archive"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := CheckKrew(filepath.Join(dir, "krew", "cnimedic.yaml"), filepath.Join(dir, "kubectl-cnimedic")); err == nil || !strings.Contains(err.Error(), "linux_arm64.tar.gz") {
		t.Errorf("a changed archive: CheckKrew says %v", err)
	}
	// An arm64 image holding the amd64 binary.
	amd := tinySpecs(t, tinyDir, "amd64", "registry.example/cnimedic", "v0.0.0-test.1")
	wrong := specNamed(amd, "manager")
	_, err := Assemble("manager", "registry.example/cnimedic/manager:v0.0.0-test.1", "v0.0.0-test.1", filepath.Join(t.TempDir(), "manager"), platforms, []ociimage.Spec{wrong, wrong})
	if err == nil || !strings.Contains(err.Error(), "linux/arm64: /manager is an ELF for EM_X86_64, want EM_AARCH64") {
		t.Errorf("an amd64 binary in the arm64 image: Assemble says %v", err)
	}
	// A bundle whose binary does not match its SHA256SUMS is refused when the image is assembled.
	b := bundle(t, filepath.Join(tinyDir, "arm64", "tiny"))
	if err := os.WriteFile(filepath.Join(b, "bridge"), []byte("\x7fELF tampered"), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := imagespec.BundleFiles(b); err == nil {
		t.Error("a bundle whose plugin does not match SHA256SUMS was accepted")
	}
}

// TestAnUnknownArchitectureIsRefusedNamingTheFlag: -platforms takes linux/amd64 and linux/arm64 only, and says so
// in one line naming the flag.
func TestAnUnknownArchitectureIsRefusedNamingTheFlag(t *testing.T) {
	for in, want := range map[string]string{
		"linux/amd64,linux/s390x": `-platforms: unknown architecture "s390x" in "linux/s390x" (want amd64 or arm64)`,
		"darwin/arm64":            `-platforms: "darwin/arm64" is not linux/ARCH`,
		"linux/arm64,linux/arm64": `-platforms: linux/arm64 given twice`,
	} {
		_, err := parseConfig("v0.1.0", "bin/release", "ghcr.io/cnimedic", in, "bin/cni-bundle-linux-{arch}", "deploy/cnimedic.yaml", "deploy/helm/cnimedic", "linux/amd64")
		if err == nil || err.Error() != want || strings.Contains(err.Error(), "\n") {
			t.Errorf("-platforms %s: got %v, want %s", in, err, want)
		}
	}
	if _, err := parseConfig("0.1.0", "bin/release", "ghcr.io/cnimedic", "linux/amd64", "x{arch}", "i", "c", "linux/amd64"); err == nil || !strings.HasPrefix(err.Error(), "-version ") {
		t.Errorf("a version without its v: %v", err)
	}
	if _, err := ociimage.BuildFor(ociimage.Spec{Ref: "x.local/a:b", Files: []ociimage.File{{Path: "/a", Data: []byte{}}}}, "riscv64"); err == nil {
		t.Error("BuildFor accepted riscv64")
	}
}

func entrypointOf(name string) string {
	switch name {
	case "manager":
		return "manager"
	case "executor":
		return "remediator"
	default:
		return "labapp"
	}
}

// elfMachineOf reads one file of the image's filesystem and returns its ELF machine.
func elfMachineOf(t *testing.T, img v1.Image, file string) elf.Machine {
	t.Helper()
	data := readImageFile(t, img, file)
	f, err := elf.NewFile(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("/%s: %v", file, err)
	}
	return f.Machine
}
