package units

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/cnimedic/cnimedic/test/labtest"
	"github.com/cnimedic/cnimedic/test/nspawn"
	"github.com/cnimedic/cnimedic/test/sysnode"
)

func TestMain(m *testing.M) { labtest.Main(m) }

const (
	crasher = "crasher.service"
	quitter = "quitter.service"
	flapper = "flapper.service"
)

// Units that misbehave the way a kubelet or containerd with a bad config does.
var badUnits = []nspawn.File{
	// Its binary is missing: the start job itself fails.
	{Path: "/etc/systemd/system/" + crasher, Data: []byte("[Service]\nType=exec\nExecStart=/nonexistent/kubelet\n")},
	// Starts (the job is done once it runs) and exits with an error at once.
	{Path: "/etc/systemd/system/" + quitter, Data: []byte("[Service]\nType=exec\nExecStart=/bin/false\n")},
	// Comes up, then dies after half a second and is restarted by systemd: the job says "done", the unit does not
	// stay up.
	{Path: "/etc/systemd/system/" + flapper, Data: []byte("[Service]\nExecStart=/bin/sh -c 'sleep 0.5; exit 1'\nRestart=always\nRestartSec=200ms\n")},
}

func TestRunbookOrderOnRealSystemd(t *testing.T) {
	node := sysnode.Boot(t, "units-runbook", badUnits...)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// The node's system bus, as the executor pod reaches the host's. (systemd's private socket refuses peers from
	// outside the node; the host-side run, which runs inside, uses it: see remediator/hostrun.)
	for _, bus := range []struct{ name, addr string }{
		{"system-bus", node.BusAddress()},
	} {
		t.Run(bus.name, func(t *testing.T) {
			m, err := Connect(ctx, bus.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			m.Settle = time.Second
			for _, u := range []string{sysnode.Kubelet, sysnode.Containerd} {
				s, err := m.State(ctx, u)
				if err != nil || s.ActiveState != Active || s.MainPID == 0 || s.InvocationID == "" {
					t.Fatalf("%s before: %+v %v", u, s, err)
				}
			}
			var took []string
			step := func(op func(context.Context, string) (Transition, error), unit string, wantActive string) {
				t.Helper()
				tr, err := op(ctx, unit)
				if err != nil {
					t.Fatalf("%v", err)
				}
				if tr.Job != "done" || tr.After.ActiveState != wantActive {
					t.Fatalf("%s: %+v", unit, tr)
				}
				s, _ := m.State(ctx, unit)
				if s.ActiveState != wantActive {
					t.Fatalf("%s is %s after the transition, want %s", unit, s, wantActive)
				}
				took = append(took, tr.Op+" "+unit+" "+tr.Took.Round(time.Millisecond).String())
			}
			step(m.Stop, sysnode.Kubelet, Inactive)
			step(m.Stop, sysnode.Containerd, Inactive)
			step(m.Start, sysnode.Containerd, Active)
			step(m.Start, sysnode.Kubelet, Active)
			step(m.Restart, sysnode.Containerd, Active)
			t.Logf("latencies over %s: %s", bus.name, strings.Join(took, ", "))

			// Idempotent: no job when the unit already is as asked.
			if tr, err := m.Start(ctx, sysnode.Kubelet); err != nil || tr.Changed() {
				t.Fatalf("start of an active unit: %+v %v", tr, err)
			}
			if _, err := m.Stop(ctx, sysnode.Kubelet); err != nil {
				t.Fatal(err)
			}
			if tr, err := m.Stop(ctx, sysnode.Kubelet); err != nil || tr.Changed() {
				t.Fatalf("stop of a stopped unit: %+v %v", tr, err)
			}
			if _, err := m.Start(ctx, sysnode.Kubelet); err != nil {
				t.Fatal(err)
			}

			// More restarts than systemd's default start limit (5 in 10 s) allows: a remediation, its rollback and
			// the guard's recovery can restart the same unit that often, and must not be refused.
			m.Settle = 0
			for i := range 8 {
				if _, err := m.Stop(ctx, sysnode.Containerd); err != nil {
					t.Fatalf("stop %d: %v", i, err)
				}
				if _, err := m.Start(ctx, sysnode.Containerd); err != nil {
					t.Fatalf("start %d: %v", i, err)
				}
			}
		})
	}
}

func TestFailuresAreReportedNotHidden(t *testing.T) {
	node := sysnode.Boot(t, "units-failures", badUnits...)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	m, err := Connect(ctx, node.BusAddress())
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	m.Settle = 2 * time.Second

	if _, err := m.Start(ctx, crasher); err == nil || !strings.Contains(err.Error(), "job failed") {
		t.Fatalf("a unit whose start fails: %v", err)
	}
	if _, err := m.Start(ctx, quitter); err == nil || !strings.Contains(err.Error(), "result exit-code") {
		t.Fatalf("a unit that exits at once: %v", err)
	}
	tr, err := m.Start(ctx, flapper)
	if err == nil || !strings.Contains(err.Error(), "did not stay up") {
		t.Fatalf("a unit that dies after its start job: %+v %v", tr, err)
	}
	t.Logf("flapper: %v", err)
	// A failed unit starts again once fixed: its failed state is reset first (here it still fails, but with the
	// start job, not a refusal).
	if _, err := m.Start(ctx, crasher); err == nil || strings.Contains(err.Error(), "start-limit") {
		t.Fatalf("second start of a failed unit: %v", err)
	}
	if _, err := m.Stop(ctx, "no-such.service"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("stop of a missing unit: %v", err)
	}
	if _, err := m.Start(ctx, "no-such.service"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("start of a missing unit: %v", err)
	}
}

func TestConnectFailsFast(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := Connect(ctx, "unix:path="+t.TempDir()+"/nothing"); err == nil {
		t.Fatal("connected to nothing")
	}
}
