// Package executor runs a v1alpha1.Plan on a node: StopUnit and StartUnit through systemd, each repair step through
// its resolver (which decides, read-only, what changes) and VerifyNode through a verifier, with every change
// journaled and backed up first and every file written atomically. On any failure it rolls back from the journal
// and restarts the units; on every path out, the critical units (containerd and kubelet) are started again.
//
// A run that dies (SIGKILL, node crash) leaves a journal; the next run with the same remediation id finds it and
// either resumes (the interrupted step's files are put back and the step is redone from there, units stopped again
// as the plan had them) or rolls everything back, never repeating a half-done step blindly.
package executor

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
	"github.com/cnimedic/cnimedic/remediator/host"
	"github.com/cnimedic/cnimedic/remediator/journal"
	"github.com/cnimedic/cnimedic/remediator/step"
	"github.com/cnimedic/cnimedic/remediator/units"
)

// Units stops and starts systemd units, waiting until they are down or up (units.Manager does it over D-Bus).
type Units interface {
	Stop(ctx context.Context, unit string) (units.Transition, error)
	Start(ctx context.Context, unit string) (units.Transition, error)
}

// Verifier checks the node after a repair (conflists parse, plugins answer VERSION with the needed version, the
// runtime reports NetworkReady). It returns what it found; an error fails the VerifyNode step and rolls back.
type Verifier func(ctx context.Context, env step.Env) (string, error)

// Interrupted says what a run does with a journal left by a run that died.
type Interrupted string

const (
	// Resume puts back the files of the step that was interrupted, stops again the units the plan had stopped,
	// and continues from that step.
	Resume Interrupted = "resume"
	// RollBack undoes everything the earlier run did and restarts the units.
	RollBack Interrupted = "rollback"
)

// DefaultCriticalUnits are started on every path out of a run, in this order: the runtime first, since kubelet
// needs it.
var DefaultCriticalUnits = []string{"containerd.service", "kubelet.service"}

// Executor runs plans. Its zero value is not usable: set Units, and Resolvers/Verifier for plans that need them.
type Executor struct {
	// Env is the node as the resolvers and the verifier see it; Env.Root is where the host's files are.
	Env step.Env
	// JournalBase is the host directory of the journals (journal.DefaultBase when empty).
	JournalBase string
	Units       Units
	Resolvers   map[v1alpha1.StepType]step.Resolver
	Verifier    Verifier
	// CriticalUnits are started on every path out (DefaultCriticalUnits when nil).
	CriticalUnits []string
	// OnInterrupted is what to do with a journal of a run that died (Resume when empty).
	OnInterrupted Interrupted
	// CleanupTimeout bounds rollback and the final unit starts, which run even after the run's context is
	// cancelled (a SIGTERM must not leave kubelet stopped). Default 3 minutes.
	CleanupTimeout time.Duration
	// RefreshEnv, when set, gives the env each resolver and the verifier see, from the env at the start. A repair
	// can move what the env names: RepairRuntimeCNIConfig changes the conf and bin dirs containerd reads, and the
	// steps after it (and the verification) must look where containerd looks from then on.
	RefreshEnv func(step.Env) step.Env
	// Hook, when set, is called at every point where a crash matters (see the Point* names). Fault-injection
	// tests kill the process there.
	Hook func(point string)
}

// Fault-injection points, each prefixed "step-N/" inside a step.
const (
	PointBegun          = "begun"
	PointStepStarted    = "started"
	PointBeforeUnitJob  = "before-unit-job"
	PointAfterUnitJob   = "after-unit-job"
	PointAfterMkdir     = "after-mkdir"
	PointAfterBackup    = "after-backup"
	PointAfterWrite     = "after-write"
	PointBeforeAction   = "before-action"
	PointAfterAction    = "after-action"
	PointStepEnded      = "ended"
	PointRollbackBegun  = "rollback-begun"
	PointAfterRestore   = "after-restore"
	PointRollbackEnded  = "rollback-ended"
	PointBeforeFinish   = "before-finish"
	PointAfterResumeFix = "after-resume-fix"
)

func (e *Executor) hook(point string) {
	if e.Hook != nil {
		e.Hook(point)
	}
}

