// Command release builds a cnimedic release into one directory (make release):
//
//	images/{manager,executor,canary}/  OCI image layouts, each an image index of linux/amd64 and linux/arm64 (the
//	                                   binaries cross-compiled with CGO_ENABLED=0; the executor's plugin bundle is
//	                                   the pinned reference plugins built for that arch, verified against its
//	                                   SHA256SUMS as the image is assembled), named VERSION in index.json
//	kubectl-cnimedic/                  the kubectl plugin's archives, one per os/arch
//	krew/cnimedic.yaml                 the krew manifest listing every archive with its sha256
//	cnimedic.yaml                      the install (deploy/cnimedic.yaml) with the images pinned by index digest
//	helm/cnimedic-X.tgz                the Helm chart packaged with the same pins, and helm/values-pinned.yaml, the
//	                                   same pins as a values file for the chart in deploy/helm/cnimedic
//	release.json, SHA256SUMS           the images' references and digests; the sums of every file above
//
// Before it returns, the release checks what it wrote: each index holds exactly the platforms asked for and every
// binary in each image is an ELF of its platform's machine; the pinned install and chart name the indexes'
// digests; the krew manifest's sums are the archives'.
//
// Usage: go run ./hack/release -version v0.1.0 [-out bin/release] [-registry ghcr.io/cnimedic]
package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"sigs.k8s.io/yaml"

	"github.com/cnimedic/cnimedic/hack/images/imagespec"
	"github.com/cnimedic/cnimedic/hack/krew/krewplugin"
	"github.com/cnimedic/cnimedic/hack/ociimage"
)

// versionRE is a semantic version with a v: krew, image tags and (without the v) Helm accept it.
var versionRE = regexp.MustCompile(`^v\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?$`)

// Released are the images a release ships; the lab's pause and workload images are the lab's only.
var Released = []string{"manager", "executor", "canary"}

// devRef is how the dev install (deploy/cnimedic.yaml) and the chart's defaults name an image.
func devRef(name string) string { return "cnimedic.local/" + name + ":dev" }

type config struct {
	version     string
	out         string // the release directory (OUT/VERSION)
	scratch     string // the binaries (OUT/.build), overwritten by each release
	registry    string
	platforms   []v1.Platform
	bundles     string // the per-arch plugin bundles, {arch} replaced
	install     string
	chart       string
	krewTargets []krewplugin.Target
}

func main() {
	version := flag.String("version", "", "release version, a semantic version with a v such as v0.1.0 (required)")
	out := flag.String("out", "bin/release", "the release is written into OUT/VERSION")
	registry := flag.String("registry", "ghcr.io/cnimedic", "where the images will be pushed: they are named REGISTRY/NAME:VERSION@DIGEST")
	platforms := flag.String("platforms", "linux/amd64,linux/arm64", "the images' platforms (linux/amd64, linux/arm64)")
	bundles := flag.String("cni-bundles", "bin/cni-bundle-linux-{arch}", "each arch's reference plugin bundle with its SHA256SUMS (hack/build-cni-plugins.sh bundle-ARCH)")
	install := flag.String("install", "deploy/cnimedic.yaml", "the dev install whose images the release pins (read only)")
	chart := flag.String("chart", "deploy/helm/cnimedic", "the Helm chart the release packages (read only)")
	krewTargets := flag.String("krew-targets", targetList(krewplugin.Targets), "the kubectl plugin's os/arch archives")
	flag.Parse()
	cfg, err := parseConfig(*version, *out, *registry, *platforms, *bundles, *install, *chart, *krewTargets)
	if err == nil {
		err = release(cfg)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "release:", err)
		os.Exit(1)
	}
}

func targetList(ts []krewplugin.Target) string {
	var s []string
	for _, t := range ts {
		s = append(s, t.OS+"/"+t.Arch)
	}
	return strings.Join(s, ",")
}

