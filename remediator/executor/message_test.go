package executor

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
)

func bigResult(steps, changes, diffLines int) v1alpha1.ExecutorResult {
	now := metav1.NewTime(time.Now())
	res := v1alpha1.ExecutorResult{
		RemediationID: "nr-node-1-cni-version-incompatible",
		Outcome:       v1alpha1.OutcomeRolledBack,
		Message:       "step 7 (VerifyNode) failed: " + strings.Repeat("the runtime says the network is not ready; ", 40),
	}
	for i := range steps {
		res.Steps = append(res.Steps, v1alpha1.StepResult{
			Type: v1alpha1.StepSetCNIVersion, Outcome: v1alpha1.StepRolledBack,
			Message: fmt.Sprintf("step %d: %s", i, strings.Repeat("é", 300)), Started: &now, Finished: &now,
		})
	}
	for i := range changes {
		var d strings.Builder
		for l := range diffLines {
			fmt.Fprintf(&d, "+  \"line %d\": \"%s\",\n", l, strings.Repeat("x", 40))
		}
		res.Changes = append(res.Changes, v1alpha1.FileChange{
			Path: fmt.Sprintf("/etc/cni/net.d/%02d-net.conflist", i), Backup: "/var/lib/cnimedic/journal/x/backups/12", Diff: d.String(),
		})
	}
	return res
}

func TestTerminationMessageFits(t *testing.T) {
	small := bigResult(1, 1, 3)
	small.Message = "ok"
	small.Steps[0].Message = "short"
	if got := TerminationMessage(small, 0); !strings.Contains(string(got), `"short"`) || strings.Contains(string(got), "shortened") {
		t.Fatalf("a small result was changed: %s", got)
	}
	for _, c := range []struct{ steps, changes, lines int }{{7, 3, 200}, {32, 10, 50}, {32, 200, 5}, {3, 1, 2000}} {
		res := bigResult(c.steps, c.changes, c.lines)
		full, _ := json.Marshal(res)
		got := TerminationMessage(res, 0)
		if len(got) > TerminationMessageLimit {
			t.Errorf("%+v: %d bytes", c, len(got))
		}
		var back v1alpha1.ExecutorResult
		if err := json.Unmarshal(got, &back); err != nil {
			t.Fatalf("%+v: not JSON: %v", c, err)
		}
		if back.Outcome != res.Outcome || back.RemediationID != res.RemediationID {
			t.Errorf("%+v: lost the outcome: %+v", c, back)
		}
		if len(full) > TerminationMessageLimit && len(got) < TerminationMessageLimit/4 && c.changes < 100 {
			t.Errorf("%+v: cut far more than needed: %d bytes", c, len(got))
		}
		// The input is not modified: stdout gets it whole.
		again, _ := json.Marshal(res)
		if string(again) != string(full) {
			t.Errorf("%+v: the full result was modified", c)
		}
		if c.steps <= 7 && len(back.Steps) != c.steps {
			t.Errorf("%+v: steps dropped although few", c)
		}
	}
}

// TestADiagnosisWithManyFindingsKeepsEveryErrorsSignatureAndFix: the manager decides on the findings' signatures
// and fixes, so a diagnosis too long for a termination message loses words and warnings first, never an error's
// signature or fix.
func TestADiagnosisWithManyFindingsKeepsEveryErrorsSignatureAndFix(t *testing.T) {
	res := v1alpha1.ExecutorResult{RemediationID: "nr", Outcome: v1alpha1.OutcomeNoChange, Message: strings.Repeat("summary ", 200)}
	for i := range 12 {
		res.Findings = append(res.Findings,
			v1alpha1.Finding{Severity: v1alpha1.SeverityWarning, Signature: v1alpha1.SignatureCNINotInitialized,
				Summary: fmt.Sprintf("warning %d: %s", i, strings.Repeat("w", 400)), Path: "/etc/cni/net.d/x"},
			v1alpha1.Finding{Severity: v1alpha1.SeverityError, Signature: v1alpha1.SignatureCNIVersionIncompatible, Fix: v1alpha1.ActionInstallReferencePlugins,
				Summary: fmt.Sprintf("error %d: %s", i, strings.Repeat("e", 400)), Repair: strings.Repeat("r", 200)})
	}
	msg := TerminationMessage(res, TerminationMessageLimit)
	if len(msg) > TerminationMessageLimit {
		t.Fatalf("%d bytes, over the limit", len(msg))
	}
	var got v1alpha1.ExecutorResult
	if err := json.Unmarshal(msg, &got); err != nil {
		t.Fatal(err)
	}
	errors := 0
	for _, f := range got.Findings {
		if f.Severity == v1alpha1.SeverityError {
			errors++
			if f.Signature != v1alpha1.SignatureCNIVersionIncompatible || f.Fix != v1alpha1.ActionInstallReferencePlugins {
				t.Errorf("an error lost its signature or fix: %+v", f)
			}
		}
	}
	if errors != 12 {
		t.Errorf("%d of 12 errors kept", errors)
	}
}