// env is the resolvers' view of the node; unless the caller set them, the backups it knows of are those of
// every journal on the host.
func (e *Executor) env() step.Env {
	env := e.Env
	if env.Backups == nil {
		root, base := env.Root, e.JournalBase
		env.Backups = func(hostPath string) ([]step.BackupCopy, error) { return journal.Copies(root, base, hostPath) }
	}
	return env
}

func (e *Executor) critical() []string {
	if e.CriticalUnits != nil {
		return e.CriticalUnits
	}
	return DefaultCriticalUnits
}

// Run executes the plan under the remediation id and returns the result. It never returns with a critical unit
// stopped if it can start it; when it cannot, the result says so (Outcome Failed).
func (e *Executor) Run(ctx context.Context, id string, plan v1alpha1.Plan) v1alpha1.ExecutorResult {
	res := v1alpha1.ExecutorResult{RemediationID: id}
	if err := Validate(plan, e.critical()); err != nil {
		return e.failEarly(ctx, res, fmt.Errorf("nothing was changed: %w", err))
	}
	j, release, busy := e.claim(ctx, res, journal.ReadResult, fmt.Sprintf("another run of remediation %s is in progress", id))
	if busy != nil {
		return *busy
	}
	defer release()
	if stored, err := j.Result(); err != nil {
		return e.failEarly(ctx, res, err)
	} else if stored != nil {
		// Finished before: report the same result, change nothing (but the units must still be running).
		out := *stored
		e.ensureCritical(ctx, &out)
		return out
	}
	if err := j.SavePlan(plan); err != nil {
		return e.failEarly(ctx, res, err)
	}
	r := &run{e: e, j: j, plan: plan, res: res, env: e.env()}
	r.pruneJournals()
	return r.execute(ctx)
}

// pruneJournals removes finished journals past journal.DefaultRetention, so that /var/lib/cnimedic does not grow
// with every repair. It runs holding the node lock and this remediation's journal lock (flock: a second open of
// it, even in this process, is refused), so neither this journal nor one being recovered can go. A failure is
// noted, never fatal: pruning is housekeeping.
func (r *run) pruneJournals() {
	removed, err := journal.Prune(r.e.Env.Root, r.e.JournalBase, time.Now(), journal.DefaultRetention)
	if len(removed) > 0 {
		r.note("removed %d finished journals past retention (newest %d and the last %s are kept): %s",
			len(removed), journal.DefaultRetention.Keep, journal.DefaultRetention.MinAge, strings.Join(removed, ", "))
	}
	if err != nil {
		r.note("pruning old journals: %v", err)
	}
}

// claim takes the node lock and this remediation's journal without waiting: one remediation at a time on a node
// (another one's units are not ours to stop), one run at a time of a remediation. When it cannot, it returns the
// result to report instead, having touched nothing, not even to start a unit (the other run may hold it stopped
// on purpose): the result stored reports (the answer of an earlier run of the same request), else a Failed result
// saying who holds the node, or busyMsg when another run holds this remediation. release frees both.
func (e *Executor) claim(ctx context.Context, res v1alpha1.ExecutorResult,
	stored func(host.Root, string, string) (*v1alpha1.ExecutorResult, error), busyMsg string) (*journal.Journal, func(), *v1alpha1.ExecutorResult) {
	id := res.RemediationID
	nl, err := journal.LockNode(ctx, e.Env.Root, e.JournalBase, id, false)
	if errors.Is(err, journal.ErrBusy) {
		if earlier, _ := stored(e.Env.Root, e.JournalBase, id); earlier != nil {
			return nil, nil, earlier
		}
		res.Outcome = v1alpha1.OutcomeFailed
		res.Message = "nothing was changed: " + err.Error()
		return nil, nil, &res
	}
	if err != nil {
		out := e.failEarly(ctx, res, err)
		return nil, nil, &out
	}
	j, err := journal.Open(e.Env.Root, e.JournalBase, id)
	if errors.Is(err, journal.ErrBusy) {
		_ = nl.Unlock()
		res.Outcome = v1alpha1.OutcomeFailed
		res.Message = busyMsg
		return nil, nil, &res
	}
	if err != nil {
		out := e.failEarly(ctx, res, fmt.Errorf("open the journal: %w", err)) // under the node lock, as a run would
		_ = nl.Unlock()
		return nil, nil, &out
	}
	return j, func() { _ = j.Close(); _ = nl.Unlock() }, nil
}

