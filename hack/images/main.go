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
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/cnimedic/cnimedic/hack/images/imagespec"
	"github.com/cnimedic/cnimedic/hack/ociimage"
)

// Tag is the tag of every lab image; deploy/cnimedic.yaml names the manager, executor and canary images with it.
const Tag = "dev"

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
	for _, b := range imagespec.Binaries {
		if err := goBuild(filepath.Join(binDir, b.Name), b.Pkg); err != nil {
			return err
		}
	}
	bundleFiles, err := imagespec.BundleFiles(bundleDir)
	if err != nil {
		return err
	}
	specs, err := imagespec.Specs(imagespec.Inputs{Ref: ref, BinDir: binDir, Bundle: bundleFiles})
	if err != nil {
		return err
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
