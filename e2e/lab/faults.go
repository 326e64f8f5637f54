package lab

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	sdbus "github.com/coreos/go-systemd/v22/dbus"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
	"github.com/cnimedic/cnimedic/test/nspawn"
)

// Fault is a failure the lab injects into a node, for real: the node's own files and binaries are changed the way
// the seed runbooks describe, and its real containerd, plugins and kubelet fail as they would in a cluster.
type Fault string

// The faults, one per seed failure (and variant).
const (
	// FaultCNIVersionNewer sets the conflist's cniVersion to 1.1.0, newer than Debian's plugins 1.1.1 support:
	// `incompatible CNI versions; config is "1.1.0", plugin supports [... "1.0.0"]`.
	FaultCNIVersionNewer Fault = "cni-version-newer"
	// FaultCNIVersionOldPlugins is the seed's exact variant: the v0.9.1 reference plugins (bridge, host-local,
	// portmap and loopback, as an old plugins package installs them) under a conflist of version 1.0.0:
	// `config is "1.0.0", plugin supports ["0.1.0" ... "0.4.0"]`. Rewriting the conflist cannot repair it:
	// containerd 1.6 configures the loopback interface with CNI 1.0.0 itself.
	FaultCNIVersionOldPlugins Fault = "cni-version-old-plugins"
	// FaultCNIVersionMissing removes the conflist's cniVersion.
	FaultCNIVersionMissing Fault = "cni-version-missing"
	// FaultConfDirElsewhere points containerd's CRI conf_dir at an empty directory (the Calico seed: containerd's
	// CNI settings do not lead to the conflist that is there) and restarts containerd: `cni plugin not initialized`,
	// the node NotReady.
	FaultConfDirElsewhere Fault = "cni-conf-dir-elsewhere"
	// FaultNoNetworkConfig removes every network configuration from the conf dir, as a CNI provider whose DaemonSet
	// never wrote its conflist leaves a node: `cni plugin not initialized`, the node NotReady. No node repair can
	// help (issue 17: each attempt drained the node for nothing): cnimedic escalates without a cordon.
	FaultNoNetworkConfig Fault = "no-network-config"
	// FaultIPAMExhausted fills the node's host-local range with leases of sandboxes that do not exist (leaked by
	// teardowns that never ran): `no IP addresses available in range set`.
	FaultIPAMExhausted Fault = "ipam-exhausted"
	// FaultFlannelPluginMissing installs flannel's conflist without its plugin binary (a vendor plugin):
	// `failed to find plugin "flannel" in path [/opt/cni/bin]`. cnimedic escalates.
	FaultFlannelPluginMissing Fault = "flannel-plugin-missing"
	// FaultFlannelDaemonDown installs flannel's conflist and its real CNI plugin, with no flanneld to write
	// /run/flannel/subnet.env: `open /run/flannel/subnet.env: no such file or directory`. cnimedic escalates.
	FaultFlannelDaemonDown Fault = "flannel-daemon-down"
	// FaultIPAMNoRanges writes the node's conflist with host-local IPAM that has neither "subnet" nor "ranges", as
	// a CNI provider that never learnt the node's pod subnet leaves it: the real host-local fails every pod with
	// `no IP ranges specified`, a wording no signature names (the cni-unclassified family). Only the provider may
	// write the subnet: cnimedic diagnoses it and escalates. Reset writes the healthy conflist back.
	FaultIPAMNoRanges Fault = "ipam-no-ranges"
)

// FaultInfo describes a fault for people (the CLI's list, the demo) and for the suite (the signature cnimedic must
// name).
type FaultInfo struct {
	Fault     Fault
	Signature v1alpha1.SignatureID
	// Escalates is set when cnimedic must not repair it node by node.
	Escalates bool
	What      string
}