// Recover is what runs when a host-side run has died (systemd's ExecStopPost, or the guard timer): a finished
// remediation only gets its units started; an unfinished one is rolled back, because nobody is left to decide
// whether to resume it; a rollback (or a requested undo) that was interrupted is completed. reason says what is
// known of the death.
func (e *Executor) Recover(ctx context.Context, id, reason string) v1alpha1.ExecutorResult {
	res := v1alpha1.ExecutorResult{RemediationID: id}
	// Recovery must happen, so it waits for a remediation that started on the node meanwhile.
	lctx, cancel := e.cleanupContext(ctx)
	nl, err := journal.LockNode(lctx, e.Env.Root, e.JournalBase, id, true)
	cancel()
	if err != nil {
		return e.failEarly(ctx, res, err)
	}
	defer func() { _ = nl.Unlock() }()
	j, err := journal.Open(e.Env.Root, e.JournalBase, id)
	if errors.Is(err, journal.ErrBusy) {
		res.Outcome = v1alpha1.OutcomeFailed
		res.Message = fmt.Sprintf("another run of remediation %s is in progress", id)
		return res
	}
	if err != nil {
		return e.failEarly(ctx, res, fmt.Errorf("open the journal: %w", err))
	}
	defer func() { _ = j.Close() }()
	plan, err := j.LoadPlan()
	if err != nil {
		// Without a plan nothing was started; the units are all there is to fix.
		return e.failEarly(ctx, res, err)
	}
	if err := Validate(plan, e.critical()); err != nil {
		// A run refuses such a plan before it touches anything: a journal holding one was not written by it.
		return e.failEarly(ctx, res, fmt.Errorf("the journal's plan is refused, nothing is rolled back: %w", err))
	}
	r := &run{e: e, j: j, plan: plan, res: res, env: e.env()}
	sum := journal.Summarize(j.Records())
	stored, _ := j.Result()
	undone, _ := j.UndoResult()
	switch {
	case sum.Undo && undone == nil:
		// A requested rollback died before it stored its result: carry it out.
		return r.undo(ctx, stored, "completing a rollback whose run died ("+reason+")")
	case stored != nil && !sum.RollingBack:
		out := *stored
		e.ensureCritical(ctx, &out)
		return out
	}
	if !sum.Begun {
		r.note("recover: the run died before it began: %s", reason)
	} else {
		r.note("recover: the run died %s: %s", where(sum), reason)
	}
	r.rollback(ctx, "the host-side run died "+where(sum)+" ("+reason+")")
	return r.finish(ctx)
}

// Undo rolls back a remediation that finished: the node-side repair succeeded, but the manager's verification
// in the cluster (node Ready, a canary pod) did not accept it. Like any rollback it stops the units the plan had
// stopped, restores every backup, and starts them again. Asking again returns the stored result.
func (e *Executor) Undo(ctx context.Context, id, reason string) v1alpha1.ExecutorResult {
	res := v1alpha1.ExecutorResult{RemediationID: id}
	if !journal.HasPlan(e.Env.Root, e.JournalBase, id) {
		return e.failEarly(ctx, res, fmt.Errorf("remediation %s never ran on this node: nothing to roll back", id))
	}
	j, release, busy := e.claim(ctx, res, journal.ReadUndo, fmt.Sprintf("a run of remediation %s is in progress: roll back once it has ended", id))
	if busy != nil {
		return *busy
	}
	defer release()
	if undone, err := j.UndoResult(); err == nil && undone != nil {
		out := *undone
		e.ensureCritical(ctx, &out)
		return out
	}
	plan, err := j.LoadPlan()
	if err != nil {
		return e.failEarly(ctx, res, err)
	}
	if err := Validate(plan, e.critical()); err != nil {
		return e.failEarly(ctx, res, fmt.Errorf("the journal's plan is refused, nothing is rolled back: %w", err))
	}
	stored, _ := j.Result()
	r := &run{e: e, j: j, plan: plan, res: res, env: e.env()}
	return r.undo(ctx, stored, reason)
}