// parseConfig checks the flags; each error is one line naming its flag.
func parseConfig(version, out, registry, platforms, bundles, install, chart, krewTargets string) (config, error) {
	cfg := config{version: version, registry: strings.TrimSuffix(registry, "/"), bundles: bundles, install: install, chart: chart}
	if !versionRE.MatchString(version) {
		return cfg, fmt.Errorf("-version %q: want a semantic version with a v, such as v0.1.0", version)
	}
	if _, err := name.NewTag(cfg.registry+"/manager:"+version, name.StrictValidation); err != nil {
		return cfg, fmt.Errorf("-registry %q: %v", registry, err)
	}
	var err error
	if cfg.platforms, err = ociimage.ParsePlatforms("platforms", platforms); err != nil {
		return cfg, err
	}
	if !strings.Contains(bundles, "{arch}") {
		return cfg, fmt.Errorf("-cni-bundles %q: want a path with {arch}", bundles)
	}
	for _, t := range strings.Split(krewTargets, ",") {
		os, arch, ok := strings.Cut(strings.TrimSpace(t), "/")
		if !ok || os == "" || arch == "" {
			return cfg, fmt.Errorf("-krew-targets: %q is not OS/ARCH", t)
		}
		cfg.krewTargets = append(cfg.krewTargets, krewplugin.Target{OS: os, Arch: arch})
	}
	cfg.out = filepath.Join(out, version)
	cfg.scratch = filepath.Join(out, ".build")
	return cfg, nil
}

// Pin is one released image: its pinned reference names the index by digest (the tag is for people).
type Pin struct {
	Name      string            `json:"name"`
	Ref       string            `json:"ref"`
	Digest    string            `json:"digest"`
	Layout    string            `json:"layout"`    // the OCI layout, relative to the release directory
	Platforms map[string]string `json:"platforms"` // platform -> that image's manifest digest
}

func (p Pin) Pinned() string { return p.Ref + "@" + p.Digest }

func release(cfg config) error {
	start := time.Now()
	if err := os.RemoveAll(cfg.out); err != nil {
		return err
	}
	if err := os.MkdirAll(cfg.out, 0o755); err != nil {
		return err
	}
	// Each arch's specs, from that arch's binaries and verified plugin bundle.
	perArch := map[string][]ociimage.Spec{}
	for _, p := range cfg.platforms {
		binDir := filepath.Join(cfg.scratch, p.Architecture)
		for _, b := range imagespec.Binaries {
			if b.Name == "pause" {
				continue // the lab's sandbox image only
			}
			if err := goBuild(filepath.Join(binDir, b.Name), b.Pkg, p.Architecture); err != nil {
				return err
			}
		}
		bundleDir := strings.ReplaceAll(cfg.bundles, "{arch}", p.Architecture)
		bundle, err := imagespec.BundleFiles(bundleDir)
		if err != nil {
			return fmt.Errorf("%s plugin bundle: %w", p.Architecture, err)
		}
		specs, err := imagespec.Specs(imagespec.Inputs{Ref: func(n string) string { return cfg.registry + "/" + n + ":" + cfg.version },
			BinDir: binDir, Bundle: bundle, Title: "cnimedic"})
		if err != nil {
			return err
		}
		perArch[p.Architecture] = specs
	}
	var pins []Pin
	for _, n := range Released {
		var specs []ociimage.Spec
		for _, p := range cfg.platforms {
			specs = append(specs, specNamed(perArch[p.Architecture], n))
		}
		pin, err := Assemble(n, cfg.registry+"/"+n+":"+cfg.version, cfg.version, filepath.Join(cfg.out, "images", n), cfg.platforms, specs)
		if err != nil {
			return err
		}
		pin.Layout = filepath.ToSlash(filepath.Join("images", n))
		pins = append(pins, pin)
		fmt.Fprintf(os.Stderr, "release: %s %s (%s)\n", pin.Ref, pin.Digest, strings.Join(sortedKeys(pin.Platforms), ", "))
	}

	// The kubectl plugin and its krew manifest.
	sums, err := krewplugin.Package(cfg.version, "./cmd/kubectl-cnimedic", filepath.Join(cfg.scratch, "kubectl-cnimedic"), filepath.Join(cfg.out, "kubectl-cnimedic"), cfg.krewTargets)
	if err != nil {
		return err
	}
	krewManifest, err := krewplugin.Render(krewplugin.ManifestFor(cfg.version, sums, cfg.krewTargets))
	if err != nil {
		return err
	}
	// Render's first line names hack/krew, which writes the committed manifest; this one is the release's.
	_, body, _ := bytes.Cut(krewManifest, []byte("\n"))
	krewManifest = append([]byte("# cnimedic "+cfg.version+": the krew manifest of the archives in ../kubectl-cnimedic (make release); do not edit.\n"), body...)
	if err := writeFile(filepath.Join(cfg.out, "krew", "cnimedic.yaml"), krewManifest); err != nil {
		return err
	}

	// The install and the chart, pinned.
	dev, err := os.ReadFile(cfg.install)
	if err != nil {
		return fmt.Errorf("-install: %w", err)
	}
	pinned, err := PinInstall(dev, pins)
	if err != nil {
		return fmt.Errorf("-install %s: %w", cfg.install, err)
	}
	if err := writeFile(filepath.Join(cfg.out, "cnimedic.yaml"), pinned); err != nil {
		return err
	}
	if _, err := PinChart(cfg.chart, cfg.version, pins, filepath.Join(cfg.out, "helm")); err != nil {
		return fmt.Errorf("-chart %s: %w", cfg.chart, err)
	}

	rel, err := json.MarshalIndent(map[string]any{"version": cfg.version, "images": pins}, "", "  ")
	if err != nil {
		return err
	}
	if err := writeFile(filepath.Join(cfg.out, "release.json"), append(rel, '\n')); err != nil {
		return err
	}
	if err := Verify(cfg.out, cfg.platforms); err != nil {
		return fmt.Errorf("the release in %s does not check out: %w", cfg.out, err)
	}
	if err := writeSums(cfg.out); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "release: %s written to %s and checked (%s)\n", cfg.version, cfg.out, time.Since(start).Round(time.Second))
	return nil
}

