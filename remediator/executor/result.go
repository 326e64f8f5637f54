package executor

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"
	"unicode/utf8"

	"github.com/pmezard/go-difflib/difflib"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
	"github.com/cnimedic/cnimedic/remediator/journal"
	"github.com/cnimedic/cnimedic/remediator/step"
)

// rollback undoes everything the journal says the run changed: it stops again the units the plan had stopped
// (so that nothing reads a file while it goes back), restores every live backup newest first, removes the
// directories the run created, and starts the units again in reverse stop order. It goes on past errors so that
// as much as possible is undone; the journal's rollback-end record says what could not be.
func (r *run) rollback(ctx context.Context, reason string) {
	cctx, cancel := r.e.cleanupContext(ctx)
	defer cancel()
	var problems []string
	if _, err := r.j.Append(journal.Record{Kind: journal.KindRollback, Message: reason}); err != nil {
		problems = append(problems, err.Error())
	}
	r.e.hook(PointRollbackBegun)
	sum := journal.Summarize(r.j.Records())
	if len(sum.Backups) > 0 || len(sum.Dirs) > 0 {
		for _, u := range sum.Touched {
			if _, err := r.stopUnit(cctx, 0, u); err != nil {
				problems = append(problems, fmt.Sprintf("could not stop %s before restoring files: %v", u, err))
			}
		}
	}
	for k := len(sum.Backups) - 1; k >= 0; k-- {
		if err := r.restore(sum.Backups[k]); err != nil {
			problems = append(problems, err.Error())
			continue
		}
		r.e.hook(PointAfterRestore)
	}
	root := r.env.Root
	for k := len(sum.Dirs) - 1; k >= 0; k-- {
		d := sum.Dirs[k]
		err := os.Remove(root.Path(d))
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			// Something else put files there since: leave it.
			problems = append(problems, fmt.Sprintf("left directory %s: %v", d, err))
			continue
		}
		_, _ = r.j.Append(journal.Record{Kind: journal.KindRmdir, Path: d})
	}
	for k := len(sum.Touched) - 1; k >= 0; k-- {
		u := sum.Touched[k]
		if _, err := r.startUnit(cctx, 0, u); err != nil {
			problems = append(problems, fmt.Sprintf("could not start %s: %v", u, err))
		}
	}
	outcome := v1alpha1.StepRolledBack
	if len(problems) > 0 {
		outcome = v1alpha1.StepFailed
	}
	_, _ = r.j.Append(journal.Record{Kind: journal.KindRollbackDone, Outcome: outcome, Message: joinMsg(problems...)})
	r.e.hook(PointRollbackEnded)
}

// restore puts a backed-up file back, unless its path now leads elsewhere through a symlink
// (step.CheckUnmoved): a link planted since the backup is not written through.
func (r *run) restore(b journal.Backup) error {
	if err := step.CheckUnmoved(r.env.Root, b.Path); err != nil {
		return err
	}
	return r.j.Restore(b)
}

// finish builds the result from the journal (so that a resumed run reports the steps of the run before it too),
// starts the critical units and stores the result.
func (r *run) finish(ctx context.Context) v1alpha1.ExecutorResult {
	sum := journal.Summarize(r.j.Records())
	res := r.res
	res.Steps = stepResults(sum, r.plan)
	res.Changes = r.changes(sum)
	switch {
	case sum.RolledBack && sum.RollbackOutcome == v1alpha1.StepRolledBack:
		res.Outcome = v1alpha1.OutcomeRolledBack
		res.Message = joinMsg(sum.RollbackReason, "every change was undone and the units restarted")
	case sum.RolledBack:
		res.Outcome = v1alpha1.OutcomeFailed
		res.Message = joinMsg(sum.RollbackReason, "the rollback did not complete: "+sum.RollbackMessage)
	default:
		res.Outcome = v1alpha1.OutcomeSucceeded
		res.Message = fmt.Sprintf("all %d steps done", len(r.plan.Steps))
		if len(res.Changes) == 0 && !anyDone(res.Steps) {
			res.Outcome = v1alpha1.OutcomeNoChange
			res.Message = "every step found the node as the plan wants it"
		}
	}
	r.e.ensureCritical(ctx, &res)
	r.e.hook(PointBeforeFinish)
	if err := r.j.Finish(res); err != nil {
		res.Message = joinMsg(res.Message, "could not store the result in the journal: "+err.Error())
	}
	return res
}