// undo rolls back what the journal still holds and stores the result both as the remediation's result and as
// the undo's.
func (r *run) undo(ctx context.Context, stored *v1alpha1.ExecutorResult, reason string) v1alpha1.ExecutorResult {
	if reason == "" {
		reason = "the manager asked for it"
	}
	sum := journal.Summarize(r.j.Records())
	if !sum.Undo {
		if _, err := r.j.Append(journal.Record{Kind: journal.KindUndo, Message: reason}); err != nil {
			return r.e.failEarly(ctx, r.res, err)
		}
	}
	var res v1alpha1.ExecutorResult
	if stored != nil && stored.Outcome == v1alpha1.OutcomeRolledBack && !sum.RollingBack {
		// Already rolled back by the run itself: nothing is left to undo.
		res = *stored
		r.e.ensureCritical(ctx, &res)
	} else {
		r.rollback(ctx, "rollback requested: "+reason)
		res = r.finish(ctx)
	}
	if err := r.j.FinishUndo(res); err != nil {
		res.Message = joinMsg(res.Message, "could not store the rollback's result: "+err.Error())
	}
	return res
}

// failEarly ends a run that could not use its journal: nothing was changed by it, but the units must run.
func (e *Executor) failEarly(ctx context.Context, res v1alpha1.ExecutorResult, err error) v1alpha1.ExecutorResult {
	res.Outcome = v1alpha1.OutcomeFailed
	res.Message = err.Error()
	e.ensureCritical(ctx, &res)
	return res
}

// ensureCritical starts every critical unit that is not running, with a context that survives the run's own
// cancellation. A unit that cannot be started turns the outcome into Failed.
func (e *Executor) ensureCritical(ctx context.Context, res *v1alpha1.ExecutorResult) {
	if e.Units == nil {
		return
	}
	cctx, cancel := e.cleanupContext(ctx)
	defer cancel()
	for _, u := range e.critical() {
		if _, err := units.NewAllowlist(u); err != nil {
			// Not a kubelet or runtime unit: a configuration that names another unit starts nothing.
			res.Outcome = v1alpha1.OutcomeFailed
			res.Message = joinMsg(res.Message, "not started: "+err.Error())
			continue
		}
		tr, err := e.Units.Start(cctx, u)
		if err != nil {
			res.Outcome = v1alpha1.OutcomeFailed
			res.Message = joinMsg(res.Message, fmt.Sprintf("%s is not running: %v", u, err))
			continue
		}
		if tr.Changed() {
			res.Message = joinMsg(res.Message, fmt.Sprintf("started %s on the way out", u))
		}
	}
}

func (e *Executor) cleanupContext(ctx context.Context) (context.Context, context.CancelFunc) {
	d := e.CleanupTimeout
	if d <= 0 {
		d = 3 * time.Minute
	}
	return context.WithTimeout(context.WithoutCancel(ctx), d)
}

// Validate checks a plan before anything runs, the same way wherever it runs (apply in the pod, the host-side
// run, rollback, and plan --plan's preview): its shape (steps, known types, names that are plain names:
// step.ValidateNames) and the static half of the node's own allowlist: StopUnit and StartUnit only on nodeUnits,
// which must be the kubelet and runtime units of a layout cnimedic knows (units.Allowlist), and containerd
// settings only under the known CNI and containerd roots (step.CheckRuntimeSpec). The other half, the files each
// step resolves to, is checked against step.Paths before each write and in the preview. Each error names the step
// and what it refuses.
func Validate(plan v1alpha1.Plan, nodeUnits []string) error {
	if len(plan.Steps) == 0 {
		return errors.New("the plan has no steps")
	}
	allowed, err := units.NewAllowlist(nodeUnits...)
	if err != nil {
		return fmt.Errorf("the node's units: %w", err)
	}
	for i, s := range plan.Steps {
		if !knownStep(s.Type) {
			return fmt.Errorf("step %d: unknown type %q", i+1, s.Type)
		}
		if err := validateStep(s, allowed); err != nil {
			return fmt.Errorf("step %d (%s): %w", i+1, s.Type, err)
		}
	}
	return nil
}

