// Command images builds the lab's container images without a registry or a Docker engine: it compiles the static
// binaries they hold and writes one docker-archive per image into bin/images/ (hack/ociimage), with an index
// (images.json) that the lab reads to import them into every node (`ctr -n k8s.io images import`).
//
//	cnimedic.local/pause:dev     the pod sandbox process, named in the nodes' containerd sandbox_image
//	cnimedic.local/workload:dev  the lab's workload: a small HTTP server, uid 65532
//	cnimedic.local/canary:dev    the same server, as the manager's --canary-image
//	cnimedic.local/executor:dev  the remediator and the bundled reference CNI plugins (bin/cni-bundle) with their
//	                             SHA256SUMS at /opt/cnimedic/cni-bundle; the remediator's own sha256 is recorded
//	                             in /opt/cnimedic/remediator.sha256 and in the label io.cnimedic.remediator.sha256
//	cnimedic.local/manager:dev   the manager, uid 65532
//
// Usage: go run ./hack/images [-out bin/images]   (make images)
//
// Archives whose image digest did not change are left alone, so a rebuild after an unrelated change is quick.
package main

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/cnimedic/cnimedic/hack/ociimage"
	"github.com/cnimedic/cnimedic/remediator/plugins"
)

// Tag is the tag of every lab image; deploy/cnimedic.yaml names the manager, executor and canary images with it.
const Tag = "dev"

// binary is a static Go program an image holds.
type binary struct {
	name string // file name under OUT/bin
	pkg  string // Go package path, relative to the repository
}

var binaries = []binary{
	{"pause", "./hack/images/pause"},
	{"labapp", "./hack/images/labapp"},
	{"remediator", "./cmd/remediator"},
	{"manager", "./cmd/manager"},
}

// nonRoot is the uid and gid of the images that run as a user (distroless' "nonroot").
const nonRoot = 65532

func main() {
	out := flag.String("out", "bin/images", "directory for the archives, their index and the binaries")
	bundle := flag.String("cni-bundle", "bin/cni-bundle", "the reference plugin bundle for the executor image (make cni-plugins)")
	flag.Parse()
	if err := run(*out, *bundle); err != nil {
		fmt.Fprintln(os.Stderr, "images:", err)
		os.Exit(1)
	}
}

func run(out, bundleDir string) error {
	start := time.Now()
	binDir := filepath.Join(out, "bin")
	if err := os.MkdirAll(binDir, 0o755); err != nil {
		return err
	}
	for _, b := range binaries {
		if err := goBuild(filepath.Join(binDir, b.name), b.pkg); err != nil {
			return err
		}
	}
	bundleFiles, err := bundleFiles(bundleDir)
	if err != nil {
		return err
	}
	remSum, err := fileSHA256(filepath.Join(binDir, "remediator"))
	if err != nil {
		return err
	}

	bin := func(n string) string { return filepath.Join(binDir, n) }
	passwd := ociimage.File{Path: "/etc/passwd", Data: []byte("root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n")}
	group := ociimage.File{Path: "/etc/group", Data: []byte("root:x:0:\nnonroot:x:65532:\n")}
	labels := func(extra map[string]string) map[string]string {
		l := map[string]string{"org.opencontainers.image.source": "github.com/cnimedic/cnimedic", "org.opencontainers.image.title": "cnimedic lab image"}
		for k, v := range extra {
			l[k] = v
		}
		return l
	}
	executorFiles := append([]ociimage.File{
		{Path: "/remediator", Source: bin("remediator"), Mode: 0o755},
		{Path: "/opt/cnimedic/remediator.sha256", Data: []byte(remSum + "  remediator\n")},
		passwd, group,
	}, bundleFiles...)
	specs := []ociimage.Spec{
		{Ref: ref("pause"), Files: []ociimage.File{{Path: "/pause", Source: bin("pause"), Mode: 0o755}}, Entrypoint: []string{"/pause"},
			User: "65535:65535", Labels: labels(nil)},
		{Ref: ref("workload"), Files: []ociimage.File{{Path: "/labapp", Source: bin("labapp"), Mode: 0o755}, passwd, group},
			Entrypoint: []string{"/labapp"}, User: fmt.Sprintf("%d:%d", nonRoot, nonRoot), Labels: labels(nil)},
		{Ref: ref("canary"), Files: []ociimage.File{{Path: "/labapp", Source: bin("labapp"), Mode: 0o755}, passwd, group},
			Entrypoint: []string{"/labapp"}, User: fmt.Sprintf("%d:%d", nonRoot, nonRoot), Labels: labels(nil)},
		// Root: the executor talks to systemd and writes the remediator's state dir on the node. The pod spec
		// (controllers/remediation) sets the user and capabilities explicitly; this is only the image's default.
		{Ref: ref("executor"), Files: executorFiles, Entrypoint: []string{"/remediator"}, Dirs: []string{"/tmp"},
			Labels: labels(map[string]string{"io.cnimedic.remediator.sha256": remSum})},
		{Ref: ref("manager"), Files: []ociimage.File{{Path: "/manager", Source: bin("manager"), Mode: 0o755}, passwd, group},
			Entrypoint: []string{"/manager"}, User: fmt.Sprintf("%d:%d", nonRoot, nonRoot), Dirs: []string{"/tmp"}, Labels: labels(nil)},
	}

	var idx ociimage.Index
	for _, s := range specs {
		entry, wrote, err := writeImage(out, s)
		if err != nil {
			return err
		}
		idx.Images = append(idx.Images, entry)
		state := "unchanged"
		if wrote {
			state = "written"
		}
		fmt.Fprintf(os.Stderr, "images: %-28s %s %s (%s)\n", s.Ref, entry.Digest[:19], entry.File, state)
	}
	data, err := json.MarshalIndent(idx, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(out, ociimage.IndexFile), append(data, '\n'), 0o644); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "images: %d images in %s (%s)\n", len(specs), out, time.Since(start).Round(100*time.Millisecond))
	return nil
}

