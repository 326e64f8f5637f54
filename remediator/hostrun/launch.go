package hostrun

import (
	"context"
	"fmt"
	"io"
	"os"
	"time"

	sd "github.com/coreos/go-systemd/v22/dbus"
	"github.com/godbus/dbus/v5"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
	"github.com/cnimedic/cnimedic/remediator/executor"
	"github.com/cnimedic/cnimedic/remediator/host"
	"github.com/cnimedic/cnimedic/remediator/journal"
	"github.com/cnimedic/cnimedic/remediator/units"
)

// Names of the hidden subcommands the transient units run. cmd/remediator registers them.
const (
	CmdHostRun      = "host-run"
	CmdHostRollback = "host-rollback"
	CmdHostRecover  = "host-recover"
)

// RunUnit is the transient service that runs a remediation on the host.
func RunUnit(id string) string { return "cnimedic-run-" + id + ".service" }

// RollbackUnit is the transient service that rolls a finished remediation back on the host.
func RollbackUnit(id string) string { return "cnimedic-rollback-" + id + ".service" }

// GuardTimer is the transient timer that recovers the node if the run and its ExecStopPost both died.
func GuardTimer(id string) string { return "cnimedic-guard-" + id + ".timer" }

// GuardService is the service GuardTimer starts.
func GuardService(id string) string { return "cnimedic-guard-" + id + ".service" }

// Defaults of the Launcher's timings.
const (
	DefaultRunMax     = 10 * time.Minute
	DefaultStopWindow = 5 * time.Minute
	DefaultGuardSlack = time.Minute
	DefaultPoll       = 200 * time.Millisecond
)

// Launcher is the executor pod's side: it stages, launches and follows the host-side run.
type Launcher struct {
	// Root is where the host's files are visible to this process (the pod's host mount).
	Root host.Root
	// StateDir is the host directory of the remediator's state (DefaultStateDir when empty).
	StateDir string
	// Bus is the D-Bus address of the host's systemd as seen from this process.
	Bus string
	// Executable is the local path of the remediator binary to place on the host (os.Executable() when empty).
	Executable string
	// ExpectSHA256, when set, is the sha256 the executable must have.
	ExpectSHA256 string
	// BundleDir is the local plugin bundle to place on the host ("" for none).
	BundleDir string
	// Config is handed to the host-side run (its BundleDir is replaced by the staged copy's).
	Config Config
	// RunMax bounds the run (systemd's RuntimeMaxSec); StopWindow bounds its shutdown and its ExecStopPost
	// recovery (TimeoutStopSec). The guard fires after RunMax + StopWindow + GuardSlack.
	RunMax, StopWindow, GuardSlack time.Duration
	// Poll is how often the run is checked.
	Poll time.Duration
	// Log gets one line per journal record as the run progresses (nil: nothing).
	Log io.Writer
}

func (l *Launcher) stateDir() string {
	if l.StateDir == "" {
		return DefaultStateDir
	}
	return l.StateDir
}

// criticalUnits are the node's kubelet and runtime units the run is configured with: the only units its plan may
// stop and start (executor.Validate).
func (l *Launcher) criticalUnits() []string {
	if l.Config.CriticalUnits == nil {
		return executor.DefaultCriticalUnits
	}
	return l.Config.CriticalUnits
}