func knownStep(t v1alpha1.StepType) bool {
	switch t {
	case v1alpha1.StepStopUnit, v1alpha1.StepStartUnit, v1alpha1.StepVerifyNode, v1alpha1.StepSetCNIVersion,
		v1alpha1.StepInstallReferencePlugins, v1alpha1.StepRepairRuntimeCNIConfig, v1alpha1.StepFixConfFileModes,
		v1alpha1.StepRestoreConfList, v1alpha1.StepReclaimIPAM, v1alpha1.StepRemoveStaleNetns, v1alpha1.StepDeleteLink,
		v1alpha1.StepRemoveStaleCNIResults:
		return true
	}
	return false
}

// validateStep checks one step of a known type: a unit step's unit is named, a plain name, and one of the node's;
// containerd settings lie under the known roots; every name is one directory entry.
func validateStep(s v1alpha1.PlanStep, allowed units.Allowlist) error {
	unitStep := s.Type == v1alpha1.StepStopUnit || s.Type == v1alpha1.StepStartUnit
	if unitStep && (s.Unit == "" || strings.ContainsAny(s.Unit, "/ \t\n")) {
		return fmt.Errorf("invalid unit %q", s.Unit)
	}
	if err := step.ValidateNames(s); err != nil {
		return err
	}
	if unitStep {
		return allowed.Check(s.Unit)
	}
	if s.Type == v1alpha1.StepRepairRuntimeCNIConfig {
		return step.CheckRuntimeSpec(s.Runtime)
	}
	return nil
}

func isRepair(t v1alpha1.StepType) bool {
	switch t {
	case v1alpha1.StepStopUnit, v1alpha1.StepStartUnit, v1alpha1.StepVerifyNode:
		return false
	}
	return true
}

// run is one execution against one journal.
type run struct {
	e    *Executor
	j    *journal.Journal
	plan v1alpha1.Plan
	res  v1alpha1.ExecutorResult
	env  step.Env
	// noChange: the preflight found nothing to change, so the disruptive steps were skipped.
	noChange bool
}

func (r *run) note(format string, args ...any) {
	_, _ = r.j.Append(journal.Record{Kind: journal.KindNote, Message: fmt.Sprintf(format, args...)})
}

func (r *run) execute(ctx context.Context) v1alpha1.ExecutorResult {
	sum := journal.Summarize(r.j.Records())
	from := 1
	switch {
	case !sum.Begun:
		if stop, msg := r.preflight(ctx); stop {
			return r.finishEarly(ctx, msg)
		}
		if _, err := r.j.Append(journal.Record{Kind: journal.KindBegin}); err != nil {
			return r.e.failEarly(ctx, r.res, err)
		}
		r.e.hook(PointBegun)
	case sum.RolledBack:
		// The earlier run rolled back and died before storing its result.
		return r.finish(ctx)
	case sum.RollingBack || r.e.OnInterrupted == RollBack:
		r.rollback(ctx, "a previous run of this remediation was interrupted "+where(sum))
		return r.finish(ctx)
	default:
		var err error
		if from, err = r.resume(ctx, sum); err != nil {
			r.rollback(ctx, fmt.Sprintf("could not resume the interrupted run: %v", err))
			return r.finish(ctx)
		}
	}
	for i := from; i <= len(r.plan.Steps); i++ {
		if err := r.step(ctx, i); err != nil {
			r.rollback(ctx, fmt.Sprintf("step %d (%s) failed: %v", i, r.plan.Steps[i-1].Type, err))
			return r.finish(ctx)
		}
	}
	return r.finish(ctx)
}