func specNamed(specs []ociimage.Spec, n string) ociimage.Spec {
	for i, s := range specs {
		if imagespec.Names[i] == n {
			return s
		}
	}
	panic("no image spec named " + n)
}

// Assemble builds spec i for platform i into one index, writes it as an OCI layout in dir named tag, reads the
// layout back and checks it (CheckIndex), and returns the image's pin.
func Assemble(short, ref, tag, dir string, platforms []v1.Platform, specs []ociimage.Spec) (Pin, error) {
	if len(specs) != len(platforms) {
		return Pin{}, fmt.Errorf("%s: %d specs for %d platforms", short, len(specs), len(platforms))
	}
	var imgs []ociimage.Platformed
	for i, p := range platforms {
		img, err := ociimage.BuildFor(specs[i], p.Architecture)
		if err != nil {
			return Pin{}, err
		}
		imgs = append(imgs, ociimage.Platformed{Platform: p, Image: img})
	}
	idx, err := ociimage.NewIndex(imgs)
	if err != nil {
		return Pin{}, err
	}
	digest, err := ociimage.WriteLayout(dir, tag, idx)
	if err != nil {
		return Pin{}, err
	}
	back, _, err := ociimage.ReadLayout(dir)
	if err != nil {
		return Pin{}, err
	}
	if _, err := ociimage.CheckIndex(back, platforms); err != nil {
		return Pin{}, fmt.Errorf("%s: %w", dir, err)
	}
	pin := Pin{Name: short, Ref: ref, Digest: digest.String(), Layout: dir, Platforms: map[string]string{}}
	m, err := back.IndexManifest()
	if err != nil {
		return Pin{}, err
	}
	for _, d := range m.Manifests {
		pin.Platforms[d.Platform.OS+"/"+d.Platform.Architecture] = d.Digest.String()
	}
	return pin, nil
}

// PinInstall replaces the dev install's image references with the pinned ones; every released image must be
// named, and no dev reference may remain.
func PinInstall(dev []byte, pins []Pin) ([]byte, error) {
	out := dev
	for _, p := range pins {
		if !bytes.Contains(out, []byte(devRef(p.Name))) {
			return nil, fmt.Errorf("names no %s", devRef(p.Name))
		}
		out = bytes.ReplaceAll(out, []byte(devRef(p.Name)), []byte(p.Pinned()))
	}
	if i := bytes.Index(out, []byte("cnimedic.local/")); i >= 0 {
		line := out[i:]
		if j := bytes.IndexByte(line, '\n'); j >= 0 {
			line = line[:j]
		}
		return nil, fmt.Errorf("still names the dev image %s", line)
	}
	out = regexp.MustCompile(`(?m)\A# Generated by .*\n`).ReplaceAll(out, nil)
	return append([]byte("# cnimedic "+versionOf(pins)+": deploy/cnimedic.yaml with its images pinned by digest (make release); do not edit.\n"), out...), nil
}

func versionOf(pins []Pin) string {
	if len(pins) == 0 {
		return ""
	}
	_, tag, _ := strings.Cut(pins[0].Ref[strings.LastIndex(pins[0].Ref, "/"):], ":")
	return tag
}