func orDefault(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

// Apply runs the plan on the host under the remediation id and returns its result. A run of the same id that is
// still going is followed, a finished one reports its stored result; neither starts anything new. Errors before
// the launch leave the node untouched (Outcome Failed, saying so).
func (l *Launcher) Apply(ctx context.Context, id string, plan v1alpha1.Plan) v1alpha1.ExecutorResult {
	if err := executor.Validate(plan, l.criticalUnits()); err != nil {
		return nothingChanged(id, err)
	}
	return l.drive(ctx, id, hostJob{
		unit:   RunUnit(id),
		cmd:    CmdHostRun,
		what:   "stop, repair, start",
		result: journal.ReadResult,
		prepare: func(bin string) error {
			if err := journal.PutPlan(l.Root, JournalBase(l.stateDir()), id, plan); err != nil {
				return err
			}
			cfg := l.Config
			if l.BundleDir != "" {
				var err error
				if cfg.BundleDir, err = StageBundle(l.Root, l.stateDir(), l.BundleDir); err != nil {
					return err
				}
			}
			return writeConfig(l.Root, l.stateDir(), id, cfg)
		},
	})
}

// Rollback undoes a finished remediation on the host (the manager's verification did not accept the repair):
// the units the plan stopped are stopped again, every backup restored, the units started, as a transient unit
// like the run itself. Asking again reports the stored result.
func (l *Launcher) Rollback(ctx context.Context, id string) v1alpha1.ExecutorResult {
	if err := journal.ValidID(id); err != nil {
		return nothingChanged(id, err)
	}
	if !journal.HasPlan(l.Root, JournalBase(l.stateDir()), id) {
		return nothingChanged(id, fmt.Errorf("remediation %s never ran on this node (no journal under %s)", id,
			journal.Dir("", JournalBase(l.stateDir()), id)))
	}
	return l.drive(ctx, id, hostJob{
		unit:   RollbackUnit(id),
		cmd:    CmdHostRollback,
		what:   "roll back",
		result: journal.ReadUndo,
		// The settings are those of the run, already in the journal directory.
		prepare: func(string) error { return nil },
		// The run itself must be over first: rolling back under it would race it.
		waitFor: []string{RunUnit(id)},
	})
}

func nothingChanged(id string, err error) v1alpha1.ExecutorResult {
	return v1alpha1.ExecutorResult{RemediationID: id, Outcome: v1alpha1.OutcomeFailed, Message: "nothing was changed on the node: " + err.Error()}
}

// hostJob is one kind of host-side run: its unit, its hidden subcommand and where its result appears.
type hostJob struct {
	unit, cmd, what string
	result          func(root host.Root, base, id string) (*v1alpha1.ExecutorResult, error)
	// prepare writes what the run reads from the journal directory, once the binary is staged.
	prepare func(bin string) error
	// waitFor lists units that must be over before this job starts.
	waitFor []string
}

// drive reports a stored result, follows a job that is going, waits for whatever must end first, or launches the
// job and follows it.
func (l *Launcher) drive(ctx context.Context, id string, job hostJob) v1alpha1.ExecutorResult {
	if err := journal.ValidID(id); err != nil {
		return nothingChanged(id, err)
	}
	base := JournalBase(l.stateDir())
	read := func() *v1alpha1.ExecutorResult {
		r, err := job.result(l.Root, base, id)
		if err != nil {
			return nil
		}
		return r
	}
	if r := read(); r != nil {
		return *r
	}
	mgr, err := units.Connect(ctx, l.Bus)
	if err != nil {
		return nothingChanged(id, err)
	}
	defer mgr.Close()

	for {
		if r := read(); r != nil {
			return *r
		}
		st, err := mgr.State(ctx, job.unit)
		if err != nil {
			return nothingChanged(id, err)
		}
		if busy(st) {
			// This job is going (or recovering in its ExecStopPost): follow it, never start another.
			return l.follow(ctx, mgr, id, job.unit, read)
		}
		// The guard recovering an earlier attempt must not be stopped half-way through its rollback; the run
		// must be over before a rollback of it starts.
		waiting := ""
		for _, u := range append([]string{GuardService(id)}, job.waitFor...) {
			s, err := mgr.State(ctx, u)
			if err != nil {
				return nothingChanged(id, err)
			}
			if busy(s) {
				waiting = u
			}
		}
		if waiting != "" {
			if err := sleepCtx(ctx, orDefault(l.Poll, DefaultPoll)); err != nil {
				return nothingChanged(id, fmt.Errorf("waiting for %s to finish: %w", waiting, err))
			}
			continue
		}
		if err := l.launch(ctx, mgr, id, job); err != nil {
			// The unit may still have started (the error came later): follow it if so.
			if s, e := mgr.State(ctx, job.unit); e != nil || !busy(s) {
				if r := read(); r != nil {
					return *r
				}
				return nothingChanged(id, err)
			}
		}
		return l.follow(ctx, mgr, id, job.unit, read)
	}
}

// busy reports whether a unit is loaded and not stopped: running, starting, or stopping (ExecStopPost included).
func busy(s units.State) bool { return s.LoadState != "not-found" && !s.Stopped() }

func sleepCtx(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}

func (l *Launcher) launch(ctx context.Context, mgr *units.Manager, id string, job hostJob) error {
	exe := l.Executable
	if exe == "" {
		var err error
		if exe, err = os.Executable(); err != nil {
			return err
		}
	}
	bin, err := StageBinary(l.Root, l.stateDir(), exe, l.ExpectSHA256)
	if err != nil {
		return err
	}
	if err := job.prepare(bin); err != nil {
		return err
	}
	cfg, err := ReadConfig(l.Root, l.stateDir(), id)
	if err != nil {
		return err
	}
	critical := cfg.CriticalUnits
	if critical == nil {
		critical = executor.DefaultCriticalUnits
	}
	runMax := orDefault(l.RunMax, DefaultRunMax)
	stopWindow := orDefault(l.StopWindow, DefaultStopWindow)
	guardAfter := runMax + stopWindow + orDefault(l.GuardSlack, DefaultGuardSlack)
	args := []string{"--state-dir", l.stateDir(), "--remediation-id", id}

	// Leftovers of an earlier attempt with this id would make StartTransientUnit fail with "already exists": a
	// failed unit not yet collected, or a guard timer still waiting (drive never gets here while a run, a rollback
	// or the guard's service is busy, so nothing that works is stopped).
	_ = mgr.StopIfLoaded(ctx, GuardTimer(id))
	for _, u := range []string{job.unit, GuardTimer(id), GuardService(id)} {
		_ = mgr.Conn().ResetFailedUnitContext(ctx, u)
	}

	// The guard first: from the moment the run can stop anything, something is there to start it again.
	guardProps := []sd.Property{
		sd.PropDescription("cnimedic: recover the node if remediation " + id + " dies"),
		{Name: "TimersMonotonic", Value: dbus.MakeVariant([]timerSpec{{Base: "OnActiveSec", USec: usec(guardAfter)}})},
		{Name: "AccuracyUSec", Value: dbus.MakeVariant(usec(time.Second))},
		{Name: "RemainAfterElapse", Value: dbus.MakeVariant(false)},
	}
	guardSvc := []sd.Property{
		sd.PropDescription("cnimedic: recover the node after remediation " + id),
		sd.PropType("oneshot"),
		execProp("ExecStart", append([]string{bin, CmdHostRecover, "--reason", "the guard timer fired"}, args...)),
		// systemd itself starts the units, even if the binary cannot run; the recovery runs after them.
		sd.PropWants(critical...),
		sd.PropAfter(critical...),
		{Name: "TimeoutStartUSec", Value: dbus.MakeVariant(usec(stopWindow))},
		{Name: "CollectMode", Value: dbus.MakeVariant("inactive-or-failed")},
	}
	if _, err := mgr.StartTransient(ctx, GuardTimer(id), guardProps, []sd.PropertyCollection{{Name: GuardService(id), Properties: guardSvc}}); err != nil {
		return fmt.Errorf("arm the guard timer: %w", err)
	}

	runProps := []sd.Property{
		sd.PropDescription("cnimedic: remediation " + id + " (" + job.what + ")"),
		// exec: the start job ends once the binary is running, so a missing or broken binary fails the start.
		sd.PropType("exec"),
		execProp("ExecStart", append([]string{bin, job.cmd}, args...)),
		// Runs however the main process ended, SIGKILL included: rolls back what is unfinished, starts the units.
		execProp("ExecStopPost", append([]string{bin, CmdHostRecover}, args...)),
		{Name: "RuntimeMaxUSec", Value: dbus.MakeVariant(usec(runMax))},
		{Name: "TimeoutStopUSec", Value: dbus.MakeVariant(usec(stopWindow))},
		{Name: "CollectMode", Value: dbus.MakeVariant("inactive-or-failed")},
	}
	if _, err := mgr.StartTransient(ctx, job.unit, runProps, nil); err != nil {
		_ = mgr.StopIfLoaded(ctx, GuardTimer(id))
		return err
	}
	return nil
}

// timerSpec is one element of a timer's TimersMonotonic property, D-Bus signature (st).
type timerSpec struct {
	Base string
	USec uint64
}

// execCommand is one element of a service's Exec* property, D-Bus signature (sasb). The bool is systemd's
// "ignore failure" flag (go-systemd's PropExecStart calls it uncleanIsFailure): false keeps failures failures.
type execCommand struct {
	Path          string
	Argv          []string
	IgnoreFailure bool
}

func execProp(name string, argv []string) sd.Property {
	return sd.Property{Name: name, Value: dbus.MakeVariant([]execCommand{{Path: argv[0], Argv: argv}})}
}

func usec(d time.Duration) uint64 { return uint64(d / time.Microsecond) }

// follow waits for the result of the job running as unit, printing the journal as it grows.
func (l *Launcher) follow(ctx context.Context, mgr *units.Manager, id, unit string, read func() *v1alpha1.ExecutorResult) v1alpha1.ExecutorResult {
	base := JournalBase(l.stateDir())
	poll := orDefault(l.Poll, DefaultPoll)
	printed := 0
	var endedAt time.Time
	for {
		if recs, err := journal.ReadRecords(l.Root, base, id); err == nil && l.Log != nil {
			for ; printed < len(recs); printed++ {
				r := recs[printed]
				_, _ = fmt.Fprintf(l.Log, "%s %s\n", r.Time.Format(time.RFC3339Nano), describeRecord(r))
			}
		}
		if r := read(); r != nil {
			return *r
		}
		st, err := mgr.State(ctx, unit)
		gone := err == nil && !busy(st)
		switch {
		case gone && endedAt.IsZero():
			endedAt = time.Now()
		case gone && time.Since(endedAt) > 3*time.Second:
			return v1alpha1.ExecutorResult{
				RemediationID: id,
				Outcome:       v1alpha1.OutcomeFailed,
				Message: fmt.Sprintf("the host-side run %s ended without a result; see the journal in %s on the node",
					unit, journal.Dir("", base, id)),
			}
		case !gone:
			endedAt = time.Time{}
		}
		select {
		case <-ctx.Done():
			return v1alpha1.ExecutorResult{
				RemediationID: id,
				Outcome:       v1alpha1.OutcomeFailed,
				Message: fmt.Sprintf("stopped following the host-side run (%v); it goes on as %s and its result will be in %s",
					ctx.Err(), unit, journal.Dir("", base, id)),
			}
		case <-time.After(poll):
		}
	}
}

func describeRecord(r journal.Record) string {
	s := string(r.Kind)
	if r.Step > 0 {
		s = fmt.Sprintf("step %d %s", r.Step, s)
	}
	for _, p := range []string{r.Unit, r.Path, r.Outcome, r.Message} {
		if p != "" {
			s += " " + p
		}
	}
	return s
}