// Faults lists every fault in the seeds' order.
var Faults = []FaultInfo{
	{FaultCNIVersionNewer, v1alpha1.SignatureCNIVersionIncompatible, false, "conflist cniVersion 1.1.0, newer than the node's plugins support"},
	{FaultCNIVersionOldPlugins, v1alpha1.SignatureCNIVersionIncompatible, false, `the seed's variant: v0.9.1 plugins under cniVersion 1.0.0 (plugin supports ["0.1.0" ... "0.4.0"])`},
	{FaultCNIVersionMissing, v1alpha1.SignatureCNIVersionMissing, false, "conflist without cniVersion"},
	{FaultConfDirElsewhere, v1alpha1.SignatureCNINotInitialized, false, "containerd's CRI conf_dir points at an empty directory (the Calico seed): cni plugin not initialized"},
	{FaultNoNetworkConfig, v1alpha1.SignatureCNINotInitialized, true, "no network configuration in the conf dir at all: cni plugin not initialized (escalated, never drained)"},
	{FaultIPAMExhausted, v1alpha1.SignatureIPAMExhausted, false, "host-local range full of leases of sandboxes that no longer exist"},
	{FaultFlannelPluginMissing, v1alpha1.SignaturePluginBinaryMissing, true, "flannel's conflist without the flannel plugin binary (a vendor plugin: escalated)"},
	{FaultFlannelDaemonDown, v1alpha1.SignatureDaemonUnavailable, true, "flannel's plugin with no flanneld: /run/flannel/subnet.env missing (escalated)"},
	{FaultIPAMNoRanges, v1alpha1.SignatureCNIUnclassified, true, `host-local IPAM without "subnet" or "ranges": no IP ranges specified (diagnosed, escalated)`},
}

// Info returns the description of a fault.
func Info(f Fault) (FaultInfo, bool) {
	for _, i := range Faults {
		if i.Fault == f {
			return i, true
		}
	}
	return FaultInfo{}, false
}

// Paths the faults use inside a node.
const (
	calicoConfDir      = "/etc/cni/calico.d"
	nodeContainerdBin  = "/usr/bin/containerd"
	flannelConfList    = "/etc/cni/net.d/10-flannel.conflist"
	flannelSubnetEnv   = "/run/flannel/subnet.env"
	leakedLeaseMarker  = "cnimedic-lab-leaked-sandbox"
	oldPluginsReplaced = "bridge host-local portmap loopback"
)

// Inject breaks a node with a fault.
func (l *Lab) Inject(ctx context.Context, nodeName string, f Fault) error {
	node, spec, err := l.Node(nodeName)
	if err != nil {
		return err
	}
	r, err := os.OpenRoot(node.RootDir())
	if err != nil {
		return err
	}
	defer r.Close()
	switch f {
	case FaultCNIVersionNewer:
		c := HealthyConfList(spec)
		c.CNIVersion = "1.1.0"
		return writeAtomic(r, spec.ConfListPath(), c.marshal(), 0o644)
	case FaultCNIVersionOldPlugins:
		for _, p := range strings.Fields(oldPluginsReplaced) {
			data, err := os.ReadFile(filepath.Join(l.cfg.CNIOld, p))
			if err != nil {
				return fmt.Errorf("%w: run `make cni-plugins`", err)
			}
			if err := writeAtomic(r, path.Join(spec.PluginDir(), p), data, 0o755); err != nil {
				return err
			}
		}
		return writeAtomic(r, spec.ConfListPath(), HealthyConfList(spec).marshal(), 0o644)
	case FaultCNIVersionMissing:
		// The seed's runtime: containerd 1.6.0-1.6.3 (libcni v1.0.1) sets pods up under a conflist without
		// cniVersion but cannot tear them down. Debian's 1.6.20 in the base rootfs does not reproduce it. On every
		// layout the old binary replaces the one the node's runtime unit runs (/usr/bin/containerd, k3s-agent's too).
		data, err := os.ReadFile(l.cfg.oldContainerd())
		if err != nil {
			return fmt.Errorf("%w: run `make lab-deps` (hack/build-old-containerd.sh)", err)
		}
		if err := writeAtomic(r, nodeContainerdBin, data, 0o755); err != nil {
			return err
		}
		c := HealthyConfList(spec)
		c.CNIVersion = ""
		if err := writeAtomic(r, spec.ConfListPath(), c.marshal(), 0o644); err != nil {
			return err
		}
		return restartUnits(ctx, node, spec.RuntimeUnits()...)
	case FaultConfDirElsewhere:
		// Written where a person configures containerd: config.toml, or on k3s the template it is rendered from
		// (an edit of config.toml would not survive the restart), then the runtime restarted.
		if err := r.MkdirAll(strings.TrimPrefix(calicoConfDir, "/"), 0o755); err != nil {
			return err
		}
		healthy := `conf_dir = "` + spec.ConfDir() + `"`
		cfg := bytes.Replace(ContainerdConfigFor(spec), []byte(healthy), []byte(`conf_dir = "`+calicoConfDir+`"`), 1)
		if bytes.Equal(cfg, ContainerdConfigFor(spec)) {
			return fmt.Errorf("lab: no %s in %s to change", healthy, spec.RuntimeConfigSource())
		}
		if err := writeAtomic(r, spec.RuntimeConfigSource(), cfg, 0o644); err != nil {
			return err
		}
		return restartUnits(ctx, node, spec.RuntimeUnits()...)
	case FaultNoNetworkConfig:
		if err := r.Remove(strings.TrimPrefix(spec.ConfListPath(), "/")); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		return restartUnits(ctx, node, spec.RuntimeUnits()...)
	case FaultIPAMExhausted:
		return leakLeases(r, spec)
	case FaultIPAMNoRanges:
		c := HealthyConfList(spec)
		c.Plugins[0].IPAM.Ranges = nil
		return writeAtomic(r, spec.ConfListPath(), c.marshal(), 0o644)
	case FaultFlannelPluginMissing, FaultFlannelDaemonDown:
		if f == FaultFlannelDaemonDown {
			data, err := os.ReadFile(l.cfg.flannelPlugin())
			if err != nil {
				return fmt.Errorf("%w: run `make lab-deps` (the flannel CNI plugin of %s)", err, "containernetworking/plugins v0.9.1")
			}
			if err := writeAtomic(r, path.Join(spec.PluginDir(), "flannel"), data, 0o755); err != nil {
				return err
			}
			if err := r.Remove(strings.TrimPrefix(flannelSubnetEnv, "/")); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return err
			}
		}
		// kube-flannel's own conflist, as its DaemonSet installs it; it sorts before the lab's, so containerd
		// (max_conf_num 1) takes it.
		c := ConfList{CNIVersion: "0.3.1", Name: "cbr0", Plugins: []PluginConf{
			{Type: "flannel", Delegate: map[string]any{"hairpinMode": true, "isDefaultGateway": true}},
			{Type: "portmap", Capabilities: map[string]bool{"portMappings": true}},
		}}
		return writeAtomic(r, path.Join(spec.ConfDir(), path.Base(flannelConfList)), c.marshal(), 0o644)
	}
	return fmt.Errorf("lab: unknown fault %q", f)
}

