// Package lab runs a real Kubernetes cluster on this one machine for cnimedic's end-to-end suite and demo: a
// control plane on the host (etcd, kube-apiserver, kube-controller-manager, kube-scheduler, all built from Go
// modules into bin/k8s) and worker nodes that are systemd-nspawn containers booting a real systemd with
// containerd, runc, the CNI reference plugins and kubelet (test/nspawn), on a host bridge; the last worker is laid
// out as a k3s agent, an emulation of k3s's layout with those same parts (k3s.go). cnimedic is installed
// from deploy/cnimedic.yaml the way a user installs it, and faults are injected into the nodes' real files and
// binaries (faults.go).
//
// Everything the lab makes lives under the repository's .lab/ (gitignored): .lab/cluster holds the PKI, etcd's
// data, the logs, the nodes' state and the lab's own state file, and .lab/kubeconfig is the admin kubeconfig for
// the user. Outside it the lab changes only what it must and undoes it in Down: the host bridge, the nodes'
// cgroups and mounts (test/nspawn), and a few host sysctls kubelet insists on (restored to their old values).
//
// One lab per machine: a flock on .lab/lab.lock serialises lab commands of this checkout, and the bridge, the node
// names and the API server's address are machine-wide, so a second checkout's lab is refused with a message that
// says which one is running.
//
// The machine facts behind the flags are in docs/lab.md.
//
// Measured on our CI machine kind (2 vCPU VM, 24 GiB, cgroup v1 hybrid), binaries already built:
//   - `lab up` from nothing: 32-44 s: etcd 0.4 s, kube-apiserver ready 4.5 s, the two nodes booted at once with
//     their images imported (ctr import of 5 archives, ~100 MB) 18-22 s, nodes Ready 1.7 s, cnimedic applied and
//     its manager available 13 s (most of it the Deployment's readiness probe delay), the policy 0.3 s;
//     again on a running lab: about 1 s (everything is kept; rebuilt images are re-imported, ~5 s).
//   - `lab down`: 3-4 s (nodes halted 1.6-2.2 s, kube-apiserver stopped 1.2-1.4 s); nothing is left.
//   - memory (RSS of the control plane, memory cgroup usage less page cache of each node): 660-690 MiB right
//     after up (etcd 45, kube-apiserver 305-325, kube-controller-manager 115-125, kube-scheduler 68, each node
//     50-75 MiB with systemd, containerd, kubelet and the manager or no pod), 710-790 MiB after a suite run.
//   - a repair (injection to the workload Running again, automatic approval, detection thresholds of LabPolicy
//     with minStuckDuration 10 s): 19-30 s per node; the executor's own run 7-9 s of it.
//   - with the third, k3s-layout worker (measured on this machine, 2 cores): the three nodes boot in 11-12 s, the
//     lab is up in 28-29 s from nothing, 760 MiB right after up (the k3s node 55 MiB); its repairs take 18-24 s.
package lab

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cnimedic/cnimedic/hack/ociimage"
	"github.com/cnimedic/cnimedic/test/nspawn"
)

// Config says where the lab's inputs are and how it is laid out. Default fills it for a repository.
type Config struct {
	// RepoRoot is the repository's top directory.
	RepoRoot string
	// Dir holds the lab's state (.lab/cluster); Kubeconfig is the admin kubeconfig for the user (.lab/kubeconfig).
	Dir        string
	Kubeconfig string
	// K8sBin holds etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubelet and kubectl
	// (hack/build-controlplane.sh).
	K8sBin string
	// Images holds the image archives and their index (hack/images); NodeRootfs the nodes' base root
	// (hack/node-rootfs.sh); CNIOld the v0.9.1 plugins (hack/build-cni-plugins.sh old).
	Images     string
	NodeRootfs string
	CNIOld     string
	// Deploy is the manifest a user applies.
	Deploy string
	// Bridge is the host bridge's name and HostAddr the host's address on it, where the API server listens.
	Bridge   string
	HostAddr netip.Prefix
	// Workers is the number of kubeadm-style worker nodes (at least 2: a drain needs somewhere to send pods).
	Workers int
	// K3sAgents is the number of workers after them whose layout EMULATES a k3s agent's (k3s.go).
	K3sAgents int
}

