package nspawn

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	sdbus "github.com/coreos/go-systemd/v22/dbus"
	godbus "github.com/godbus/dbus/v5"
	"golang.org/x/sys/unix"
)

const (
	defaultBootTimeout = 60 * time.Second
	// defaultHaltGrace bounds an orderly shutdown when Halt's context has no deadline; one takes 1.3-2 s here.
	defaultHaltGrace = 30 * time.Second
	// teardownTimeout bounds killing leftovers and removing cgroups once the node's processes are gone.
	teardownTimeout = 15 * time.Second
	pollInterval    = 25 * time.Millisecond
)

// nodeEnv is the environment of commands run inside a node: the host's (the test's, the lab's) must not leak in.
var nodeEnv = []string{
	"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
	"HOME=/root",
	"LANG=C.UTF-8",
}

// launcher is the first process of a node: it moves itself into the node's cgroups (its arguments up to "--" are
// their cgroup.procs files) and then becomes systemd-nspawn (the arguments after "--"). It has to be a separate
// process because a Go program cannot place a child in v1 cgroups between fork and exec, and nspawn forks the node
// at once. The script is a constant; every path reaches it as an argument, never as shell text.
const launcher = `set -eu
while [ "$1" != -- ]; do echo $$ >"$1"; shift; done
shift
exec "$@"`

// Node is a running systemd-nspawn container with a real systemd as its PID 1. Its methods are safe for
// concurrent use.
type Node struct {
	name     string
	stateDir string

	mu   sync.Mutex
	st   state
	done bool // torn down

	// exited is closed once the nspawn process has been reaped, for a node this process booted; nil for a node
	// found with Load, whose nspawn is not our child (then its PID is polled).
	exited chan struct{}
}

// Boot starts a node and returns once its systemd reports SystemState=running (and, with Network, once host0 has
// its address). Whatever an earlier run left in opts.StateDir is torn down first. On error nothing is left behind.
func Boot(ctx context.Context, opts Options) (*Node, error) {
	if err := opts.validate(); err != nil {
		return nil, fmt.Errorf("nspawn: %w", err)
	}
	if os.Geteuid() != 0 {
		return nil, errors.New("nspawn: booting a node needs root (mounts, cgroups, systemd-nspawn)")
	}
	nspawnBin, err := exec.LookPath("systemd-nspawn")
	if err != nil {
		return nil, errors.New("nspawn: systemd-nspawn is not installed: run `make node-deps` (hack/install-node-deps.sh)")
	}
	if _, err := exec.LookPath("nsenter"); err != nil {
		return nil, errors.New("nspawn: nsenter is not installed: run `make node-deps` (hack/install-node-deps.sh)")
	}
	if _, err := os.Stat(filepath.Join(opts.BaseRoot, "usr/lib/systemd/systemd")); err != nil {
		return nil, fmt.Errorf("nspawn: %s is not a node root filesystem (no systemd): run `make node-rootfs` (hack/node-rootfs.sh)", opts.BaseRoot)
	}
	opts.StateDir = filepath.Clean(opts.StateDir)
	if err := Cleanup(ctx, opts.StateDir); err != nil {
		return nil, fmt.Errorf("nspawn: clearing what a previous run left in %s: %w", opts.StateDir, err)
	}

	n := &Node{name: opts.Name, stateDir: opts.StateDir, st: state{Name: opts.Name, BaseRoot: opts.BaseRoot}}
	if opts.Ephemeral {
		n.st.Owner = os.Getpid()
		if n.st.OwnerStart, err = processStart(n.st.Owner); err != nil {
			return nil, fmt.Errorf("nspawn: %w", err)
		}
	}
	if err := n.start(ctx, &opts, nspawnBin); err != nil {
		// The node may be half-made (mounted, cgroups created, nspawn running): tear all of it down, and keep the
		// console's last words for the error, since the state directory goes with it.
		console := n.consoleTail()
		tctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), teardownTimeout)
		defer cancel()
		if cerr := n.teardown(tctx, 0); cerr != nil {
			err = errors.Join(err, fmt.Errorf("and cleaning up: %w", cerr))
		}
		if console != "" {
			err = fmt.Errorf("%w\nconsole of node %s:\n%s", err, opts.Name, console)
		}
		return nil, fmt.Errorf("nspawn: boot %s: %w", opts.Name, err)
	}
	return n, nil
}