// oldContainerd is containerd v1.6.1, built by hack/build-old-containerd.sh.
func (c Config) oldContainerd() string {
	return filepath.Join(c.RepoRoot, "bin", "containerd-old", "containerd")
}

// flannelPlugin is the real flannel CNI plugin (containernetworking/plugins v0.9.1's meta/flannel, the last
// release that shipped it), built by hack/lab.mk.
func (c Config) flannelPlugin() string {
	return filepath.Join(c.RepoRoot, "bin", "cni-flannel", "flannel")
}

// Reset gives a node back its healthy configuration, whatever was injected or repaired: the lab's conflist and
// containerd config (on the k3s layout its template, and config.toml rendered from it), kubelet's config, Debian's
// plugins, no leaked leases, no flannel files; the runtime's units are restarted when its config or binary
// changed, kubelet when its config did, every unit is started if stopped, and the node is made schedulable again.
func (l *Lab) Reset(ctx context.Context, nodeName string) error {
	node, spec, err := l.Node(nodeName)
	if err != nil {
		return err
	}
	r, err := os.OpenRoot(node.RootDir())
	if err != nil {
		return err
	}
	defer r.Close()
	var errs []error
	if err := writeIfDifferent(r, spec.ConfListPath(), HealthyConfList(spec).marshal(), 0o644); err != nil {
		errs = append(errs, err)
	}
	for _, p := range []string{path.Join(spec.ConfDir(), path.Base(flannelConfList)), flannelSubnetEnv, path.Join(spec.PluginDir(), "flannel")} {
		if err := r.Remove(strings.TrimPrefix(p, "/")); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	// Any plugin that differs from the base rootfs's (an injected old one, one the executor installed from its
	// bundle) is put back, so the next scenario starts from Debian's 1.1.1 set.
	base := filepath.Join(l.cfg.NodeRootfs, NodePluginDir)
	entries, err := os.ReadDir(base)
	if err != nil {
		errs = append(errs, err)
	}
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		data, err := os.ReadFile(filepath.Join(base, e.Name()))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if err := writeIfDifferent(r, path.Join(spec.PluginDir(), e.Name()), data, 0o755); err != nil {
			errs = append(errs, err)
		}
	}
	if err := removeLeakedLeases(r); err != nil {
		errs = append(errs, err)
	}
	changed, err := writeIfDifferentReport(r, spec.RuntimeConfigSource(), ContainerdConfigFor(spec), 0o644)
	if err != nil {
		errs = append(errs, err)
	}
	if spec.IsK3s() {
		// config.toml is rendered from the template at the unit's start: one that differs (edited by hand, or by a
		// repair that missed the template) is put right by a restart.
		if have, err := r.ReadFile(strings.TrimPrefix(K3sContainerdConfig, "/")); err == nil && !bytes.Equal(have, ContainerdConfigFor(spec)) {
			changed = true
		}
	}
	// Debian's containerd back in place of an injected old one.
	if data, err := os.ReadFile(filepath.Join(l.cfg.NodeRootfs, nodeContainerdBin)); err != nil {
		errs = append(errs, err)
	} else if binChanged, err := writeIfDifferentReport(r, nodeContainerdBin, data, 0o755); err != nil {
		errs = append(errs, err)
	} else {
		changed = changed || binChanged
	}
	if changed {
		errs = append(errs, restartUnits(ctx, node, spec.RuntimeUnits()...))
	}
	kcfg, err := l.kubeletConfigYAML(spec)
	if err != nil {
		errs = append(errs, err)
	} else if kubeletChanged, err := writeIfDifferentReport(r, nodeKubeletConfig, kcfg, 0o644); err != nil {
		errs = append(errs, err)
	} else if kubeletChanged && !spec.IsK3s() {
		errs = append(errs, restartUnits(ctx, node, kubeletUnit))
	} else if kubeletChanged {
		errs = append(errs, restartUnits(ctx, node, K3sUnit))
	}
	errs = append(errs, startUnits(ctx, node, spec.Units()...))
	errs = append(errs, l.uncordon(ctx, nodeName))
	return errors.Join(errs...)
}

