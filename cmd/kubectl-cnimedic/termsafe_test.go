package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
)

// clear is ESC [2J ESC [H: clear the screen and go home; title sets the terminal's title (OSC 0).
const (
	clear = "\x1b[2J\x1b[H"
	title = "\x1b]0;owned\a"
)

// noRawEscapes fails when out holds a control character a terminal would obey, or lacks the escapes shown.
func noRawEscapes(t *testing.T, what, out string) {
	t.Helper()
	if strings.ContainsAny(out, "\x1b\a\r\u009b") {
		t.Errorf("%s prints raw terminal escapes:\n%q", what, out)
	}
	if !strings.Contains(out, `\x1b[2J\x1b[H`) {
		t.Errorf("%s does not show the escape as text:\n%s", what, out)
	}
}

// An ESC [2J in an event message, a condition, a result or a history entry comes out of describe, status and
// history visible and inert.
func TestAnEscapeInAnEventMessageComesOutOfTheTextOutputsVisibleAndInert(t *testing.T) {
	now := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	nr := v1alpha1.NodeRemediation{ObjectMeta: metav1.ObjectMeta{Name: "nr-w1", CreationTimestamp: metav1.NewTime(now.Add(-time.Hour))}}
	nr.Spec.NodeName, nr.Spec.Signature = "w1", "cni-version-incompatible"
	nr.Spec.Evidence.SampleMessages = []string{"sandbox failed " + clear + title}
	nr.Status.Phase, nr.Status.Message = v1alpha1.PhaseFailed, "executor says "+clear
	nr.Status.Conditions = []metav1.Condition{{Type: v1alpha1.PolicyReady, Status: metav1.ConditionFalse, Reason: "Failed", Message: clear + "gone", LastTransitionTime: metav1.NewTime(now)}}
	nr.Status.History = []v1alpha1.PhaseTransition{{Phase: v1alpha1.PhaseFailed, Time: metav1.NewTime(now), Reason: "Failed", Message: clear}}
	nr.Status.Result = &v1alpha1.ExecutorResult{Outcome: v1alpha1.OutcomeFailed, Message: "step failed: " + clear}
	ev := corev1.Event{Type: "Warning", Reason: "Failed", Message: "Failed to create pod sandbox: " + clear + title, LastTimestamp: metav1.NewTime(now)}

	var out bytes.Buffer
	if err := writeDescription(&out, &Description{NodeRemediation: nr, Events: []corev1.Event{ev}}, now); err != nil {
		t.Fatal(err)
	}
	noRawEscapes(t, "describe", out.String())
	if !strings.Contains(out.String(), `Failed to create pod sandbox: \x1b[2J\x1b[H\x1b]0;owned\x07`) {
		t.Errorf("describe does not show the event's message with its escapes as text:\n%s", out.String())
	}

	out.Reset()
	if err := writeHistory(&out, []v1alpha1.NodeRemediation{nr}, now, true); err != nil {
		t.Fatal(err)
	}
	noRawEscapes(t, "history -o wide", out.String())

	out.Reset()
	rep := StatusReport{Policies: []PolicySummary{{Name: "p", Conditions: nr.Status.Conditions}}}
	if err := writeStatus(&out, rep, now); err != nil {
		t.Fatal(err)
	}
	noRawEscapes(t, "status", out.String())
}