func ref(name string) string { return "cnimedic.local/" + name + ":" + Tag }

func writeImage(out string, s ociimage.Spec) (ociimage.IndexEntry, bool, error) {
	img, err := ociimage.Build(s)
	if err != nil {
		return ociimage.IndexEntry{}, false, err
	}
	digest, err := img.Digest()
	if err != nil {
		return ociimage.IndexEntry{}, false, err
	}
	short := filepath.Base(s.Ref[:len(s.Ref)-len(":"+Tag)])
	entry := ociimage.IndexEntry{Name: short, Ref: s.Ref, File: short + ".tar", Digest: digest.String()}
	file := filepath.Join(out, entry.File)
	if have, err := ociimage.ArchiveDigest(file); err == nil && have == digest {
		return entry, false, nil
	}
	return entry, true, ociimage.WriteArchive(file, s.Ref, img)
}

// goBuild compiles a static binary with the same flags as the Makefile's build target, so that both share Go's
// build cache.
func goBuild(dst, pkg string) error {
	cmd := exec.Command("go", "build", "-o", dst, pkg)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go build %s: %w", pkg, err)
	}
	return nil
}

// bundleFiles are the bundle's plugins and manifest, checked against the manifest before they go into the image.
func bundleFiles(dir string) ([]ociimage.File, error) {
	b, err := plugins.LoadBundle(dir)
	if err != nil {
		return nil, fmt.Errorf("%w: run `make cni-plugins` (hack/build-cni-plugins.sh bundle)", err)
	}
	var files []ociimage.File
	for _, n := range b.Names() {
		data, err := b.Verified(n)
		if err != nil {
			return nil, fmt.Errorf("%w: rebuild it with `make cni-plugins`", err)
		}
		files = append(files, ociimage.File{Path: "/opt/cnimedic/cni-bundle/" + n, Data: data, Mode: 0o755})
	}
	manifest, err := os.ReadFile(filepath.Join(dir, plugins.ManifestName))
	if err != nil {
		return nil, err
	}
	if len(files) == 0 {
		return nil, errors.New("the plugin bundle is empty")
	}
	return append(files, ociimage.File{Path: "/opt/cnimedic/cni-bundle/" + plugins.ManifestName, Data: manifest}), nil
}

func fileSHA256(name string) (string, error) {
	data, err := os.ReadFile(name)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:]), nil
}