// uncordon makes the node schedulable and drops cnimedic's cordon annotation.
func (l *Lab) uncordon(ctx context.Context, name string) error {
	cs, err := l.Clientset()
	if err != nil {
		return err
	}
	patch, err := json.Marshal(map[string]any{
		"metadata": map[string]any{"annotations": map[string]any{v1alpha1.AnnotationCordonedBy: nil}},
		"spec":     map[string]any{"unschedulable": false},
	})
	if err != nil {
		return err
	}
	_, err = cs.CoreV1().Nodes().Patch(ctx, name, types.StrategicMergePatchType, patch, metav1.PatchOptions{})
	return err
}

// writeAtomic replaces a node file the way a careful tool does: a temporary name that no CNI loader picks up
// (containerd reloads on file events, and a half-written conflist would read as broken), then rename(2).
func writeAtomic(r *os.Root, name string, data []byte, mode fs.FileMode) error {
	rel := strings.TrimPrefix(path.Clean(name), "/")
	if err := r.MkdirAll(path.Dir(rel), 0o755); err != nil {
		return err
	}
	tmp := path.Join(path.Dir(rel), ".cnimedic-lab-"+path.Base(rel)+".tmp")
	if err := r.WriteFile(tmp, data, mode); err != nil {
		return err
	}
	if err := r.Chmod(tmp, mode); err != nil {
		return err
	}
	return r.Rename(tmp, rel)
}

func writeIfDifferent(r *os.Root, name string, data []byte, mode fs.FileMode) error {
	_, err := writeIfDifferentReport(r, name, data, mode)
	return err
}

func writeIfDifferentReport(r *os.Root, name string, data []byte, mode fs.FileMode) (bool, error) {
	rel := strings.TrimPrefix(path.Clean(name), "/")
	if have, err := r.ReadFile(rel); err == nil && bytes.Equal(have, data) {
		if st, err := r.Stat(rel); err == nil && st.Mode().Perm() == mode {
			return false, nil
		}
	}
	return true, writeAtomic(r, name, data, mode)
}