func (n *Node) start(ctx context.Context, opts *Options, nspawnBin string) error {
	dir := n.stateDir
	for _, d := range []string{upperDir, workDir, rootDir, busDir, containerdDir} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return err
		}
	}
	cgroups, err := nodeCgroupDirs(n.name)
	if err != nil {
		return err
	}
	// Checked before the cgroups go into the state: a failed Boot tears down what its state lists, and these
	// may be another live node's.
	if err := n.refuseNameInUse(cgroups); err != nil {
		return err
	}
	// Record the cgroups before creating them, and the mount before making it: a crash from here on leaves a
	// state file that tells Cleanup what to undo.
	n.st.Cgroups = cgroups
	if err := writeState(dir, &n.st); err != nil {
		return err
	}

	// The node's root: an overlayfs over the shared base, so that nodes start from a pristine tree in no time and
	// the base is never written. nspawn's own --volatile=overlay would do the same but hides the writable layer
	// from the host, where tests and the lab inject faults through RootDir.
	root := filepath.Join(dir, rootDir)
	data := "lowerdir=" + opts.BaseRoot + ",upperdir=" + filepath.Join(dir, upperDir) + ",workdir=" + filepath.Join(dir, workDir)
	if err := unix.Mount("overlay", root, "overlay", 0, data); err != nil {
		return fmt.Errorf("mount the node's root (overlay over %s): %w", opts.BaseRoot, err)
	}
	var rootStat unix.Stat_t
	if err := unix.Stat(root, &rootStat); err != nil {
		return err
	}
	// nspawn locks the directory it boots in /run/systemd/nspawn/locks by device and inode, and leaves the lock
	// file there if it is killed.
	n.st.LockFile = fmt.Sprintf("/run/systemd/nspawn/locks/inode-%d:%d", rootStat.Dev, rootStat.Ino)
	if err := writeState(dir, &n.st); err != nil {
		return err
	}
	if err := placeFiles(root, opts); err != nil {
		return err
	}
	if err := createCgroups(cgroups); err != nil {
		return err
	}

	args := []string{"-c", launcher, "cnimedic-nspawn-launcher"}
	for _, cg := range cgroups {
		args = append(args, filepath.Join(cg, "cgroup.procs"))
	}
	args = append(args, "--", nspawnBin)
	args = append(args, nspawnArgs(opts)...)
	console, err := os.OpenFile(filepath.Join(dir, consoleLogFile), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer console.Close()
	// Not exec.CommandContext: the node must outlive ctx (and this process, for the lab). setsid detaches it from
	// our terminal and process group, so a ^C meant for `go test` reaches the node only through Halt.
	cmd := exec.Command("/bin/sh", args...)
	cmd.Stdin = nil // /dev/null: nspawn --console=pipe must not read our stdin
	cmd.Stdout, cmd.Stderr = console, console
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"} // no SYSTEMD_NSPAWN_* or DBUS_* from our environment
	cmd.SysProcAttr = &unix.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start systemd-nspawn: %w", err)
	}
	n.exited = make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(n.exited)
	}()
	n.st.PID = cmd.Process.Pid
	n.st.PIDStart, err = processStart(n.st.PID)
	if err != nil {
		return fmt.Errorf("systemd-nspawn exited at once: %w", err)
	}
	if err := writeState(dir, &n.st); err != nil {
		return err
	}

	timeout := opts.BootTimeout
	if timeout <= 0 {
		timeout = defaultBootTimeout
	}
	bootCtx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if err := n.waitRunning(bootCtx, opts.AllowDegraded); err != nil {
		return err
	}
	if n.st.Leader, err = n.findLeader(); err != nil {
		return err
	}
	if err := writeState(dir, &n.st); err != nil {
		return err
	}
	if opts.Network != nil {
		return n.waitAddress(bootCtx, opts.Network.Address)
	}
	return nil
}