// Ports on the host. Unusual numbers, on loopback where possible: envtest suites of other packages run their own
// etcd and kube-apiserver on this machine at random ports.
const (
	apiserverPort = 6443
	etcdPort      = 22379
	etcdPeerPort  = 22380
	kcmPort       = 20257
	schedulerPort = 20259
)

// Default is the lab of the repository at root, on bridge cnimlab0 (10.213.0.1/24): two kubeadm-style workers and
// a third laid out as a k3s agent (emulated: k3s.go).
func Default(root string) Config {
	return Config{
		RepoRoot:   root,
		Dir:        filepath.Join(root, ".lab", "cluster"),
		Kubeconfig: filepath.Join(root, ".lab", "kubeconfig"),
		K8sBin:     filepath.Join(root, "bin", "k8s"),
		Images:     filepath.Join(root, "bin", "images"),
		NodeRootfs: filepath.Join(root, "bin", "node-rootfs"),
		CNIOld:     filepath.Join(root, "bin", "cni-old"),
		Deploy:     filepath.Join(root, "deploy", "cnimedic.yaml"),
		Bridge:     "cnimlab0",
		HostAddr:   netip.MustParsePrefix("10.213.0.1/24"),
		Workers:    2,
		K3sAgents:  1,
	}
}

func (c Config) binary(name string) string { return filepath.Join(c.K8sBin, name) }

// helm is the helm CLI and plugin the kubectl plugin, both built into bin/ by make lab-deps.
func (c Config) helm() string      { return filepath.Join(c.RepoRoot, "bin", "helm") }
func (c Config) plugin() string    { return filepath.Join(c.RepoRoot, "bin", "kubectl-cnimedic") }
func (c Config) pkiDir() string    { return filepath.Join(c.Dir, "pki") }
func (c Config) logDir() string    { return filepath.Join(c.Dir, "logs") }
func (c Config) stateFile() string { return filepath.Join(c.Dir, "state.json") }
func (c Config) lockFile() string  { return filepath.Join(filepath.Dir(c.Dir), "lab.lock") }

// Server is the API server's URL.
func (c Config) Server() string {
	return fmt.Sprintf("https://%s", net.JoinHostPort(c.HostAddr.Addr().String(), fmt.Sprint(apiserverPort)))
}

// Nodes are the worker nodes' specs: worker-1 at 10.213.0.11 with pods in 10.244.1.0/24, and so on; the k3s-layout
// workers come last.
func (c Config) Nodes() []NodeSpec {
	base := c.HostAddr.Addr().As4()
	var nodes []NodeSpec
	for i := 1; i <= c.Workers+c.K3sAgents; i++ {
		addr := base
		addr[3] = byte(10 + i)
		name := fmt.Sprintf("worker-%d", i)
		nodes = append(nodes, NodeSpec{
			Name:     name,
			Address:  netip.PrefixFrom(netip.AddrFrom4(addr), c.HostAddr.Bits()),
			PodCIDR:  netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 244, byte(i), 0}), 24),
			StateDir: filepath.Join(c.Dir, "nodes", name),
		})
		if i > c.Workers {
			nodes[len(nodes)-1].Layout = LayoutK3sAgent
		}
	}
	return nodes
}

// state is what `lab up` leaves for later commands (down, the e2e suite, the demo): written after each step that
// leaves something on the machine, so that Down undoes exactly what Up did, even after a crash.
type state struct {
	// Bridge is set once the lab created (or adopted) its bridge.
	Bridge string `json:"bridge,omitempty"`
	// Sysctls are the host's values before the lab changed them (restored by Down).
	Sysctls map[string]string `json:"sysctls,omitempty"`
	// Procs are the control-plane processes by name.
	Procs map[string]*Proc `json:"procs,omitempty"`
	// Nodes are the worker nodes the lab booted.
	Nodes []NodeSpec `json:"nodes,omitempty"`
	// Installed is set once cnimedic was applied.
	Installed bool `json:"installed,omitempty"`
	// ImagesDigest identifies the images the nodes imported; RestartManager is set when they were re-imported and
	// the manager's pod still runs the old image.
	ImagesDigest   string `json:"imagesDigest,omitempty"`
	RestartManager bool   `json:"restartManager,omitempty"`
}