// preflight resolves every repair step before anything is stopped. When all of them find nothing to change, the
// node is already as the plan wants it and kubelet and the runtime are left alone (a repeat of a plan). When the
// first repair step cannot even be resolved, the run stops here, before any disruption: nothing before it
// changes files, so it would fail the same way with kubelet stopped. Later steps may depend on earlier edits, so
// their errors here mean nothing yet.
//
// Every file a resolution names is checked against the node's allowlist here too (step.Paths): a plan that
// would write outside it, or through a symlink leading out of it, is refused before anything is touched,
// whichever step it is.
func (r *run) preflight(ctx context.Context) (stop bool, msg string) {
	repairs, unchanged := 0, 0
	laterErr := false
	for i, s := range r.plan.Steps {
		if !isRepair(s.Type) {
			continue
		}
		repairs++
		resolve := r.e.Resolvers[s.Type]
		if resolve == nil {
			return true, fmt.Sprintf("step %d (%s): this remediator has no resolver for it; nothing was changed", i+1, s.Type)
		}
		env := r.stepEnv()
		paths, err := step.NewPaths(env)
		if err != nil {
			return true, fmt.Sprintf("step %d (%s): this node's paths are refused, so nothing was stopped or changed: %v", i+1, s.Type, err)
		}
		res, err := resolve(ctx, env, s)
		if err != nil {
			if repairs == 1 {
				return true, fmt.Sprintf("step %d (%s) cannot be resolved on this node, so nothing was stopped or changed: %v", i+1, s.Type, err)
			}
			laterErr = true
			continue
		}
		for _, ed := range res.Edits {
			if _, err := paths.Resolve(ed.Path); err != nil {
				return true, fmt.Sprintf("step %d (%s) is refused, so nothing was stopped or changed: %v", i+1, s.Type, err)
			}
		}
		if res.NoChange() {
			unchanged++
		}
	}
	if laterErr {
		return false, ""
	}
	if repairs > 0 && unchanged == repairs {
		r.noChange = true
		return true, "the node is already as the plan wants it: nothing to change, kubelet and the runtime were not touched"
	}
	return false, ""
}

// finishEarly ends a run that changed nothing (preflight). VerifyNode steps still run, since they only read.
func (r *run) finishEarly(ctx context.Context, msg string) v1alpha1.ExecutorResult {
	r.res.Message = msg
	now := time.Now()
	outcome := v1alpha1.OutcomeRolledBack
	if r.noChange {
		outcome = v1alpha1.OutcomeNoChange
	}
	for _, s := range r.plan.Steps {
		sr := v1alpha1.StepResult{Type: s.Type, Outcome: v1alpha1.StepSkipped}
		if s.Type == v1alpha1.StepVerifyNode && r.noChange {
			m, err := r.verify(ctx)
			sr.Outcome, sr.Message = v1alpha1.StepDone, m
			if err != nil {
				sr.Outcome, sr.Message = v1alpha1.StepFailed, err.Error()
				outcome = v1alpha1.OutcomeRolledBack
				r.res.Message = "nothing needed changing, but the node does not verify: " + err.Error()
			}
		}
		sr.Started, sr.Finished = mt(now), mt(time.Now())
		r.res.Steps = append(r.res.Steps, sr)
	}
	r.res.Outcome = outcome
	r.e.ensureCritical(ctx, &r.res)
	if err := r.j.Finish(r.res); err != nil {
		r.res.Message = joinMsg(r.res.Message, "could not store the result: "+err.Error())
	}
	return r.res
}

func (r *run) verify(ctx context.Context) (string, error) {
	if r.e.Verifier == nil {
		return "", errors.New("this remediator has no verifier")
	}
	return r.e.Verifier(ctx, r.stepEnv())
}

// stepEnv is the env as it stands now (see Executor.RefreshEnv).
func (r *run) stepEnv() step.Env {
	if r.e.RefreshEnv != nil {
		return r.e.RefreshEnv(r.env)
	}
	return r.env
}

// resume prepares the continuation of an interrupted run and returns the step to continue from.
func (r *run) resume(ctx context.Context, sum journal.Summary) (int, error) {
	from := len(r.plan.Steps) + 1
	for i := 1; i <= len(r.plan.Steps); i++ {
		st := sum.Steps[i]
		if st == nil || !st.Ended {
			from = i
			break
		}
		if st.Outcome == v1alpha1.StepFailed {
			// The earlier run failed this step and died before its rollback began: finish that rollback.
			return 0, fmt.Errorf("step %d had failed: %s", i, st.Message)
		}
	}
	r.note("resuming at step %d after an interrupted run (%s)", from, where(sum))
	// The interrupted step's files go back to what they were before it, so it can be resolved and done afresh.
	bs := sum.StepBackups(from)
	for k := len(bs) - 1; k >= 0; k-- {
		if err := r.restore(bs[k]); err != nil {
			return 0, err
		}
	}
	// The units the plan had stopped up to here may have been started by a guard meanwhile: stop them again, in
	// the plan's order, before going on with the repair.
	for _, u := range sum.Down {
		if _, err := r.stopUnit(ctx, from, u); err != nil {
			return 0, err
		}
	}
	r.e.hook(PointAfterResumeFix)
	return from, nil
}