// nspawnArgs are systemd-nspawn's flags for a node, for the reasons docs/lab.md gives.
func nspawnArgs(opts *Options) []string {
	dir := opts.StateDir
	args := []string{
		"--boot",
		// Both are needed on a host whose PID 1 is not systemd (nspawn cannot register with machined or create
		// a scope unit): without them it fails with "Failed to open system bus".
		"--register=no", "--keep-unit",
		"--console=pipe",
		// The node's journal stays inside it; nothing is linked into the host's /var/log/journal.
		"--link-journal=no",
		// A node is a privileged machine, like a kind node: kubelet and runc need every capability, kubelet's OOM
		// watcher reads /dev/kmsg, and runc needs the keyring syscalls (nspawn's list is space-separated).
		"--capability=all",
		"--bind-ro=/dev/kmsg",
		"--system-call-filter=add_key keyctl request_key",
		// The node's system bus socket appears on the host in STATE/bus, for go-systemd from tests and the lab.
		"--bind=" + nspawnPath(filepath.Join(dir, busDir)) + ":/run/dbus",
		// containerd's overlayfs snapshotter cannot stack on the node's overlay root: give it a plain directory.
		"--bind=" + nspawnPath(filepath.Join(dir, containerdDir)) + ":/var/lib/containerd",
	}
	for _, b := range opts.Binds {
		flag := "--bind="
		if b.ReadOnly {
			flag = "--bind-ro="
		}
		node := b.NodePath
		if node == "" {
			node = b.HostPath
		}
		args = append(args, flag+nspawnPath(b.HostPath)+":"+nspawnPath(node))
	}
	if opts.Network != nil {
		args = append(args, "--network-bridge="+opts.Network.Bridge)
	} else {
		args = append(args, "--private-network")
	}
	return append(args, "--machine="+opts.Name, "--directory="+filepath.Join(dir, rootDir))
}

// refuseNameInUse fails when a node of the same name, from another state directory, still runs: its cgroups are
// ours by name. Empty leftovers of a crashed run are simply removed.
func (n *Node) refuseNameInUse(cgroups []string) error {
	pids, err := cgroupPIDs(cgroups)
	if err != nil {
		return err
	}
	if len(pids) > 0 {
		return fmt.Errorf("a node named %s is already running from another state directory (processes %v in %s); "+
			"halt it (nspawn.Cleanup on its state directory) or choose another name", n.name, pids, cgroups[0])
	}
	ctx, cancel := context.WithTimeout(context.Background(), teardownTimeout)
	defer cancel()
	return removeCgroups(ctx, cgroups)
}

// placeFiles writes opts.Files, the network configuration and the unit links into the node's root. Every path is
// resolved inside the root with os.Root: a symlink in the base (say /etc/resolv.conf) can never make us write to
// the host.
func placeFiles(root string, opts *Options) error {
	r, err := os.OpenRoot(root)
	if err != nil {
		return err
	}
	defer r.Close()
	files := opts.Files
	if opts.Network != nil {
		// Sorted before Debian's 80-container-host0.network, which would ask for DHCP.
		files = append(files[:len(files):len(files)], File{
			Path: "/etc/systemd/network/10-cnimedic-host0.network",
			Data: opts.Network.networkdConfig(),
		})
	}
	for _, f := range files {
		if err := writeFile(r, f); err != nil {
			return fmt.Errorf("place %s in the node: %w", f.Path, err)
		}
	}
	for _, unit := range opts.EnableUnits {
		if err := enableUnit(r, unit); err != nil {
			return fmt.Errorf("enable %s in the node: %w", unit, err)
		}
	}
	return nil
}