// Lab is a handle on the lab of one checkout. Up and Down need the lock (Lock); the other methods use a lab that is
// up.
type Lab struct {
	cfg Config
	st  state
	// Out gets the progress lines of Up and Down (a person reads them); nil discards them.
	Out  io.Writer
	lock *os.File
}

// New returns a handle on the lab described by cfg, reading its state if it was brought up before.
func New(cfg Config) (*Lab, error) {
	if cfg.Workers < 2 {
		return nil, errors.New("lab: at least 2 workers (a drain needs somewhere to send pods)")
	}
	l := &Lab{cfg: cfg}
	if err := l.readState(); err != nil {
		return nil, err
	}
	return l, nil
}

// Config is the lab's configuration.
func (l *Lab) Config() Config { return l.cfg }

func (l *Lab) logf(format string, args ...any) {
	if l.Out != nil {
		fmt.Fprintf(l.Out, format+"\n", args...)
	}
}

func (l *Lab) readState() error {
	data, err := os.ReadFile(l.cfg.stateFile())
	if errors.Is(err, os.ErrNotExist) {
		l.st = state{}
		return nil
	}
	if err != nil {
		return err
	}
	var st state
	if err := json.Unmarshal(data, &st); err != nil {
		return fmt.Errorf("lab: %s: %w", l.cfg.stateFile(), err)
	}
	l.st = st
	return nil
}

func (l *Lab) writeState() error {
	if err := os.MkdirAll(l.cfg.Dir, 0o755); err != nil {
		return err
	}
	data, err := json.MarshalIndent(l.st, "", "  ")
	if err != nil {
		return err
	}
	tmp := l.cfg.stateFile() + ".tmp"
	if err := os.WriteFile(tmp, append(data, '\n'), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, l.cfg.stateFile())
}

// Lock takes the lab's lock (.lab/lab.lock) for this process, failing at once when another lab command of this
// checkout holds it. The kernel drops it when the process dies, so a killed command never leaves it behind.
func (l *Lab) Lock() error {
	if l.lock != nil {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(l.cfg.lockFile()), 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(l.cfg.lockFile(), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		holder, _ := os.ReadFile(l.cfg.lockFile())
		f.Close()
		return fmt.Errorf("lab: another lab command holds %s (%s): wait for it, or stop it", l.cfg.lockFile(), strings.TrimSpace(string(holder)))
	}
	_ = f.Truncate(0)
	_, _ = fmt.Fprintf(f, "pid %d: %s\n", os.Getpid(), strings.Join(os.Args, " "))
	l.lock = f
	return nil
}

// Unlock releases the lock.
func (l *Lab) Unlock() {
	if l.lock != nil {
		_ = l.lock.Truncate(0)
		_ = l.lock.Close()
		l.lock = nil
	}
}

// Prerequisites reports what is missing to bring the lab up, each with the make target that provides it. Empty
// means ready.
func (c Config) Prerequisites() []string {
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "root (mounts, cgroups, the bridge, systemd-nspawn): run as root, as CI does")
	}
	for _, tool := range []string{"systemd-nspawn", "nsenter", "ip"} {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool+": make node-deps")
		}
	}
	for _, b := range []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kubectl"} {
		if _, err := os.Stat(c.binary(b)); err != nil {
			missing = append(missing, fmt.Sprintf("%s in %s: make lab-deps (hack/build-controlplane.sh %s)", b, c.K8sBin, b))
		}
	}
	if _, err := os.Stat(filepath.Join(c.NodeRootfs, "usr/lib/systemd/systemd")); err != nil {
		missing = append(missing, "the node root filesystem "+c.NodeRootfs+": make node-rootfs")
	}
	if _, err := readIndex(c.Images); err != nil {
		missing = append(missing, "the lab images in "+c.Images+": make images")
	}
	if _, err := os.Stat(c.oldContainerd()); err != nil {
		missing = append(missing, "containerd v1.6.1 in bin/containerd-old: make lab-deps (hack/build-old-containerd.sh)")
	}
	if _, err := os.Stat(c.flannelPlugin()); err != nil {
		missing = append(missing, "the flannel CNI plugin in bin/cni-flannel: make lab-deps")
	}
	if _, err := os.Stat(filepath.Join(c.CNIOld, "bridge")); err != nil {
		missing = append(missing, "the v0.9.1 plugins in "+c.CNIOld+": make cni-plugins")
	}
	if _, err := os.Stat(c.Deploy); err != nil {
		missing = append(missing, c.Deploy+": make deploy-render")
	}
	for _, b := range []string{c.helm(), c.plugin()} {
		if _, err := os.Stat(b); err != nil {
			missing = append(missing, b+": make lab-deps")
		}
	}
	return missing
}