// PinChart packages the chart with its image values pinned (chart version VERSION without its v, appVersion
// VERSION) into outDir, and writes the same pins as outDir/values-pinned.yaml. It returns the package's path.
func PinChart(chartDir, version string, pins []Pin, outDir string) (string, error) {
	ch, err := loader.LoadDir(chartDir)
	if err != nil {
		return "", err
	}
	byName := map[string]Pin{}
	for _, p := range pins {
		byName[p.Name] = p
	}
	mgr, exe, can := byName["manager"], byName["executor"], byName["canary"]
	if mgr.Ref == "" || exe.Ref == "" || can.Ref == "" {
		return "", errors.New("the chart needs the manager, executor and canary pins")
	}
	repo := strings.TrimSuffix(mgr.Ref, ":"+version)
	replacements := []struct{ from, to string }{
		{"  repository: cnimedic.local/manager\n  tag: dev\n", fmt.Sprintf("  repository: %s\n  tag: %q\n", repo, version+"@"+mgr.Digest)},
		{"executorImage: " + devRef("executor") + "\n", fmt.Sprintf("executorImage: %s\n", exe.Pinned())},
		{"canaryImage: " + devRef("canary") + "\n", fmt.Sprintf("canaryImage: %s\n", can.Pinned())},
	}
	found := false
	for _, f := range ch.Raw {
		if f.Name != chartutil.ValuesfileName {
			continue
		}
		found = true
		for _, r := range replacements {
			if !bytes.Contains(f.Data, []byte(r.from)) {
				return "", fmt.Errorf("values.yaml does not hold %q", strings.TrimSpace(r.from))
			}
			f.Data = bytes.Replace(f.Data, []byte(r.from), []byte(r.to), 1)
		}
		if ch.Values, err = chartutil.ReadValues(f.Data); err != nil {
			return "", err
		}
	}
	if !found {
		return "", errors.New("no values.yaml")
	}
	ch.Metadata.Version = strings.TrimPrefix(version, "v")
	ch.Metadata.AppVersion = version
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return "", err
	}
	pkg, err := chartutil.Save(ch, outDir)
	if err != nil {
		return "", err
	}
	override := fmt.Sprintf("# cnimedic %s: the chart's images pinned by digest (make release). Use with the chart of the same version:\n"+
		"#   helm install cnimedic deploy/helm/cnimedic -n cnimedic-system -f values-pinned.yaml\n"+
		"image:\n  repository: %s\n  tag: %q\nexecutorImage: %s\ncanaryImage: %s\n", version, repo, version+"@"+mgr.Digest, exe.Pinned(), can.Pinned())
	return pkg, writeFile(filepath.Join(outDir, "values-pinned.yaml"), []byte(override))
}

