package plugins

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"

	"github.com/cnimedic/cnimedic/remediator/host"
	"github.com/cnimedic/cnimedic/test/nodetest"
)

// The diagnose and preview pods see the host under /host and have no dynamic loader of their own. Debian's plugins
// are dynamically linked: they must be run through the host's loader and libraries. The pod's view is made here by
// a root holding the host's /usr and /lib (links to this machine's, as the pods mount them) and the plugin, and by
// telling hostExec that this process lacks the interpreter, which is what the pod's static image lacks. The lab's
// end-to-end suite runs the same code in a real pod on a real node (TestHelmChartInstallsAndThePluginWorks).
func TestDynamicallyLinkedPluginRunsThroughTheHostsLoader(t *testing.T) {
	deb := nodetest.PluginDir(t, nodetest.Debian)
	if interp, err := interpreter(filepath.Join(deb, "bridge")); err != nil || interp == "" {
		t.Fatalf("Debian's bridge plugin should be dynamically linked: interpreter %q, %v", interp, err)
	}
	nodetest.RequireRoot(t)
	root := nodetest.Root(t)
	for _, d := range []string{"/usr", "/lib"} {
		// Bind mounts, as the pods have: a link would be resolved inside the root, as the host's own links are.
		dst := filepath.Join(root, d)
		if err := os.MkdirAll(dst, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := syscall.Mount(d, dst, "", syscall.MS_BIND, ""); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = syscall.Unmount(dst, syscall.MNT_DETACH) })
	}
	nodetest.CopyPlugins(t, nodetest.Debian, root, "/opt/cni/bin", "bridge")
	e := newHostExec(host.Root(root))
	e.hasLocal = func(string) bool { return false }
	bin := filepath.Join(root, "opt/cni/bin")
	vi, err := libcni.NewCNIConfig([]string{bin}, e).GetVersionInfo(context.Background(), "bridge")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := vi.SupportedVersions(), []string{"0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("versions %v, want %v", got, want)
	}
	// A plugin's own error still comes back as the CNI error it printed.
	_, err = e.ExecPlugin(context.Background(), filepath.Join(bin, "bridge"), []byte(`{}`), []string{"CNI_COMMAND=ADD"})
	var cniErr *types.Error
	if !errors.As(err, &cniErr) || !strings.Contains(cniErr.Msg, "CNI_CONTAINERID") {
		t.Fatalf("an ADD without its environment: %v, want the plugin's CNI error", err)
	}

	// Without the host's /usr and /lib under the root, the report says what the pod lacks.
	bare := nodetest.Root(t)
	nodetest.CopyPlugins(t, nodetest.Debian, bare, "/opt/cni/bin", "bridge")
	e = newHostExec(host.Root(bare))
	e.hasLocal = func(string) bool { return false }
	_, err = libcni.NewCNIConfig([]string{filepath.Join(bare, "opt/cni/bin")}, e).GetVersionInfo(context.Background(), "bridge")
	if err == nil || !strings.Contains(err.Error(), "dynamically linked against /lib64/ld-linux") || !strings.Contains(err.Error(), "/usr and /lib") {
		t.Fatalf("error %v", err)
	}

	// A static plugin (the bundle, built with CGO_ENABLED=0) has no interpreter and runs as libcni runs it.
	if interp, err := interpreter(filepath.Join(nodetest.PluginDir(t, nodetest.Bundle), "bridge")); err != nil || interp != "" {
		t.Fatalf("the bundled bridge plugin should be static: interpreter %q, %v", interp, err)
	}
}