func readIndex(dir string) (ociimage.Index, error) {
	var idx ociimage.Index
	data, err := os.ReadFile(filepath.Join(dir, ociimage.IndexFile))
	if err != nil {
		return idx, err
	}
	if err := json.Unmarshal(data, &idx); err != nil {
		return idx, err
	}
	for _, img := range idx.Images {
		if _, err := os.Stat(filepath.Join(dir, img.File)); err != nil {
			return idx, err
		}
	}
	if len(idx.Images) == 0 {
		return idx, errors.New("no images")
	}
	return idx, nil
}

// step runs one step of Up or Down, printing what it did and how long it took.
func (l *Lab) step(what string, f func() error) error {
	start := time.Now()
	if err := f(); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	l.logf("  %-52s %6.1fs", what, time.Since(start).Seconds())
	return nil
}

// Up brings the whole lab up: the cluster (UpCluster), cnimedic (Install) and the lab's policy (ApplyPolicy). It
// is idempotent: what already runs is kept.
func (l *Lab) Up(ctx context.Context) error {
	if err := l.UpCluster(ctx); err != nil {
		return err
	}
	if err := l.Install(ctx); err != nil {
		return err
	}
	_, err := l.ApplyPolicy(ctx, LabPolicy())
	return err
}

// UpCluster brings up the host side (sysctls, bridge, PKI, control plane) and the worker nodes, and waits until
// every node is Ready. Idempotent.
func (l *Lab) UpCluster(ctx context.Context) error {
	if l.lock == nil {
		return errors.New("lab: Up without the lock (call Lock first)")
	}
	if missing := l.cfg.Prerequisites(); len(missing) > 0 {
		return fmt.Errorf("lab: missing prerequisites:\n  - %s", strings.Join(missing, "\n  - "))
	}
	if err := l.refuseForeignLab(); err != nil {
		return err
	}
	start := time.Now()
	l.logf("Bringing the lab up in %s:", l.cfg.Dir)
	if err := l.step("host sysctls kubelet needs", l.setSysctls); err != nil {
		return err
	}
	if err := l.step("bridge "+l.cfg.Bridge+" "+l.cfg.HostAddr.String(), func() error {
		l.st.Bridge = l.cfg.Bridge
		if err := l.writeState(); err != nil {
			return err
		}
		return nspawn.EnsureBridge(ctx, l.cfg.Bridge, l.cfg.HostAddr)
	}); err != nil {
		return err
	}
	if err := l.step("certificates and kubeconfigs", l.ensurePKI); err != nil {
		return err
	}
	if err := l.startControlPlane(ctx); err != nil {
		return err
	}
	if err := l.bootNodes(ctx); err != nil {
		return err
	}
	if err := l.step("nodes Ready", func() error { return l.waitNodesReady(ctx, 3*time.Minute) }); err != nil {
		return err
	}
	l.logf("  cluster up in %.1fs", time.Since(start).Seconds())
	return nil
}

