package plugins

import (
	"bytes"
	"context"
	"debug/elf"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/cnimedic/cnimedic/remediator/host"
)

// hostExec runs a node's plugin binaries from a process that sees the host's files under a root: the diagnose and
// dry-run preview pods, which mount the host's directories under /host. Plugins packaged by distributions (Debian's
// containernetworking-plugins, for one) are dynamically linked, and the kernel looks for their ELF interpreter
// (/lib64/ld-linux-x86-64.so.2) in the pod's own filesystem, which has none: exec fails with "no such file or
// directory" although the binary is there (measured on the lab's Debian nodes). Such a binary is run through the
// host's own interpreter with the host's library directories, so that the answer is the one the runtime gets on
// the host: same binary, same libraries.
//
// Static binaries, and any binary whose interpreter this process has, are run as libcni runs them.
type hostExec struct {
	*invoke.DefaultExec
	root host.Root
	// hasLocal reports whether this process's filesystem has a file (the interpreter); a test replaces it.
	hasLocal func(path string) bool
}

func newHostExec(root host.Root) *hostExec {
	return &hostExec{DefaultExec: &invoke.DefaultExec{RawExec: &invoke.RawExec{Stderr: os.Stderr}, PluginDecoder: version.PluginDecoder{}},
		root: root, hasLocal: func(p string) bool { _, err := os.Stat(p); return err == nil }}
}

// ExecPlugin implements invoke.Exec.
func (e *hostExec) ExecPlugin(ctx context.Context, pluginPath string, stdinData []byte, environ []string) ([]byte, error) {
	interp, err := interpreter(pluginPath)
	if err != nil || interp == "" || e.hasLocal(interp) {
		return e.DefaultExec.ExecPlugin(ctx, pluginPath, stdinData, environ)
	}
	loader, libs := e.hostLoader(interp)
	if loader == "" {
		return nil, fmt.Errorf("%s is dynamically linked against %s, which is not under the host root %s (mount the host's /usr and /lib)",
			e.root.HostPath(pluginPath), interp, e.root)
	}
	// The dynamic loader run as a program loads the plugin named after its options (ld.so(8)).
	c := exec.CommandContext(ctx, loader, "--library-path", strings.Join(libs, ":"), pluginPath)
	var stdout, stderr bytes.Buffer
	c.Env, c.Stdin, c.Stdout, c.Stderr = environ, bytes.NewReader(stdinData), &stdout, &stderr
	if err := c.Run(); err != nil {
		// A plugin reports its failures as a CNI error on stdout, as libcni's RawExec decodes them.
		var perr types.Error
		if json.Unmarshal(stdout.Bytes(), &perr) == nil && perr.Msg != "" {
			return nil, &perr
		}
		return nil, fmt.Errorf("%s (through the host's loader %s): %w: %s", e.root.HostPath(pluginPath), e.root.HostPath(loader), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.Bytes(), nil
}

// interpreter returns the ELF interpreter a binary asks for, or "" for a static binary.
func interpreter(path string) (string, error) {
	f, err := elf.Open(path)
	if err != nil {
		return "", err
	}
	defer func() { _ = f.Close() }()
	for _, p := range f.Progs {
		if p.Type != elf.PT_INTERP {
			continue
		}
		data, err := io.ReadAll(p.Open())
		if err != nil && !errors.Is(err, io.EOF) {
			return "", err
		}
		return strings.TrimRight(string(data), "\x00"), nil
	}
	return "", nil
}

// multiarch is Debian's library directory name for this architecture (lib/x86_64-linux-gnu).
var multiarch = map[string]string{"amd64": "x86_64-linux-gnu", "arm64": "aarch64-linux-gnu", "ppc64le": "powerpc64le-linux-gnu", "s390x": "s390x-linux-gnu"}[runtime.GOARCH]

// hostLoader finds the host's interpreter and library directories under the root, as local paths. The pods mount
// the host's /usr and /lib, not its root, so the interpreter's own path may be missing: /lib64 is a link into /usr
// on merged-/usr systems (Debian 12, Ubuntu 22.04, RHEL), and Debian-family systems also keep it in lib/<multiarch>.
func (e *hostExec) hostLoader(interp string) (string, []string) {
	var libs []string
	for _, d := range []string{"/lib/" + multiarch, "/usr/lib/" + multiarch, "/lib64", "/usr/lib64", "/lib", "/usr/lib"} {
		if local, err := e.root.Resolve(d); err == nil {
			if st, err := os.Stat(local); err == nil && st.IsDir() {
				libs = append(libs, local)
			}
		}
	}
	candidates := []string{interp, "/usr" + interp}
	for _, d := range libs {
		candidates = append(candidates, e.root.HostPath(filepath.Join(d, filepath.Base(interp))))
	}
	for _, c := range candidates {
		local, err := e.root.Resolve(c)
		if err != nil {
			continue
		}
		if st, err := os.Stat(local); err == nil && st.Mode().IsRegular() {
			return local, libs
		}
	}
	return "", libs
}
