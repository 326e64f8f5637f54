package nspawn_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	sdbus "github.com/coreos/go-systemd/v22/dbus"
	"golang.org/x/sys/unix"

	"github.com/cnimedic/cnimedic/test/nspawn"
	"github.com/cnimedic/cnimedic/test/nspawn/nspawntest"
	"github.com/cnimedic/cnimedic/test/repo"
)

// helperEnv makes the test binary boot a node and then wait to be killed (TestStaleNodeFromKilledRun): the
// honest way to get a node left behind by a test process that died.
const helperEnv = "CNIMEDIC_NSPAWN_TEST_HELPER_NODE"

func TestMain(m *testing.M) {
	if name := os.Getenv(helperEnv); name != "" {
		os.Exit(bootAndWaitToBeKilled(name))
	}
	os.Exit(m.Run())
}

// bootAndWaitToBeKilled boots two nodes: name, like a lab node (its owner may go), and name-orphan, Ephemeral like
// a test's node, in a state directory no later run uses again.
func bootAndWaitToBeKilled(name string) int {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, opts := range []nspawn.Options{
		{Name: name, StateDir: nspawntest.StateDir(name)},
		{Name: name + "-orphan", StateDir: orphanStateDir(name, os.Getpid()), Ephemeral: true},
	} {
		opts.BaseRoot = nspawntest.BaseRoot()
		if _, err := nspawn.Boot(ctx, opts); err != nil {
			fmt.Println("error:", err)
			return 1
		}
	}
	fmt.Println("ready")
	select {} // until SIGKILL
}

// orphanStateDir is unique per helper process, as t.TempDir would be.
func orphanStateDir(name string, helperPID int) string {
	return filepath.Join(repo.Root(), ".lab", "tmp", "nspawn-orphans", name+"-"+strconv.Itoa(helperPID))
}

// fakeKubelet is what the lab does with the real kubelet: a binary and a unit placed into the node at boot.
const fakeKubeletUnit = `[Unit]
Description=stand-in for kubelet, placed by the test
After=containerd.service

[Service]
ExecStart=/usr/local/bin/kubelet

[Install]
WantedBy=multi-user.target
`

