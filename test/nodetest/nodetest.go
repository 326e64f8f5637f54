// Package nodetest gives the remediator's node tests their real parts: the CNI plugin sets (the old v0.9.1
// release and the bundle, built by hack/build-cni-plugins.sh; Debian's containernetworking-plugins 1.1.1), network
// namespaces of their own, and a host root directory laid out like a node. A missing part fails the test with the
// command that installs it: these tests never skip.
package nodetest

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/cnimedic/cnimedic/test/labtest"
	"github.com/cnimedic/cnimedic/test/repo"
)

// Plugin sets.
const (
	// Old is containernetworking/plugins v0.9.1: VERSION answers ["0.1.0" "0.2.0" "0.3.0" "0.3.1" "0.4.0"].
	Old = "old"
	// Bundle is the set the executor image ships (CNI_PLUGINS_VERSION), with its SHA256SUMS.
	Bundle = "bundle"
	// Debian is Debian's containernetworking-plugins 1.1.1 in /usr/lib/cni.
	Debian = "debian"
)

// PluginDir returns the directory of a plugin set, failing the test with the install command when it is absent.
func PluginDir(t testing.TB, set string) string {
	t.Helper()
	var dir, how string
	switch set {
	case Old:
		dir, how = filepath.Join(repo.Root(), "bin", "cni-old"), "hack/build-cni-plugins.sh old"
	case Bundle:
		dir, how = filepath.Join(repo.Root(), "bin", "cni-bundle"), "hack/build-cni-plugins.sh bundle"
	case Debian:
		dir, how = "/usr/lib/cni", "hack/build-cni-plugins.sh debian"
	default:
		t.Fatalf("unknown plugin set %q", set)
	}
	for _, p := range []string{"bridge", "host-local", "loopback", "portmap"} {
		if _, err := os.Stat(filepath.Join(dir, p)); err != nil {
			t.Fatalf("plugin set %s is not installed (%v); run: %s", set, err, how)
		}
	}
	return dir
}

// RequireRoot fails the test when not running as root: network namespaces, mounts and the runtime need it, and
// CI runs as root.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatalf("this test needs root (network namespaces, bind mounts, a real runtime); run it as root, as CI does")
	}
}

// Root makes an empty host root directory for a test.
func Root(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp(labtest.TmpDir(), "node-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	return dir
}

// Write writes a file under a root, creating its directories.
func Write(t testing.TB, root, hostPath string, content []byte, mode os.FileMode) {
	t.Helper()
	p := filepath.Join(root, hostPath)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, content, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil { // WriteFile's mode passes through the umask
		t.Fatal(err)
	}
}

// CopyPlugins copies plugins of a set into a bin dir under root.
func CopyPlugins(t testing.TB, set, root, binDir string, names ...string) {
	t.Helper()
	src := PluginDir(t, set)
	for _, n := range names {
		raw, err := os.ReadFile(filepath.Join(src, n))
		if err != nil {
			t.Fatalf("plugin %s of set %s: %v", n, set, err)
		}
		Write(t, root, filepath.Join(binDir, n), raw, 0o755)
	}
}

// NewNetns creates a network namespace bind-mounted at a file under dir and returns its path; it is unmounted
// and removed when the test ends. The test's own namespace is never changed.
func NewNetns(t testing.TB, dir, name string) string {
	t.Helper()
	RequireRoot(t)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, nil, 0o444); err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	// The new namespace is made on a thread of its own, which then exits with it instead of going back to the pool.
	go func() {
		runtime.LockOSThread()
		if _, err := netns.New(); err != nil {
			errc <- err
			return
		}
		src := fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid())
		errc <- unix.Mount(src, path, "none", unix.MS_BIND, "")
	}()
	if err := <-errc; err != nil {
		t.Fatalf("creating network namespace %s: %v", path, err)
	}
	t.Cleanup(func() { RemoveNetns(path) })
	return path
}

// RemoveNetns unmounts and removes a namespace file; both are fine to repeat.
func RemoveNetns(path string) {
	_ = unix.Unmount(path, unix.MNT_DETACH)
	_ = os.Remove(path)
}

// InNetns runs fn on a thread switched into the namespace at path; processes fn starts are born there. The thread
// is thrown away afterwards, so no other goroutine ever runs in the namespace by accident.
func InNetns(t testing.TB, path string, fn func() error) error {
	t.Helper()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		ns, err := netns.GetFromPath(path)
		if err != nil {
			errc <- err
			return
		}
		defer ns.Close()
		if err := netns.Set(ns); err != nil {
			errc <- err
			return
		}
		errc <- fn()
	}()
	return <-errc
}
