// Package nspawntest boots systemd-nspawn nodes for tests: the remediator's systemd suites and nspawn's own.
//
// A test that needs a node and cannot have one FAILS, naming the make target that installs what is missing; it
// never skips (except under an explicit -short), because a silent skip reads as "ran no test" and hides a broken
// install step. CI runs as root.
//
// Each node's state lives in the repository's .lab/nspawn/NAME, a fixed place per name, so that a node left running
// by a killed test run is found and torn down by the next run that boots the same name. Names must therefore be
// stable and unique across the repository's test suites (they run in parallel): prefix them with the package,
// e.g. "units-stop".
package nspawntest

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/cnimedic/cnimedic/test/nspawn"
	"github.com/cnimedic/cnimedic/test/repo"
)

// BaseRoot is the node root filesystem built by `make node-rootfs`: $CNIMEDIC_NODE_ROOTFS, else bin/node-rootfs.
func BaseRoot() string {
	if dir := os.Getenv("CNIMEDIC_NODE_ROOTFS"); dir != "" {
		return dir
	}
	return filepath.Join(repo.Root(), "bin", "node-rootfs")
}

// StateDir is where the node called name keeps its state during tests.
func StateDir(name string) string { return filepath.Join(repo.Root(), ".lab", "nspawn", name) }

// Require fails the test unless this machine can boot nodes: root, systemd-nspawn and nsenter, the root filesystem.
// Only an explicit `go test -short` (make test-unit, fast feedback) skips it instead.
func Require(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("boots systemd-nspawn nodes: skipped under -short; `make test` runs it")
	}
	if os.Geteuid() != 0 {
		t.Fatal("booting systemd-nspawn nodes needs root (mounts, cgroups); run the tests as root, as CI does")
	}
	for _, tool := range []string{"systemd-nspawn", "nsenter", "ip"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is not installed: run `make node-deps` (hack/install-node-deps.sh)", tool)
		}
	}
	if _, err := os.Stat(filepath.Join(BaseRoot(), "usr/lib/systemd/systemd")); err != nil {
		t.Fatalf("no node root filesystem in %s: run `make node-rootfs` (hack/node-rootfs.sh)", BaseRoot())
	}
}

// Boot boots a node for the test and halts it, leaving nothing behind, when the test ends. opts.Name is required;
// BaseRoot and StateDir default to the ones above. The node is Ephemeral, and nodes that killed test runs left
// behind are reaped first. A failure to boot or to halt fails the test.
func Boot(t testing.TB, opts nspawn.Options) *nspawn.Node {
	t.Helper()
	Require(t)
	if opts.BaseRoot == "" {
		opts.BaseRoot = BaseRoot()
	}
	if opts.StateDir == "" {
		opts.StateDir = StateDir(opts.Name)
	}
	opts.Ephemeral = true
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if reaped, err := nspawn.ReapOrphans(ctx); err != nil {
		t.Fatalf("tearing down nodes left by killed test runs: %v", err)
	} else if len(reaped) > 0 {
		t.Logf("tore down nodes left by killed test runs: %v", reaped)
	}
	node, err := nspawn.Boot(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := node.Halt(ctx); err != nil {
			t.Errorf("halt node %s: %v", node.Name(), err)
		}
	})
	return node
}