func TestNodeLifecycle(t *testing.T) {
	nspawntest.Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	// Host-side inputs for Files (copied from the host) and Binds.
	inputs := filepath.Join(repo.Root(), ".lab", "tmp", "nspawn-life-inputs")
	if err := os.MkdirAll(inputs, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(inputs) })
	kubeletBin := filepath.Join(inputs, "kubelet")
	if err := os.WriteFile(kubeletBin, []byte("#!/bin/sh\nexec sleep infinity\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(inputs, "marker"), []byte("from the host\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	start := time.Now()
	node := nspawntest.Boot(t, nspawn.Options{
		Name: "nspawn-life",
		Files: []nspawn.File{
			{Path: "/etc/systemd/system/kubelet.service", Data: []byte(fakeKubeletUnit)},
			{Path: "/etc/cnimedic/copied", Source: filepath.Join(inputs, "marker"), Mode: 0o600},
		},
		EnableUnits: []string{"kubelet.service"},
		Binds: []nspawn.Bind{
			// A single binary, read-only, as the lab places bin/k8s/kubelet; the mount point is created.
			{HostPath: kubeletBin, NodePath: "/usr/local/bin/kubelet", ReadOnly: true},
			{HostPath: inputs, NodePath: "/srv/host", ReadOnly: true},
		},
	})
	t.Logf("boot to SystemState=running: %s", time.Since(start).Round(time.Millisecond))

	if state, err := node.SystemState(ctx); err != nil || state != "running" {
		t.Fatalf("SystemState = %q, %v; want running", state, err)
	}

	// Debian's real containerd, driven through go-systemd over the node's own bus.
	conn, err := node.Systemd(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	assertActiveState(t, ctx, conn, "containerd.service", "active")
	assertActiveState(t, ctx, conn, "kubelet.service", "active") // unit from Files, binary bound, enabled by EnableUnits
	mustRun(t, node, "ctr", "version")                           // containerd answers on its socket

	runJob(t, ctx, "stop", conn.StopUnitContext, "containerd.service")
	assertActiveState(t, ctx, conn, "containerd.service", "inactive")
	if out, err := node.Run(ctx, "ctr", "--connect-timeout", "1s", "version"); err == nil {
		t.Fatalf("ctr version succeeded with containerd stopped:\n%s", out)
	}
	runJob(t, ctx, "start", conn.StartUnitContext, "containerd.service")
	assertActiveState(t, ctx, conn, "containerd.service", "active")
	mustRun(t, node, "ctr", "version")

	// Commands run inside: hostname from the machine name, the read-only bind, files written from the host.
	if got := strings.TrimSpace(mustRun(t, node, "hostname")); got != "nspawn-life" {
		t.Errorf("hostname inside = %q, want nspawn-life", got)
	}
	if got := mustRun(t, node, "cat", "/srv/host/marker"); got != "from the host\n" {
		t.Errorf("bound file reads %q", got)
	}
	if _, err := node.Run(ctx, "touch", "/srv/host/written-from-node"); err == nil {
		t.Error("a read-only bind was writable from the node")
	}
	if got := mustRun(t, node, "stat", "-c", "%a %s", "/etc/cnimedic/copied"); strings.TrimSpace(got) != "600 14" {
		t.Errorf("mode and size of a file copied in = %s, want 600 14", got)
	}
	if err := os.WriteFile(filepath.Join(node.RootDir(), "etc", "probe"), []byte("injected\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := mustRun(t, node, "cat", "/etc/probe"); got != "injected\n" {
		t.Errorf("file written through RootDir reads %q inside", got)
	}
	if _, err := os.Stat(filepath.Join(nspawntest.BaseRoot(), "etc", "probe")); err == nil {
		t.Error("writing into the node changed the shared base root filesystem")
	}

	// A cancelled command dies inside the node too, not only the nsenter that started it.
	shortCtx, cancelShort := context.WithTimeout(ctx, 300*time.Millisecond)
	_, err = node.Run(shortCtx, "sleep", "31")
	cancelShort()
	if err == nil {
		t.Fatal("Run of sleep 31 under a 300 ms context succeeded")
	}
	if out, err := node.Run(ctx, "pgrep", "-f", "sleep 31"); err == nil {
		t.Errorf("cancelled command still runs in the node: %s", out)
	}

	// A command killed from the host (CommandPID: the command, not nsenter) is gone from the node, and nsenter
	// reports it.
	sleeper := node.Command(ctx, "sleep", "32")
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	pid, err := nspawn.CommandPID(ctx, sleeper)
	if err != nil {
		t.Fatal(err)
	}
	if cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); string(cmdline) != "sleep\x0032\x00" {
		t.Fatalf("CommandPID = %d, which runs %q", pid, cmdline)
	}
	_ = syscall.Kill(pid, syscall.SIGKILL)
	if err := sleeper.Wait(); err == nil {
		t.Error("nsenter exited 0 after its command was killed")
	}
	if out, err := node.Run(ctx, "pgrep", "-f", "sleep 32"); err == nil {
		t.Errorf("killed command still runs in the node: %s", out)
	}

	// containerd and kubelet must be able to create cgroups: every v1 controller writable inside.
	for line := range strings.SplitSeq(strings.TrimSpace(mustRun(t, node, "findmnt", "-rn", "-t", "cgroup", "-o", "TARGET,OPTIONS")), "\n") {
		if !strings.Contains(" "+line, " rw,") {
			t.Errorf("cgroup controller not writable inside the node: %s", line)
		}
	}
	assertRuncRunsContainer(t, node)

	// The node's systemd sits in the node's own cgroup in every v1 controller, so its kubelet gets a kubepods tree
	// of its own.
	assertOwnCgroups(t, node)

	tr := capture(t, node)
	start = time.Now()
	if err := node.Halt(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("halt and cleanup: %s", time.Since(start).Round(time.Millisecond))
	assertGone(t, tr)
	if err := node.Halt(ctx); err != nil {
		t.Errorf("second Halt: %v", err)
	}
	if err := node.Cleanup(); err != nil {
		t.Errorf("Cleanup after Halt: %v", err)
	}
}

func TestTwoNodesOnBridge(t *testing.T) {
	nspawntest.Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	const bridge = "cnmtest0"
	hostAddr := netip.MustParsePrefix("10.213.77.1/24")
	if err := nspawn.EnsureBridge(ctx, bridge, hostAddr); err != nil {
		t.Fatal(err)
	}
	if err := nspawn.EnsureBridge(ctx, bridge, hostAddr); err != nil { // idempotent
		t.Fatalf("second EnsureBridge: %v", err)
	}
	t.Cleanup(func() {
		if err := nspawn.DeleteBridge(context.Background(), bridge); err != nil {
			t.Error(err)
		}
	})

	names := []string{"nspawn-two-a", "nspawn-two-b"}
	addrs := []netip.Prefix{netip.MustParsePrefix("10.213.77.11/24"), netip.MustParsePrefix("10.213.77.12/24")}
	nodes := make([]*nspawn.Node, len(names))
	errs := make([]error, len(names))
	var wg sync.WaitGroup
	start := time.Now()
	for i := range names {
		wg.Go(func() {
			nodes[i], errs[i] = nspawn.Boot(ctx, nspawn.Options{
				Name: names[i], BaseRoot: nspawntest.BaseRoot(), StateDir: nspawntest.StateDir(names[i]),
				Network: &nspawn.Network{Bridge: bridge, Address: addrs[i], Gateway: hostAddr.Addr()},
			})
		})
	}
	wg.Wait()
	for i, n := range nodes {
		if n != nil {
			t.Cleanup(func() { _ = n.Halt(context.Background()) })
		}
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
	}
	t.Logf("two nodes booted at once, addresses up: %s", time.Since(start).Round(time.Millisecond))

	// Each node reaches the host on the bridge, from its own address.
	ln, err := net.Listen("tcp", net.JoinHostPort(hostAddr.Addr().String(), "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	seen := make(chan string, len(nodes))
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			line, _ := bufio.NewReader(c).ReadString('\n')
			seen <- strings.TrimSpace(line) + " from " + c.RemoteAddr().(*net.TCPAddr).IP.String()
			c.Close()
		}
	}()
	for i, n := range nodes {
		if got := strings.TrimSpace(mustRun(t, n, "hostname")); got != names[i] {
			t.Errorf("hostname = %q, want %q", got, names[i])
		}
		// bash's /dev/tcp: the node has no netcat. The script is constant; the values are its arguments.
		mustRun(t, n, "bash", "-c", `echo "$1" >"/dev/tcp/$2/$3"`, "probe", names[i], hostAddr.Addr().String(), port)
		select {
		case got := <-seen:
			if want := names[i] + " from " + addrs[i].Addr().String(); got != want {
				t.Errorf("host received %q, want %q", got, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("host received nothing from %s", names[i])
		}
	}

	if nodes[0].Leader() == nodes[1].Leader() || slices.Equal(nodes[0].Cgroups(), nodes[1].Cgroups()) {
		t.Errorf("two nodes share a leader or cgroups: %d %v / %d %v",
			nodes[0].Leader(), nodes[0].Cgroups(), nodes[1].Leader(), nodes[1].Cgroups())
	}
	for _, n := range nodes {
		assertOwnCgroups(t, n)
		usage, rss := memoryUse(t, n)
		t.Logf("memory of node %s: %d MiB charged (%d MiB RSS)", n.Name(), usage>>20, rss>>20)
	}

	traces := []traces{capture(t, nodes[0]), capture(t, nodes[1])}
	var halt sync.WaitGroup
	for i, n := range nodes {
		halt.Go(func() { errs[i] = n.Halt(ctx) })
	}
	halt.Wait()
	for i := range nodes {
		if errs[i] != nil {
			t.Error(errs[i])
		}
		assertGone(t, traces[i])
		if _, err := net.InterfaceByName("vb-" + names[i]); err == nil {
			t.Errorf("host side veth of %s left behind", names[i])
		}
	}
}

// TestStaleNodeFromKilledRun kills a process that booted nodes (as a test run dies under `go test -timeout` or
// ^C), then checks that its Ephemeral node is reaped, that its other node can be driven from another process, and
// that booting that node again tears the stale one down instead of failing.
func TestStaleNodeFromKilledRun(t *testing.T) {
	nspawntest.Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	const name = "nspawn-stale"
	dir := nspawntest.StateDir(name)

	helper := exec.Command(os.Args[0], "-test.run=^$")
	helper.Env = append(os.Environ(), helperEnv+"="+name)
	out, err := helper.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	helper.Stderr = os.Stderr
	if err := helper.Start(); err != nil {
		t.Fatal(err)
	}
	line, _ := bufio.NewReader(out).ReadString('\n')
	if strings.TrimSpace(line) != "ready" {
		_ = helper.Process.Kill()
		_ = helper.Wait()
		t.Fatalf("helper process did not boot its node: %q", line)
	}
	_ = helper.Process.Signal(syscall.SIGKILL)
	_ = helper.Wait()
	go io.Copy(io.Discard, out)

	t.Cleanup(func() { os.Remove(filepath.Dir(orphanStateDir(name, helper.Process.Pid))) })

	// The Ephemeral node goes with its owner; the other one stays.
	orphan, err := nspawn.Load(orphanStateDir(name, helper.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	orphanTraces := capture(t, orphan)
	reaped, err := nspawn.ReapOrphans(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(reaped, name+"-orphan") || slices.Contains(reaped, name) {
		t.Errorf("ReapOrphans tore down %v; want %s-orphan and not %s", reaped, name, name)
	}
	assertGone(t, orphanTraces)

	// The orphaned node still runs and can be driven from here.
	stale, err := nspawn.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = stale.Cleanup() })
	if state, err := stale.SystemState(ctx); err != nil || state != "running" {
		t.Fatalf("orphaned node: SystemState = %q, %v", state, err)
	}
	staleTraces := capture(t, stale)

	// A new run boots the same node: the orphan is torn down first, completely.
	fresh := nspawntest.Boot(t, nspawn.Options{Name: name})
	if fresh.Leader() == staleTraces.leader {
		t.Fatal("Boot returned the stale node")
	}
	assertProcessesGone(t, staleTraces)
	if _, err := nspawn.Load(dir); err != nil {
		t.Errorf("Load of the fresh node: %v", err)
	}

	// Cleanup (no orderly shutdown) leaves nothing either, and is idempotent.
	freshTraces := capture(t, fresh)
	if err := fresh.Cleanup(); err != nil {
		t.Fatal(err)
	}
	assertGone(t, freshTraces)
	if err := nspawn.Cleanup(ctx, dir); err != nil {
		t.Errorf("Cleanup of an already clean state dir: %v", err)
	}
	if _, err := nspawn.Load(dir); err == nil {
		t.Error("Load found a node after Cleanup")
	}
}

// TestDegradedBootFails checks that a node whose boot ends with a failed unit is refused with the unit named, and
// leaves nothing behind; AllowDegraded accepts the same node.
func TestDegradedBootFails(t *testing.T) {
	nspawntest.Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const name = "nspawn-degraded"
	opts := nspawn.Options{
		Name: name, BaseRoot: nspawntest.BaseRoot(), StateDir: nspawntest.StateDir(name), Ephemeral: true,
		Files: []nspawn.File{{Path: "/etc/systemd/system/broken.service",
			Data: []byte("[Service]\nType=oneshot\nExecStart=/bin/false\n[Install]\nWantedBy=multi-user.target\n")}},
		EnableUnits: []string{"broken.service"},
	}
	_, err := nspawn.Boot(ctx, opts)
	if err == nil || !strings.Contains(err.Error(), "failed units: broken.service") {
		t.Fatalf("Boot of a node with a failing unit: %v; want an error naming broken.service", err)
	}
	if _, err := os.Stat(opts.StateDir); err == nil {
		t.Errorf("a failed Boot left %s behind", opts.StateDir)
	}
	for _, hierarchy := range []string{"pids", "systemd", "unified"} {
		if _, err := os.Stat(filepath.Join("/sys/fs/cgroup", hierarchy, "cnimedic-nspawn-"+name)); err == nil {
			t.Errorf("a failed Boot left its %s cgroup behind", hierarchy)
		}
	}

	opts.AllowDegraded = true
	node, err := nspawn.Boot(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	if state, err := node.SystemState(ctx); err != nil || state != "degraded" {
		t.Errorf("SystemState = %q, %v; want degraded", state, err)
	}
	if err := node.Halt(ctx); err != nil {
		t.Fatal(err)
	}
}

func mustRun(t *testing.T, n *nspawn.Node, argv ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := n.Run(ctx, argv...)
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

type jobFunc func(ctx context.Context, name, mode string, ch chan<- string) (int, error)

func runJob(t *testing.T, ctx context.Context, verb string, job jobFunc, unit string) {
	t.Helper()
	done := make(chan string, 1)
	start := time.Now()
	if _, err := job(ctx, unit, "replace", done); err != nil {
		t.Fatalf("%s %s: %v", verb, unit, err)
	}
	select {
	case result := <-done:
		if result != "done" {
			t.Fatalf("%s %s: job result %q", verb, unit, result)
		}
		t.Logf("%s %s: %s", verb, unit, time.Since(start).Round(time.Millisecond))
	case <-ctx.Done():
		t.Fatalf("%s %s: %v", verb, unit, ctx.Err())
	}
}

func assertActiveState(t *testing.T, ctx context.Context, conn *sdbus.Conn, unit, want string) {
	t.Helper()
	prop, err := conn.GetUnitPropertyContext(ctx, unit, "ActiveState")
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := prop.Value.Value().(string); got != want {
		t.Fatalf("%s ActiveState = %q, want %q", unit, got, want)
	}
}

// assertOwnCgroups checks that the node's PID 1 is in the node's own cgroup in every v1 hierarchy.
func assertOwnCgroups(t *testing.T, n *nspawn.Node) {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", n.Leader()))
	if err != nil {
		t.Fatal(err)
	}
	own := "/cnimedic-nspawn-" + n.Name()
	for line := range strings.SplitSeq(strings.TrimSpace(string(data)), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if parts[1] == "" || parts[1] == "name=systemd" {
			continue // nspawn and the node's systemd make subgroups (payload/...) in these two
		}
		if !strings.HasSuffix(parts[2], own) {
			t.Errorf("node %s's PID 1 is in %s in hierarchy %s, not in its own cgroup", n.Name(), parts[2], parts[1])
		}
	}
}

func memoryUse(t *testing.T, n *nspawn.Node) (usage, rss uint64) {
	t.Helper()
	for _, cg := range n.Cgroups() {
		if !strings.Contains(cg, "/memory/") {
			continue
		}
		data, err := os.ReadFile(filepath.Join(cg, "memory.usage_in_bytes"))
		if err != nil {
			t.Fatal(err)
		}
		usage, _ = strconv.ParseUint(strings.TrimSpace(string(data)), 10, 64)
		stat, err := os.ReadFile(filepath.Join(cg, "memory.stat"))
		if err != nil {
			t.Fatal(err)
		}
		for line := range strings.SplitSeq(string(stat), "\n") {
			if v, ok := strings.CutPrefix(line, "total_rss "); ok {
				rss, _ = strconv.ParseUint(v, 10, 64)
			}
		}
		return usage, rss
	}
	t.Fatalf("node %s has no memory cgroup among %v", n.Name(), n.Cgroups())
	return 0, 0
}

// traces are what a node leaves on the host while it runs, each of which must be gone after Halt or Cleanup.
type traces struct {
	name, stateDir string
	cgroups        []string
	nspawnPID      int
	leader         int
	pidNS          string // the node's PID namespace: no process may be left in it
	lockFile       string // nspawn's image lock in /run/systemd/nspawn/locks
}

func capture(t *testing.T, n *nspawn.Node) traces {
	t.Helper()
	ns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", n.Leader()))
	if err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Stat(n.RootDir(), &st); err != nil {
		t.Fatal(err)
	}
	tr := traces{name: n.Name(), stateDir: n.StateDir(), cgroups: n.Cgroups(), nspawnPID: n.PID(), leader: n.Leader(),
		pidNS: ns, lockFile: fmt.Sprintf("/run/systemd/nspawn/locks/inode-%d:%d", st.Dev, st.Ino)}
	for _, cg := range tr.cgroups {
		if _, err := os.Stat(cg); err != nil {
			t.Fatalf("node's cgroup %s does not exist while it runs: %v", cg, err)
		}
	}
	if _, err := os.Stat(tr.lockFile); err != nil {
		t.Fatalf("nspawn's lock is not where expected while the node runs: %v", err)
	}
	return tr
}

func assertGone(t *testing.T, tr traces) {
	t.Helper()
	assertProcessesGone(t, tr)
	for _, cg := range tr.cgroups {
		if _, err := os.Stat(cg); err == nil {
			t.Errorf("cgroup left behind: %s", cg)
		}
	}
	mountinfo, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(mountinfo), " "+tr.stateDir) {
		t.Errorf("mounts left under %s", tr.stateDir)
	}
	for _, path := range []string{tr.stateDir, "/run/systemd/nspawn/propagate/" + tr.name, tr.lockFile} {
		if _, err := os.Lstat(path); err == nil {
			t.Errorf("left behind: %s", path)
		}
	}
}

func assertProcessesGone(t *testing.T, tr traces) {
	t.Helper()
	for _, pid := range []int{tr.nspawnPID, tr.leader} {
		if cmd, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); err == nil &&
			(strings.Contains(string(cmd), "systemd") || strings.Contains(string(cmd), "cnimedic-nspawn")) {
			t.Errorf("process %d of node %s still runs: %q", pid, tr.name, cmd)
		}
	}
	procs, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range procs {
		if _, err := strconv.Atoi(p.Name()); err != nil {
			continue
		}
		// A zombie is dead: it waits for the host's init, which adopted it when its parent was killed, to reap it.
		if ns, err := os.Readlink(filepath.Join("/proc", p.Name(), "ns", "pid")); err == nil && ns == tr.pidNS && !zombie(p.Name()) {
			cmd, _ := os.ReadFile(filepath.Join("/proc", p.Name(), "cmdline"))
			t.Errorf("process %s (%q) still in node %s's PID namespace", p.Name(), cmd, tr.name)
		}
	}
}

func zombie(pid string) bool {
	stat, err := os.ReadFile(filepath.Join("/proc", pid, "stat"))
	if err != nil {
		return true // gone meanwhile
	}
	fields := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
	return len(fields) > 0 && (fields[0] == "Z" || fields[0] == "X")
}

// assertRuncRunsContainer runs a real container with the node's runc: what containerd does for every pod. It proves
// the node's capabilities, system call filter and writable cgroups are enough for the lab's kubelet. The container's
// root is a skeleton with the node's /usr bound read-only, so no image is needed.
func assertRuncRunsContainer(t *testing.T, n *nspawn.Node) {
	t.Helper()
	const bundle = "/var/lib/cnimedic-runc-probe" // on the overlay root, so visible from the host
	mustRun(t, n, "mkdir", "-p", bundle+"/rootfs/usr", bundle+"/rootfs/proc", bundle+"/rootfs/dev", bundle+"/rootfs/sys")
	for _, dir := range []string{"bin", "sbin", "lib", "lib64"} {
		mustRun(t, n, "ln", "-sfn", "usr/"+dir, bundle+"/rootfs/"+dir)
	}
	mustRun(t, n, "runc", "spec", "--bundle", bundle)
	// Edit the generated spec from the host, through the node's root.
	path := filepath.Join(n.RootDir(), bundle, "config.json")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("runc spec wrote no config.json : %v", err)
	}
	var spec map[string]any
	if err := json.Unmarshal(data, &spec); err != nil {
		t.Fatal(err)
	}
	process := spec["process"].(map[string]any)
	process["terminal"] = false
	process["args"] = []string{"cat", "/proc/self/cgroup"}
	spec["mounts"] = append(spec["mounts"].([]any), map[string]any{
		"destination": "/usr", "type": "bind", "source": "/usr", "options": []string{"rbind", "ro"},
	})
	linux := spec["linux"].(map[string]any)
	linux["cgroupsPath"] = "/cnimedic-runc-probe"
	if data, err = json.Marshal(spec); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	out := mustRun(t, n, "runc", "run", "--bundle", bundle, "probe")
	if !strings.Contains(out, ":memory:/cnimedic-runc-probe") {
		t.Errorf("container's cgroups are not where runc was told to put them:\n%s", out)
	}
}