// Verify checks a release directory as written: every image layout (CheckIndex against platforms), the pinned
// install, chart and values naming exactly the layouts' index digests, and the krew manifest's sums.
func Verify(dir string, platforms []v1.Platform) error {
	var errs []error
	want := map[string]string{} // image name -> index digest, from the layouts
	for _, n := range Released {
		idx, _, err := ociimage.ReadLayout(filepath.Join(dir, "images", n))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if _, err := ociimage.CheckIndex(idx, platforms); err != nil {
			errs = append(errs, fmt.Errorf("images/%s: %w", n, err))
		}
		d, err := idx.Digest()
		if err != nil {
			return err
		}
		want[n] = d.String()
	}
	install, err := os.ReadFile(filepath.Join(dir, "cnimedic.yaml"))
	if err != nil {
		return err
	}
	if err := CheckPinned("cnimedic.yaml", InstallImages(install), want); err != nil {
		errs = append(errs, err)
	}
	values, err := os.ReadFile(filepath.Join(dir, "helm", "values-pinned.yaml"))
	if err != nil {
		return err
	}
	if err := CheckPinned("helm/values-pinned.yaml", ValuesImages(values), want); err != nil {
		errs = append(errs, err)
	}
	pkgs, _ := filepath.Glob(filepath.Join(dir, "helm", "*.tgz"))
	if len(pkgs) != 1 {
		errs = append(errs, fmt.Errorf("helm/: want one chart package, have %d", len(pkgs)))
	} else if ch, err := loader.Load(pkgs[0]); err != nil {
		errs = append(errs, err)
	} else {
		raw := []byte{}
		for _, f := range ch.Raw {
			if f.Name == chartutil.ValuesfileName {
				raw = f.Data
			}
		}
		if err := CheckPinned(filepath.Base(pkgs[0])+" values.yaml", ValuesImages(raw), want); err != nil {
			errs = append(errs, err)
		}
	}
	if err := CheckKrew(filepath.Join(dir, "krew", "cnimedic.yaml"), filepath.Join(dir, "kubectl-cnimedic")); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

var digestRE = regexp.MustCompile(`/([a-z0-9-]+):[\w.-]+@(sha256:[0-9a-f]{64})`)

// InstallImages are the images an install names (the manager's image and its --executor-image and --canary-image),
// by short name, with the digest each is pinned to ("" when not pinned).
func InstallImages(install []byte) map[string][]string {
	got := map[string][]string{}
	for _, line := range strings.Split(string(install), "\n") {
		t := strings.TrimSpace(line)
		var ref string
		switch {
		case strings.HasPrefix(t, "image: "):
			ref = strings.TrimPrefix(t, "image: ")
		case strings.HasPrefix(t, "- --executor-image="), strings.HasPrefix(t, "- --canary-image="):
			_, ref, _ = strings.Cut(t, "=")
		default:
			continue
		}
		addRef(got, strings.Trim(ref, `"'`))
	}
	return got
}

// ValuesImages are the images chart values name (image.repository and image.tag, executorImage, canaryImage).
func ValuesImages(values []byte) map[string][]string {
	var v struct {
		Image struct {
			Repository string `json:"repository"`
			Tag        string `json:"tag"`
		} `json:"image"`
		ExecutorImage string `json:"executorImage"`
		CanaryImage   string `json:"canaryImage"`
	}
	got := map[string][]string{}
	if err := yaml.Unmarshal(values, &v); err != nil {
		got["(unreadable)"] = []string{err.Error()}
		return got
	}
	for _, r := range []string{v.Image.Repository + ":" + v.Image.Tag, v.ExecutorImage, v.CanaryImage} {
		addRef(got, r)
	}
	return got
}

func addRef(got map[string][]string, ref string) {
	if m := digestRE.FindStringSubmatch(ref); m != nil {
		got[m[1]] = append(got[m[1]], m[2])
		return
	}
	short := ref[strings.LastIndex(ref, "/")+1:]
	short, _, _ = strings.Cut(short, ":")
	got[short] = append(got[short], "")
}

// CheckPinned fails unless every image in want is named, and each time by exactly its digest.
func CheckPinned(what string, got map[string][]string, want map[string]string) error {
	var errs []error
	for _, n := range sortedKeys(want) {
		if len(got[n]) == 0 {
			errs = append(errs, fmt.Errorf("%s does not name the %s image", what, n))
		}
		for _, d := range got[n] {
			if d != want[n] {
				errs = append(errs, fmt.Errorf("%s names the %s image by %q, the index is %s", what, n, d, want[n]))
			}
		}
	}
	return errors.Join(errs...)
}

// CheckKrew fails unless the krew manifest lists at least one archive and each platform's sha256 is that of the
// archive of the same name in dir.
func CheckKrew(manifest, dir string) error {
	raw, err := os.ReadFile(manifest)
	if err != nil {
		return err
	}
	var p krewplugin.Plugin
	if err := yaml.UnmarshalStrict(raw, &p); err != nil {
		return fmt.Errorf("%s: %w", manifest, err)
	}
	if len(p.Spec.Platforms) == 0 {
		return fmt.Errorf("%s lists no platform", manifest)
	}
	var errs []error
	for _, pl := range p.Spec.Platforms {
		file := filepath.Join(dir, pl.URI[strings.LastIndex(pl.URI, "/")+1:])
		data, err := os.ReadFile(file)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", manifest, err))
			continue
		}
		sum := sha256.Sum256(data)
		if hex.EncodeToString(sum[:]) != pl.Sha256 {
			errs = append(errs, fmt.Errorf("%s: the sha256 of %s is %x, the manifest says %s", manifest, filepath.Base(file), sum, pl.Sha256))
		}
	}
	return errors.Join(errs...)
}

// goBuild cross-compiles a static binary for linux/arch, reproducibly (no paths, VCS stamp or build id).
func goBuild(dst, pkg, arch string) error {
	cmd := exec.Command("go", "build", "-trimpath", "-buildvcs=false", "-ldflags=-s -w -buildid=", "-o", dst, pkg)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+arch)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go build %s for linux/%s: %w", pkg, arch, err)
	}
	return nil
}

func writeFile(file string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
		return err
	}
	return os.WriteFile(file, data, 0o644)
}

// writeSums writes SHA256SUMS (sha256sum's format) over the release's files outside the image layouts (whose
// blobs are content-addressed already).
func writeSums(dir string) error {
	var lines []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if d.IsDir() {
			if rel == "images" {
				return filepath.SkipDir
			}
			return nil
		}
		if rel == "SHA256SUMS" {
			return nil
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(data)
		lines = append(lines, fmt.Sprintf("%x  %s", sum, filepath.ToSlash(rel)))
		return nil
	})
	if err != nil {
		return err
	}
	sort.Strings(lines)
	return writeFile(filepath.Join(dir, "SHA256SUMS"), []byte(strings.Join(lines, "\n")+"\n"))
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