func writeFile(r *os.Root, f File) error {
	rel := strings.TrimPrefix(filepath.Clean(f.Path), "/")
	mode := f.Mode.Perm()
	if mode == 0 {
		mode = 0o644
	}
	if err := r.MkdirAll(filepath.Dir(rel), 0o755); err != nil {
		return err
	}
	var src io.Reader = bytes.NewReader(f.Data)
	if f.Source != "" {
		in, err := os.Open(f.Source)
		if err != nil {
			return err
		}
		defer in.Close()
		src = in
	}
	out, err := r.OpenFile(rel, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, src); err != nil {
		out.Close()
		return err
	}
	if err := out.Close(); err != nil {
		return err
	}
	return r.Chmod(rel, mode) // OpenFile's mode is filtered by our umask, and does not apply to an existing file
}

// enableUnit does what `systemctl enable` does for a unit wanted by multi-user.target, without running anything
// of the node: a link in multi-user.target.wants.
func enableUnit(r *os.Root, unit string) error {
	file := unit
	if at := strings.IndexByte(unit, '@'); at >= 0 {
		file = unit[:at+1] + unit[strings.LastIndexByte(unit, '.'):] // foo@bar.service is foo@.service
	}
	for _, dir := range []string{"etc/systemd/system", "usr/lib/systemd/system"} {
		if _, err := r.Stat(filepath.Join(dir, file)); err != nil {
			continue
		}
		wants := "etc/systemd/system/multi-user.target.wants"
		if err := r.MkdirAll(wants, 0o755); err != nil {
			return err
		}
		link := filepath.Join(wants, unit)
		if err := r.Remove(link); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		return r.Symlink("/"+filepath.Join(dir, file), link)
	}
	return fmt.Errorf("no unit file %s in /etc/systemd/system or /usr/lib/systemd/system (place it with Files)", file)
}

// waitRunning polls the node's systemd over its system bus until the boot is over.
func (n *Node) waitRunning(ctx context.Context, allowDegraded bool) error {
	var last string
	var lastErr error
	for {
		select {
		case <-n.exited:
			return errors.New("systemd-nspawn exited during boot")
		default:
		}
		if _, err := os.Stat(n.busSocket()); err == nil {
			last, lastErr = n.SystemState(ctx)
			switch {
			case lastErr != nil:
			case last == "running":
				return nil
			case last == "degraded" && allowDegraded:
				return nil
			case last == "degraded":
				return fmt.Errorf("the node booted degraded, failed units: %s", n.failedUnits(ctx))
			case last == "maintenance" || last == "stopping":
				return fmt.Errorf("the node's systemd is in state %q", last)
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for SystemState=running (last state %q, last error %v): %w", last, lastErr, ctx.Err())
		case <-time.After(pollInterval):
		}
	}
}

func (n *Node) failedUnits(ctx context.Context) string {
	conn, err := n.Systemd(ctx)
	if err != nil {
		return "(cannot list: " + err.Error() + ")"
	}
	defer conn.Close()
	units, err := conn.ListUnitsFilteredContext(ctx, []string{"failed"})
	if err != nil {
		return "(cannot list: " + err.Error() + ")"
	}
	var names []string
	for _, u := range units {
		names = append(names, u.Name)
	}
	return strings.Join(names, ", ")
}

// findLeader returns the host PID of the node's PID 1: the process in the node's cgroups whose PID in its own
// namespace is 1.
func (n *Node) findLeader() (int, error) {
	pids, err := cgroupPIDs(n.st.Cgroups)
	if err != nil {
		return 0, err
	}
	for _, pid := range pids {
		status, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
		if err != nil {
			continue
		}
		for line := range strings.SplitSeq(string(status), "\n") {
			// "NSpid:	HOSTPID ... 1" lists the PID in each nested namespace, the innermost last.
			if f := strings.Fields(line); len(f) >= 3 && f[0] == "NSpid:" && f[len(f)-1] == "1" {
				return pid, nil
			}
		}
	}
	return 0, fmt.Errorf("no PID 1 of a new PID namespace among the node's processes %v", pids)
}

func (n *Node) waitAddress(ctx context.Context, addr netip.Prefix) error {
	var out []byte
	var err error
	for {
		out, err = n.Run(ctx, "ip", "-o", "-4", "addr", "show", "dev", "host0")
		if err == nil && bytes.Contains(out, []byte(" "+addr.String()+" ")) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s on host0 (last: %q, %v): %w", addr, out, err, ctx.Err())
		case <-time.After(pollInterval):
		}
	}
}

