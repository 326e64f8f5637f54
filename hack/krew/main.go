// Command krew builds the kubectl-cnimedic release archives for every platform krew installs on and writes the
// krew plugin manifest (deploy/krew/cnimedic.yaml) with their sha256 sums.
//
//	go run ./hack/krew -version v0.1.0            # build bin/krew/*.tar.gz and write the manifest
//	go run ./hack/krew -version v0.1.0 -verify    # rebuild and fail when the committed manifest's sums differ
//
// The archives are reproducible (no build id, no VCS stamp, no paths, fixed tar metadata), so the sums in the
// committed manifest can be checked by anyone with the same Go toolchain and source.
package main

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/cnimedic/cnimedic/hack/krew/krewplugin"
)

// The manifest's types and functions live in hack/krew/krewplugin, which hack/release shares.
type (
	Plugin = krewplugin.Plugin
	Target = krewplugin.Target
)

var (
	Targets  = krewplugin.Targets
	Manifest = krewplugin.Manifest
	Render   = krewplugin.Render
	Archive  = krewplugin.Archive
)

func main() {
	version := flag.String("version", "", "release version, such as v0.1.0 (required)")
	outDir := flag.String("out", "bin/krew", "where the archives are written")
	manifest := flag.String("manifest", "deploy/krew/cnimedic.yaml", "the krew manifest to write")
	verify := flag.Bool("verify", false, "do not write the manifest: fail when its sums differ from the rebuilt archives")
	flag.Parse()
	if !strings.HasPrefix(*version, "v") {
		fmt.Fprintln(os.Stderr, "-version must be a semantic version with a v, such as v0.1.0")
		os.Exit(2)
	}
	if err := run(*version, *outDir, *manifest, *verify); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func run(version, outDir, manifest string, verify bool) error {
	sums, err := krewplugin.Package(version, "./cmd/kubectl-cnimedic", outDir, outDir, Targets)
	if err != nil {
		return err
	}
	want, err := Render(Manifest(version, sums))
	if err != nil {
		return err
	}
	if verify {
		have, err := os.ReadFile(manifest)
		if err != nil {
			return err
		}
		if !bytes.Equal(have, want) {
			return fmt.Errorf("%s does not match the archives built from this tree: run go run ./hack/krew -version %s and commit it", manifest, version)
		}
		return nil
	}
	return os.WriteFile(manifest, want, 0o644)
}