func (r *run) stepPoint(i int, p string) {
	if i == 0 {
		r.e.hook("rollback/" + p)
		return
	}
	r.e.hook(fmt.Sprintf("step-%d/%s", i, p))
}

// step runs plan step i (1-based) and journals it.
func (r *run) step(ctx context.Context, i int) error {
	s := r.plan.Steps[i-1]
	if _, err := r.j.Append(journal.Record{Kind: journal.KindStepStart, Step: i}); err != nil {
		return err
	}
	r.stepPoint(i, PointStepStarted)
	outcome, msg, err := r.do(ctx, i, s)
	if err != nil {
		_, _ = r.j.Append(journal.Record{Kind: journal.KindStepEnd, Step: i, Outcome: v1alpha1.StepFailed, Message: err.Error()})
		return err
	}
	if _, err := r.j.Append(journal.Record{Kind: journal.KindStepEnd, Step: i, Outcome: outcome, Message: msg}); err != nil {
		return err
	}
	r.stepPoint(i, PointStepEnded)
	return nil
}

func (r *run) do(ctx context.Context, i int, s v1alpha1.PlanStep) (outcome, msg string, err error) {
	switch s.Type {
	case v1alpha1.StepStopUnit:
		tr, err := r.stopUnit(ctx, i, s.Unit)
		return unitOutcome(tr), tr.String(), err
	case v1alpha1.StepStartUnit:
		tr, err := r.startUnit(ctx, i, s.Unit)
		return unitOutcome(tr), tr.String(), err
	case v1alpha1.StepVerifyNode:
		m, err := r.verify(ctx)
		return v1alpha1.StepDone, m, err
	}
	resolve := r.e.Resolvers[s.Type]
	if resolve == nil {
		return "", "", fmt.Errorf("this remediator has no resolver for %s", s.Type)
	}
	env := r.stepEnv()
	paths, err := step.NewPaths(env)
	if err != nil {
		return "", "", err
	}
	res, err := resolve(ctx, env, s)
	if err != nil {
		return "", "", err
	}
	if res.NoChange() {
		return v1alpha1.StepUnchanged, res.Message, nil
	}
	msgs := []string{res.Message}
	for _, ed := range res.Edits {
		m, err := r.edit(i, paths, ed)
		if err != nil {
			return "", "", err
		}
		msgs = append(msgs, m)
	}
	for _, a := range res.Actions {
		desc := a.Describe()
		if _, err := r.j.Append(journal.Record{Kind: journal.KindAction, Step: i, Message: desc}); err != nil {
			return "", "", err
		}
		r.stepPoint(i, PointBeforeAction)
		if err := a.Do(ctx); err != nil {
			return "", "", fmt.Errorf("%s: %w", desc, err)
		}
		if _, err := r.j.Append(journal.Record{Kind: journal.KindActionDone, Step: i, Message: desc}); err != nil {
			return "", "", err
		}
		r.stepPoint(i, PointAfterAction)
		msgs = append(msgs, desc)
	}
	return v1alpha1.StepDone, joinMsg(msgs...), nil
}

func unitOutcome(tr units.Transition) string {
	if tr.Changed() {
		return v1alpha1.StepDone
	}
	return v1alpha1.StepUnchanged
}

func (r *run) stopUnit(ctx context.Context, i int, unit string) (units.Transition, error) {
	if _, err := r.j.Append(journal.Record{Kind: journal.KindUnitStop, Step: i, Unit: unit}); err != nil {
		return units.Transition{Unit: unit}, err
	}
	r.stepPoint(i, PointBeforeUnitJob)
	tr, err := r.e.Units.Stop(ctx, unit)
	if err != nil {
		return tr, err
	}
	if _, err := r.j.Append(journal.Record{Kind: journal.KindUnitStopped, Step: i, Unit: unit, Message: tr.String()}); err != nil {
		return tr, err
	}
	r.stepPoint(i, PointAfterUnitJob)
	return tr, nil
}