// Name is the node's machine name and hostname.
func (n *Node) Name() string { return n.name }

// StateDir is the node's state directory on the host.
func (n *Node) StateDir() string { return n.stateDir }

// RootDir is the node's root filesystem seen from the host (its overlay mount). Writing there changes the running
// node, which is how tests and the lab inject faults into its files.
func (n *Node) RootDir() string { return filepath.Join(n.stateDir, rootDir) }

// Leader is the host PID of the node's PID 1, its systemd.
func (n *Node) Leader() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.st.Leader
}

// PID is the host PID of the node's systemd-nspawn process.
func (n *Node) PID() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.st.PID
}

// Cgroups are the node's own cgroup directories on the host, one per hierarchy.
func (n *Node) Cgroups() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]string(nil), n.st.Cgroups...)
}

func (n *Node) busSocket() string { return filepath.Join(n.stateDir, busDir, "system_bus_socket") }

// BusAddress is the D-Bus address of the node's system bus, e.g. for godbus.Connect or for the
// DBUS_SYSTEM_BUS_ADDRESS of a process that must believe it runs on the node.
func (n *Node) BusAddress() string { return "unix:path=" + n.busSocket() }

// DialBus opens an authenticated connection to the node's system bus. It closes when ctx ends.
func (n *Node) DialBus(ctx context.Context) (*godbus.Conn, error) {
	return DialBus(ctx, n.BusAddress())
}

// DialBus opens an authenticated connection (EXTERNAL auth as our uid, then Hello) to the bus at address, the way
// go-systemd does for the system bus but without reading DBUS_SYSTEM_BUS_ADDRESS from the process environment.
// The connection closes when ctx ends.
func DialBus(ctx context.Context, address string) (*godbus.Conn, error) {
	conn, err := godbus.Dial(address, godbus.WithContext(ctx))
	if err != nil {
		return nil, err
	}
	// Only EXTERNAL, with the numeric uid: no user name lookup, as in go-systemd.
	if err := conn.Auth([]godbus.Auth{godbus.AuthExternal(strconv.Itoa(os.Getuid()))}); err != nil {
		conn.Close()
		return nil, err
	}
	if err := conn.Hello(); err != nil {
		conn.Close()
		return nil, err
	}
	return conn, nil
}

// Systemd connects go-systemd to the node's systemd over the node's system bus. The connection closes when ctx
// ends; Close it when done.
func (n *Node) Systemd(ctx context.Context) (*sdbus.Conn, error) {
	return SystemdAt(ctx, n.BusAddress())
}

// SystemdAt connects go-systemd to the systemd behind the system bus at address (see Node.BusAddress).
func SystemdAt(ctx context.Context, address string) (*sdbus.Conn, error) {
	return sdbus.NewConnection(func() (*godbus.Conn, error) { return DialBus(ctx, address) })
}

// SystemState is the node's systemd Manager property SystemState: "starting", "running", "degraded", ...
func (n *Node) SystemState(ctx context.Context) (string, error) {
	conn, err := n.DialBus(ctx)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	v, err := conn.Object("org.freedesktop.systemd1", "/org/freedesktop/systemd1").
		GetProperty("org.freedesktop.systemd1.Manager.SystemState")
	if err != nil {
		return "", err
	}
	s, ok := v.Value().(string)
	if !ok {
		return "", fmt.Errorf("SystemState is a %s, not a string", v.Signature())
	}
	return s, nil
}