func anyDone(steps []v1alpha1.StepResult) bool {
	for _, s := range steps {
		if s.Outcome == v1alpha1.StepDone && isRepair(s.Type) {
			return true
		}
	}
	return false
}

func stepResults(sum journal.Summary, plan v1alpha1.Plan) []v1alpha1.StepResult {
	rolledBack := sum.RolledBack && sum.RollbackOutcome == v1alpha1.StepRolledBack
	out := make([]v1alpha1.StepResult, 0, len(plan.Steps))
	for i, s := range plan.Steps {
		sr := v1alpha1.StepResult{Type: s.Type, Outcome: v1alpha1.StepSkipped}
		st := sum.Steps[i+1]
		if st != nil && st.Started {
			sr.Started = mt(st.Start)
			switch {
			case st.Ended:
				sr.Outcome, sr.Message, sr.Finished = st.Outcome, st.Message, mt(st.End)
			default:
				sr.Outcome, sr.Message = v1alpha1.StepFailed, "interrupted: the run died during this step"
			}
			if rolledBack && sr.Outcome == v1alpha1.StepDone {
				sr.Outcome = v1alpha1.StepRolledBack
			}
			if st.Attempts > 1 {
				sr.Message = joinMsg(fmt.Sprintf("attempt %d", st.Attempts), sr.Message)
			}
		}
		out = append(out, sr)
	}
	return out
}

func mt(t time.Time) *metav1.Time {
	if t.IsZero() {
		return nil
	}
	m := metav1.NewTime(t)
	return &m
}

// changes lists every file whose state now differs from before the run, with a diff of text files.
func (r *run) changes(sum journal.Summary) []v1alpha1.FileChange {
	seen := map[string]bool{}
	var out []v1alpha1.FileChange
	for _, b := range sum.Backups {
		if seen[b.Path] {
			continue // the first backup of a path is its state before the run
		}
		seen[b.Path] = true
		old, err := r.j.ReadBackup(b)
		if err != nil {
			out = append(out, v1alpha1.FileChange{Path: b.Path, Diff: "(backup unreadable: " + err.Error() + ")"})
			continue
		}
		cur, curErr := os.ReadFile(r.env.Root.Path(b.Path))
		exists := curErr == nil
		if exists == b.Existed && bytes.Equal(old, cur) {
			continue
		}
		fc := v1alpha1.FileChange{Path: b.Path}
		if b.Existed {
			fc.Backup = r.j.HostBackupFile(b)
		}
		fc.Diff = Diff(b.Path, old, b.Existed, cur, exists)
		out = append(out, fc)
	}
	return out
}

// maxDiffInput is the largest file a diff is computed for; larger ones (plugin binaries) are summarized.
const maxDiffInput = 1 << 20

// Diff is a unified diff between two states of a file, or a one-line summary for binary or large files.
func Diff(path string, old []byte, oldExists bool, cur []byte, curExists bool) string {
	switch {
	case !oldExists && !curExists:
		return ""
	case !curExists:
		return fmt.Sprintf("removed (was %s)", summary(old))
	case !isText(old) || !isText(cur):
		if !oldExists {
			return fmt.Sprintf("created: %s", summary(cur))
		}
		return fmt.Sprintf("binary: %s -> %s", summary(old), summary(cur))
	}
	from := "a" + path
	if !oldExists {
		from = "/dev/null"
	}
	d, err := difflib.GetUnifiedDiffString(difflib.UnifiedDiff{
		A:        difflib.SplitLines(string(old)),
		B:        difflib.SplitLines(string(cur)),
		FromFile: from,
		ToFile:   "b" + path,
		Context:  3,
	})
	if err != nil {
		return fmt.Sprintf("%s -> %s", summary(old), summary(cur))
	}
	return d
}

func isText(b []byte) bool {
	return len(b) <= maxDiffInput && utf8.Valid(b) && !bytes.ContainsRune(b, 0)
}

func summary(b []byte) string {
	return fmt.Sprintf("%d bytes, sha256 %s", len(b), sha(b)[:16])
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}