// refuseForeignLab fails when a lab this checkout did not start holds the machine-wide names: the bridge, or the
// API server's address.
func (l *Lab) refuseForeignLab() error {
	if _, err := net.InterfaceByName(l.cfg.Bridge); err == nil && l.st.Bridge == "" {
		return fmt.Errorf("lab: bridge %s exists but this checkout's lab (%s) did not create it: another lab runs on this machine "+
			"(one lab per machine); run `make lab-down` in its checkout, or `ip link delete %s` if it is a leftover", l.cfg.Bridge, l.cfg.Dir, l.cfg.Bridge)
	}
	return nil
}

// Down tears the lab down and leaves nothing: nodes (processes, mounts, cgroups), control plane, bridge, sysctls
// (restored) and the .lab/cluster directory and kubeconfig. Idempotent; it goes on after an error and reports all.
func (l *Lab) Down(ctx context.Context) error {
	if l.lock == nil {
		return errors.New("lab: Down without the lock (call Lock first)")
	}
	start := time.Now()
	l.logf("Tearing the lab down:")
	var errs []error
	// Nodes first: a halting kubelet should still find its API server (it deregisters nothing, but its pods'
	// teardown is quieter).
	nodes := l.st.Nodes
	if len(nodes) == 0 {
		nodes = l.cfg.Nodes()
	}
	errs = append(errs, l.step(fmt.Sprintf("halt %d nodes", len(nodes)), func() error {
		return l.haltNodes(ctx, nodes)
	}))
	for _, name := range []string{"kube-scheduler", "kube-controller-manager", "kube-apiserver", "etcd"} {
		p := l.st.Procs[name]
		if p == nil {
			continue
		}
		errs = append(errs, l.step("stop "+name, func() error { return p.Stop(ctx, 20*time.Second) }))
	}
	if l.st.Bridge != "" {
		errs = append(errs, l.step("delete bridge "+l.st.Bridge, func() error { return nspawn.DeleteBridge(ctx, l.st.Bridge) }))
	}
	if len(l.st.Sysctls) > 0 {
		errs = append(errs, l.step("restore host sysctls", l.restoreSysctls))
	}
	if err := errors.Join(errs...); err != nil {
		// Keep the state: a second Down retries what is left.
		_ = l.writeState()
		return err
	}
	if err := os.RemoveAll(l.cfg.Dir); err != nil {
		return err
	}
	if err := os.Remove(l.cfg.Kubeconfig); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	l.st = state{}
	l.logf("  lab down in %.1fs; nothing of it is left", time.Since(start).Seconds())
	return nil
}

// hostSysctls are the values kubelet insists on and cannot set from inside a node (measured; see the notes).
var hostSysctls = [][2]string{
	{"vm.overcommit_memory", "1"},
	{"vm.panic_on_oom", "0"},
	{"kernel.panic", "10"},
	{"kernel.panic_on_oops", "1"},
	{"kernel.keys.root_maxkeys", "1000000"},
	{"kernel.keys.root_maxbytes", "25000000"},
}

func sysctlPath(key string) string {
	return filepath.Join("/proc/sys", strings.ReplaceAll(key, ".", "/"))
}

func (l *Lab) setSysctls() error {
	if l.st.Sysctls == nil {
		old := map[string]string{}
		for _, kv := range hostSysctls {
			data, err := os.ReadFile(sysctlPath(kv[0]))
			if err != nil {
				return err
			}
			old[kv[0]] = strings.TrimSpace(string(data))
		}
		// Recorded before anything changes, so Down restores the machine's own values.
		l.st.Sysctls = old
		if err := l.writeState(); err != nil {
			return err
		}
	}
	for _, kv := range hostSysctls {
		if err := os.WriteFile(sysctlPath(kv[0]), []byte(kv[1]), 0o644); err != nil {
			return fmt.Errorf("sysctl %s=%s: %w", kv[0], kv[1], err)
		}
	}
	return nil
}

func (l *Lab) restoreSysctls() error {
	var errs []error
	for key, v := range l.st.Sysctls {
		if err := os.WriteFile(sysctlPath(key), []byte(v), 0o644); err != nil {
			errs = append(errs, fmt.Errorf("sysctl %s=%s: %w", key, v, err))
		}
	}
	if len(errs) == 0 {
		l.st.Sysctls = nil
	}
	return errors.Join(errs...)
}