// Command prepares argv to run inside the node, in all of its namespaces (nsenter -t LEADER -a), with a clean
// environment. The process stays in the caller's cgroups, not the node's, and dies with the node.
//
// Entering a PID namespace makes nsenter fork: the command runs as nsenter's child (see CommandPID), and killing
// nsenter alone would leave it running in the node (util-linux 2.38 has no --kill-child). So cancelling ctx kills
// the command, and nsenter, which waits for it, exits with it. nsenter must be the one to reap the command: an
// orphan would be adopted by the host's init, which here is slow to reap, and the node's shutdown then waits 10 s
// for the zombie in its PID namespace.
func (n *Node) Command(ctx context.Context, argv ...string) *exec.Cmd {
	args := append([]string{"--target", strconv.Itoa(n.Leader()), "--all", "--"}, argv...)
	cmd := exec.CommandContext(ctx, "nsenter", args...)
	cmd.Env = append([]string(nil), nodeEnv...)
	cmd.Cancel = func() error {
		if children := childrenOf(cmd.Process.Pid); len(children) > 0 {
			for _, child := range children {
				_ = unix.Kill(child, unix.SIGKILL)
			}
			return nil
		}
		// Not forked yet: nsenter itself is the only process. A fork racing with this kill is caught below.
		err := cmd.Process.Kill()
		for _, child := range childrenOf(cmd.Process.Pid) {
			_ = unix.Kill(child, unix.SIGKILL)
		}
		return err
	}
	// Should a grandchild still hold the output pipes after a cancel, do not wait for it forever.
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// CommandPID returns the host PID of the command a started Command runs (nsenter's child), waiting until nsenter
// has forked it. Signal this PID, not cmd.Process, to kill the command itself, as a fault injection does.
func CommandPID(ctx context.Context, cmd *exec.Cmd) (int, error) {
	if cmd.Process == nil {
		return 0, errors.New("nspawn: CommandPID of a command that was not started")
	}
	for {
		if children := childrenOf(cmd.Process.Pid); len(children) > 0 {
			return children[0], nil
		}
		if _, err := processStart(cmd.Process.Pid); err != nil {
			return 0, fmt.Errorf("nspawn: nsenter %d exited before running the command", cmd.Process.Pid)
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// childrenOf lists the processes whose parent is pid (this kernel has no /proc/PID/task/TID/children).
func childrenOf(pid int) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var children []int
	want := "PPid:\t" + strconv.Itoa(pid) + "\n"
	for _, e := range entries {
		child, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if status, err := os.ReadFile("/proc/" + e.Name() + "/status"); err == nil && strings.Contains(string(status), want) {
			children = append(children, child)
		}
	}
	return children
}

// Run runs argv inside the node and returns its combined output; the error carries the output too.
func (n *Node) Run(ctx context.Context, argv ...string) ([]byte, error) {
	if len(argv) == 0 {
		return nil, errors.New("nspawn: Run needs a command")
	}
	out, err := n.Command(ctx, argv...).CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("in node %s: %q: %w: %s", n.name, argv, err, bytes.TrimSpace(out))
	}
	return out, nil
}

// Halt shuts the node down the orderly way (SIGTERM to nspawn, which asks the node's systemd to power off), waits
// for it until ctx ends (or 30 s when ctx has no deadline), kills what is left, and then removes everything the node
// had on the host, as Cleanup does. It is safe to call more than once.
func (n *Node) Halt(ctx context.Context) error {
	grace := defaultHaltGrace
	if dl, ok := ctx.Deadline(); ok {
		grace = time.Until(dl)
	}
	tctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), grace+teardownTimeout)
	defer cancel()
	return n.teardown(tctx, grace)
}

// Cleanup removes everything of the node from the host at once (no orderly shutdown): processes, mounts,
// cgroups, nspawn's leftovers in /run/systemd/nspawn and the state directory. Safe to call more than once.
func (n *Node) Cleanup() error {
	ctx, cancel := context.WithTimeout(context.Background(), teardownTimeout)
	defer cancel()
	return n.teardown(ctx, 0)
}