// leakLeases writes a host-local lease for every free address of the node's range, each held by a sandbox id that
// no runtime knows: what teardowns that never ran leave behind. The format is host-local's own (a file named by
// the address, holding "<container id>\r\n<ifname>").
func leakLeases(r *os.Root, spec NodeSpec) error {
	dir := strings.TrimPrefix(NodeIPAMDir, "/")
	if err := r.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	prefix := spec.PodCIDR.Masked()
	gateway := prefix.Addr().Next()
	for a := gateway.Next(); prefix.Contains(a) && a != lastAddr(prefix); a = a.Next() {
		file := path.Join(dir, a.String())
		if _, err := r.Stat(file); err == nil {
			continue // a live pod's lease: leave it
		}
		if err := r.WriteFile(file, []byte(leakedID(a)+"\r\neth0"), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// leakedID is a sandbox id shaped like containerd's (64 hex digits), derived from the address so that Reset can
// tell the leases it planted from real ones.
func leakedID(a netip.Addr) string {
	sum := sha256.Sum256([]byte(leakedLeaseMarker + "/" + a.String()))
	return hex.EncodeToString(sum[:])
}

func removeLeakedLeases(r *os.Root) error {
	dir := strings.TrimPrefix(NodeIPAMDir, "/")
	entries, err := fs.ReadDir(r.FS(), dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, e := range entries {
		a, err := netip.ParseAddr(e.Name())
		if err != nil {
			continue
		}
		data, err := r.ReadFile(path.Join(dir, e.Name()))
		if err == nil && strings.HasPrefix(string(data), leakedID(a)) {
			if err := r.Remove(path.Join(dir, e.Name())); err != nil {
				return err
			}
		}
	}
	return nil
}

func lastAddr(p netip.Prefix) netip.Addr {
	a := p.Masked().Addr().As4()
	host := 32 - p.Bits()
	v := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3])
	v |= (1 << host) - 1
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// restartUnits restarts units of the node through its systemd and waits for each job.
func restartUnits(ctx context.Context, node *nspawn.Node, units ...string) error {
	return unitJobs(ctx, node, units, func(c *sdbus.Conn, u string, ch chan<- string) (int, error) {
		return c.RestartUnitContext(ctx, u, "replace", ch)
	})
}

// startUnits starts units of the node that are not running.
func startUnits(ctx context.Context, node *nspawn.Node, units ...string) error {
	return unitJobs(ctx, node, units, func(c *sdbus.Conn, u string, ch chan<- string) (int, error) {
		return c.StartUnitContext(ctx, u, "replace", ch)
	})
}

func unitJobs(ctx context.Context, node *nspawn.Node, units []string, job func(*sdbus.Conn, string, chan<- string) (int, error)) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	conn, err := node.Systemd(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	for _, u := range units {
		ch := make(chan string, 1)
		if _, err := job(conn, u, ch); err != nil {
			return fmt.Errorf("%s on %s: %w", u, node.Name(), err)
		}
		select {
		case res := <-ch:
			if res != "done" {
				return fmt.Errorf("%s on %s: job %s", u, node.Name(), res)
			}
		case <-ctx.Done():
			return fmt.Errorf("%s on %s: %w", u, node.Name(), ctx.Err())
		}
	}
	return nil
}

// MovedCRISocket is where MoveCRISocket puts containerd's socket: a place no layout cnimedic knows puts it.
const MovedCRISocket = "/run/containerd-custom/containerd.sock"

// MoveCRISocket moves a kubeadm-style node's containerd socket where no known layout puts it, the way an operator
// does: containerd's own setting ([grpc] address in config.toml, which Debian's containerd.service does not override
// with --address) and kubelet's containerRuntimeEndpoint, both restarted. The node stays Ready and runs pods;
// cnimedic must recognise that it cannot serve it. Reset moves it back.
func (l *Lab) MoveCRISocket(ctx context.Context, nodeName string) error {
	node, spec, err := l.Node(nodeName)
	if err != nil {
		return err
	}
	if spec.IsK3s() {
		return fmt.Errorf("lab: %s has the k3s layout, whose socket k3s fixes: MoveCRISocket is for a kubeadm-style node", nodeName)
	}
	r, err := os.OpenRoot(node.RootDir())
	if err != nil {
		return err
	}
	defer r.Close()
	cfg := append(ContainerdConfig(), []byte("\n[grpc]\n  address = \""+MovedCRISocket+"\"\n")...)
	if err := writeAtomic(r, nodeContainerdConf, cfg, 0o644); err != nil {
		return err
	}
	kcfg, err := l.kubeletConfigYAML(spec)
	if err != nil {
		return err
	}
	if !bytes.Contains(kcfg, []byte("unix://"+spec.CRISocket())) {
		return fmt.Errorf("lab: kubelet's config has no containerRuntimeEndpoint unix://%s to move", spec.CRISocket())
	}
	kcfg = bytes.Replace(kcfg, []byte("unix://"+spec.CRISocket()), []byte("unix://"+MovedCRISocket), 1)
	if err := writeAtomic(r, nodeKubeletConfig, kcfg, 0o644); err != nil {
		return err
	}
	if err := restartUnits(ctx, node, "containerd.service"); err != nil {
		return err
	}
	// containerd leaves its old socket file behind when its address changes.
	for _, f := range []string{spec.CRISocket(), spec.CRISocket() + ".ttrpc"} {
		if err := r.Remove(strings.TrimPrefix(f, "/")); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	return restartUnits(ctx, node, kubeletUnit)
}