func (r *run) startUnit(ctx context.Context, i int, unit string) (units.Transition, error) {
	if _, err := r.j.Append(journal.Record{Kind: journal.KindUnitStart, Step: i, Unit: unit}); err != nil {
		return units.Transition{Unit: unit}, err
	}
	r.stepPoint(i, PointBeforeUnitJob)
	tr, err := r.e.Units.Start(ctx, unit)
	if err != nil {
		return tr, err
	}
	if _, err := r.j.Append(journal.Record{Kind: journal.KindUnitStarted, Step: i, Unit: unit, Message: tr.String()}); err != nil {
		return tr, err
	}
	r.stepPoint(i, PointAfterUnitJob)
	return tr, nil
}

// edit applies one file edit: check it against the node's allowlist and resolve its symlinks inside the host
// root (step.Paths.Resolve: a link leading out of the allowed dirs is refused), create missing parent
// directories (each journaled first), back the file up, then replace or remove it atomically.
func (r *run) edit(i int, paths step.Paths, ed step.Edit) (string, error) {
	root := r.env.Root
	local, err := paths.Resolve(ed.Path)
	if err != nil {
		return "", err
	}
	hostPath := root.HostPath(local)
	if !ed.Remove {
		if err := r.mkdirs(i, filepath.Dir(hostPath)); err != nil {
			return "", err
		}
	}
	b, err := r.j.Backup(i, hostPath)
	if err != nil {
		return "", err
	}
	r.stepPoint(i, PointAfterBackup)
	what := "wrote"
	if ed.Remove {
		if err := host.RemoveAtomic(local); err != nil {
			return "", fmt.Errorf("remove %s: %w", hostPath, err)
		}
		what = "removed"
		if _, err := r.j.Append(journal.Record{Kind: journal.KindRemoved, Step: i, Path: hostPath}); err != nil {
			return "", err
		}
	} else {
		if err := host.WriteFileAtomic(local, ed.Content, ed.Mode); err != nil {
			return "", fmt.Errorf("write %s: %w", hostPath, err)
		}
		if _, err := r.j.Append(journal.Record{Kind: journal.KindWritten, Step: i, Path: hostPath, SHA256: sha(ed.Content)}); err != nil {
			return "", err
		}
	}
	r.stepPoint(i, PointAfterWrite)
	m := fmt.Sprintf("%s %s", what, hostPath)
	if !b.Existed && !ed.Remove {
		m = "created " + hostPath
	}
	if ed.Why != "" {
		m += ": " + ed.Why
	}
	return m, nil
}

// mkdirs creates the missing directories down to hostDir, journaling each before it exists so that a rollback
// removes them again.
func (r *run) mkdirs(i int, hostDir string) error {
	root := r.env.Root
	var missing []string
	for d := hostDir; d != "/" && d != "."; d = filepath.Dir(d) {
		if _, err := os.Lstat(root.Path(d)); err == nil {
			break
		} else if !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		missing = append([]string{d}, missing...)
	}
	for _, d := range missing {
		if _, err := r.j.Append(journal.Record{Kind: journal.KindMkdir, Step: i, Path: d}); err != nil {
			return err
		}
		if err := os.Mkdir(root.Path(d), 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
			return err
		}
		if err := host.SyncDir(root.Path(filepath.Dir(d))); err != nil {
			return err
		}
		r.stepPoint(i, PointAfterMkdir)
	}
	return nil
}

// where says where a journal's run stopped, for messages.
func where(sum journal.Summary) string {
	if i := sum.Interrupted(); i > 0 {
		return fmt.Sprintf("during step %d", i)
	}
	if sum.Last != nil {
		return fmt.Sprintf("after %s", describe(*sum.Last))
	}
	return "before it began"
}

func describe(rec journal.Record) string {
	s := string(rec.Kind)
	if rec.Step > 0 {
		s += fmt.Sprintf(" of step %d", rec.Step)
	}
	if rec.Unit != "" {
		s += " " + rec.Unit
	}
	if rec.Path != "" {
		s += " " + rec.Path
	}
	return s
}

func joinMsg(parts ...string) string {
	var out []string
	for _, p := range parts {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return strings.Join(out, "; ")
}