// Load finds a node booted by another process (the lab's `up` command, say) from its state directory, so that it
// can be driven or halted from here.
func Load(stateDir string) (*Node, error) {
	stateDir = filepath.Clean(stateDir)
	st, err := readState(stateDir)
	if err != nil {
		return nil, err
	}
	if st == nil {
		return nil, fmt.Errorf("nspawn: no node in %s", stateDir)
	}
	if !alive(st.PID, st.PIDStart) || st.Leader == 0 {
		return nil, fmt.Errorf("nspawn: the node %s in %s is not running (Cleanup removes its leftovers)", st.Name, stateDir)
	}
	return &Node{name: st.Name, stateDir: stateDir, st: *st}, nil
}

// Cleanup tears down whatever node a state directory holds, running or left behind by a killed process, and
// removes the directory. It does nothing when the directory does not exist. Boot calls it first.
func Cleanup(ctx context.Context, stateDir string) error {
	stateDir = filepath.Clean(stateDir)
	st, err := readState(stateDir)
	if err != nil {
		// Without a readable state the cgroups are unknown; still free the mounts and the directory.
		return errors.Join(err, removeStateDir(stateDir))
	}
	if st == nil {
		return removeStateDir(stateDir)
	}
	n := &Node{name: st.Name, stateDir: stateDir, st: *st}
	tctx, cancel := context.WithTimeout(ctx, teardownTimeout)
	defer cancel()
	return n.teardown(tctx, 0)
}

// teardown stops the node (orderly within grace when grace > 0) and removes every trace of it on the host.
func (n *Node) teardown(ctx context.Context, grace time.Duration) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.done {
		return nil
	}
	st := n.st
	var errs []error
	var slow error // the node had to be killed: worth reporting, but its traces are gone all the same
	if grace > 0 && alive(st.PID, st.PIDStart) {
		_ = unix.Kill(st.PID, unix.SIGTERM)
		if !n.waitExit(ctx, grace) {
			slow = fmt.Errorf("node %s did not power off within %s; killed it", n.name, grace.Round(time.Millisecond))
		}
	}
	// Everything in the node's cgroups: nspawn, the node's systemd and all its services. Killing nspawn alone
	// would leave the node's PID 1 running, adopted by the host's init.
	if err := killCgroups(ctx, st.Cgroups); err != nil {
		errs = append(errs, err)
	}
	// A launcher that died before joining the cgroups is not in them.
	if alive(st.PID, st.PIDStart) {
		_ = unix.Kill(st.PID, unix.SIGKILL)
	}
	n.waitExit(ctx, teardownTimeout)
	if err := removeCgroups(ctx, st.Cgroups); err != nil {
		errs = append(errs, err)
	}
	// nspawn removes these itself on an orderly exit, not when it is killed.
	propagate := "/run/systemd/nspawn/propagate/" + n.name
	if err := unmountAll(propagate); err != nil {
		errs = append(errs, err)
	} else if err := os.RemoveAll(propagate); err != nil {
		errs = append(errs, err)
	}
	if st.LockFile != "" {
		if err := os.Remove(st.LockFile); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	if err := removeStateDir(n.stateDir); err != nil {
		errs = append(errs, err)
	}
	// Only a complete teardown makes a second call a no-op; after a partial one, calling again retries.
	n.done = len(errs) == 0
	return errors.Join(append([]error{slow}, errs...)...)
}

// waitExit waits up to d for the nspawn process to be gone and reports whether it is.
func (n *Node) waitExit(ctx context.Context, d time.Duration) bool {
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		if n.exited != nil {
			select {
			case <-n.exited:
				return true
			default:
			}
		} else if !alive(n.st.PID, n.st.PIDStart) {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-timer.C:
			return false
		case <-n.exited: // nil channel for a loaded node: never ready, the poll below decides
			return true
		case <-time.After(pollInterval):
		}
	}
}

// consoleTail is the end of the node's console log, for error messages.
func (n *Node) consoleTail() string {
	data, err := os.ReadFile(filepath.Join(n.stateDir, consoleLogFile))
	if err != nil {
		return ""
	}
	const max = 4096
	if len(data) > max {
		data = data[len(data)-max:]
	}
	return strings.TrimSpace(string(data))
}
