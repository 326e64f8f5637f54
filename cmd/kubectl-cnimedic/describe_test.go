package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
	"github.com/cnimedic/cnimedic/internal/termsafe"
)

const conflistDiff = `--- /etc/cni/net.d/10-flannel.conflist
+++ /etc/cni/net.d/10-flannel.conflist
@@ -1,3 +1,3 @@
 {
-  "cniVersion": "1.0.0",
+  "cniVersion": "0.4.0",
   "name": "cbr0",
`

// TestDescribeTellsTheStoryOfARepair writes a finished repair as the workflow leaves it, and its events as the
// manager publishes them (events.k8s.io/v1, in "default" because a NodeRemediation is cluster-scoped), and checks
// that describe shows evidence, plan, executor result with the conflist diff, history with times, and exactly the
// events `kubectl events --for noderemediation/NAME` would show.
func TestDescribeTellsTheStoryOfARepair(t *testing.T) {
	f, kubeconfig := newFixture(t)
	f.policy("manual", nil)
	t0 := f.now.Add(-20 * time.Minute)
	at := func(d time.Duration) metav1.Time { return metav1.NewTime(t0.Add(d)) }
	nr := f.remediation("story", "w1", "manual", v1alpha1.PhaseSucceeded, time.Minute, func(nr *v1alpha1.NodeRemediation) {
		nr.Spec.Parameters = map[string]string{"configVersion": "1.0.0", "supportedVersions": "0.1.0 0.2.0 0.3.0 0.3.1 0.4.0"}
		nr.Spec.Evidence = v1alpha1.Evidence{EventCount: 14, PodCount: 3, FirstSeen: ptrTime(at(0)), LastSeen: ptrTime(at(time.Minute)),
			Pods:           []v1alpha1.PodReference{{Namespace: "default", Name: "web-1"}},
			SampleMessages: []string{`incompatible CNI versions; config is "1.0.0", plugin supports ["0.1.0" "0.2.0" "0.3.0" "0.3.1" "0.4.0"]`}}
		nr.Status.Plan = &v1alpha1.Plan{Steps: []v1alpha1.PlanStep{
			{Type: v1alpha1.StepStopUnit, Unit: "kubelet.service"},
			{Type: v1alpha1.StepSetCNIVersion, ConfList: "10-flannel.conflist"},
			{Type: v1alpha1.StepStartUnit, Unit: "kubelet.service"},
		}}
		phases := []v1alpha1.Phase{v1alpha1.PhaseDetected, v1alpha1.PhaseAwaitingApproval, v1alpha1.PhaseApproved, v1alpha1.PhaseDraining,
			v1alpha1.PhaseRepairing, v1alpha1.PhaseVerifying, v1alpha1.PhaseSucceeded}
		nr.Status.History = nil
		for i, ph := range phases {
			nr.Status.History = append(nr.Status.History, v1alpha1.PhaseTransition{Phase: ph, Time: at(time.Duration(i) * time.Minute), Reason: string(ph), Message: "entered " + string(ph)})
		}
		nr.Status.Reason, nr.Status.Message = "Succeeded", "node w1 repaired and verified"
		nr.Status.StartTime, nr.Status.CompletionTime = ptrTime(at(3*time.Minute)), ptrTime(at(6*time.Minute))
		nr.Status.Approval = &v1alpha1.ApprovalRecord{Decision: v1alpha1.DecisionApproved, Mode: v1alpha1.ApprovalManual,
			Source: "annotation cnimedic.io/approve", Time: at(2 * time.Minute)}
		nr.Status.ExecutorPod, nr.Status.Attempt = "cnimedic-story-0a1b2c3d", 1
		nr.Status.Result = &v1alpha1.ExecutorResult{RemediationID: "story", Outcome: v1alpha1.OutcomeSucceeded, Message: "cniVersion set to 0.4.0",
			Changes: []v1alpha1.FileChange{{Path: "/etc/cni/net.d/10-flannel.conflist", Backup: "/var/lib/cnimedic/story/backup/10-flannel.conflist", Diff: conflistDiff}}}
		nr.Status.Steps = []v1alpha1.StepResult{
			{Type: v1alpha1.StepStopUnit, Outcome: v1alpha1.StepDone, Message: "kubelet.service stopped", Started: ptrTime(at(4 * time.Minute)), Finished: ptrTime(at(4*time.Minute + 2*time.Second))},
			{Type: v1alpha1.StepSetCNIVersion, Outcome: v1alpha1.StepDone, Message: "1.0.0 -> 0.4.0", Started: ptrTime(at(4*time.Minute + 2*time.Second)), Finished: ptrTime(at(4*time.Minute + 3*time.Second))},
		}
		nr.Status.Conditions = []metav1.Condition{{Type: v1alpha1.RemediationApproved, Status: metav1.ConditionTrue, Reason: "Approved",
			Message: "approved by annotation", LastTransitionTime: at(2 * time.Minute)}}
	})

	// Events as the manager's events.k8s.io recorder writes them, one about another object of the same name (an
	// earlier remediation, other UID) and one about the node: neither belongs to this story.
	f.namespace(metav1.NamespaceDefault)
	event := func(name string, regarding corev1.ObjectReference, reason, msg string, when time.Duration) {
		t.Helper()
		e := &eventsv1.Event{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: metav1.NamespaceDefault},
			EventTime:  metav1.NewMicroTime(t0.Add(when)), ReportingController: "cnimedic", ReportingInstance: "cnimedic-manager-0",
			Action: "Repair", Reason: reason, Regarding: regarding, Note: msg, Type: corev1.EventTypeNormal,
		}
		if err := f.c.Create(f.ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	self := corev1.ObjectReference{APIVersion: v1alpha1.GroupVersion.String(), Kind: "NodeRemediation", Name: nr.Name, UID: nr.UID}
	event("story.1", self, "Detected", "node w1 shows cni-version-incompatible", 0)
	event("story.2", self, "ExecutorStarted", "started executor pod cnimedic-system/cnimedic-story-0a1b2c3d (apply) on node w1", 4*time.Minute)
	event("story.3", self, "Succeeded", "node w1 repaired and verified", 6*time.Minute)
	earlier := self
	earlier.UID = types.UID("00000000-0000-0000-0000-000000000001")
	event("story.old", earlier, "EarlierIncident", "an earlier remediation with the same name", time.Minute)
	event("w1.node", corev1.ObjectReference{APIVersion: "v1", Kind: "Node", Name: "w1", UID: "node-uid"}, "NodeEvent", "about the node", time.Minute)

	out := mustRun(t, kubeconfig, "describe", "story")
	t.Log("\n" + out)
	for _, want := range []string{
		"Node:            w1",
		"Phase:           Succeeded (Succeeded)",
		"Approved by annotation cnimedic.io/approve",
		"(took 3m0s)",
		"14 from 3 pods", "default/web-1", `config is "1.0.0"`,
		"configVersion: 1.0.0",
		"1. StopUnit unit=kubelet.service", "2. SetCNIVersion conflist=10-flannel.conflist", "3. StartUnit unit=kubelet.service",
		"Pod:            cnimedic-story-0a1b2c3d (attempt 1)", "Outcome:        Succeeded",
		"/etc/cni/net.d/10-flannel.conflist (backup /var/lib/cnimedic/story/backup/10-flannel.conflist)",
		`-  "cniVersion": "1.0.0",`, `+  "cniVersion": "0.4.0",`,
		"SetCNIVersion   Done", "1s", // the step's duration
		"ExecutorStarted", "started executor pod cnimedic-system/cnimedic-story-0a1b2c3d",
	} {
		if !strings.Contains(squash(out), squash(want)) {
			t.Errorf("describe lacks %q", want)
		}
	}
	// The history in order, each phase with the time spent in it.
	history := out[strings.Index(out, "\nHistory:"):strings.Index(out, "\nEvents:")]
	last := -1
	for _, ph := range []string{"Detected", "AwaitingApproval", "Approved", "Draining", "Repairing", "Verifying", "Succeeded"} {
		i := strings.Index(history, "  "+ph+" ")
		if i < last {
			t.Errorf("history out of order at %s:\n%s", ph, history)
		}
		last = i
	}
	if !strings.Contains(history, "1m0s") || !strings.Contains(history, at(4*time.Minute).UTC().Format(time.RFC3339)) {
		t.Errorf("history lacks times and durations:\n%s", history)
	}
	events := out[strings.Index(out, "\nEvents:"):]
	if strings.Index(events, "Detected") > strings.Index(events, "ExecutorStarted") || strings.Index(events, "ExecutorStarted") > strings.Index(events, "Succeeded") {
		t.Errorf("events out of order:\n%s", events)
	}
	for _, foreign := range []string{"EarlierIncident", "NodeEvent"} {
		if strings.Contains(out, foreign) {
			t.Errorf("describe shows %s, an event that is not about this remediation", foreign)
		}
	}

	var d Description
	if err := json.Unmarshal([]byte(mustRun(t, kubeconfig, "describe", "story", "-o", "json")), &d); err != nil {
		t.Fatal(err)
	}
	if len(d.Events) != 3 || d.NodeRemediation.Status.Result.Changes[0].Diff != conflistDiff || d.Waiting != nil {
		t.Errorf("describe -o json: %d events, waiting %v", len(d.Events), d.Waiting)
	}
	if _, stderr, err := run(t, kubeconfig, "describe", "nope"); err == nil || !strings.Contains(stderr, `"nope" not found`) {
		t.Errorf("describe of a missing remediation: %v %q", err, stderr)
	}
}

// TestDescribeOfAnOpenRepairSaysWhatItWaitsFor covers the open side: no result yet, the wait in words.
func TestDescribeOfAnOpenRepairSaysWhatItWaitsFor(t *testing.T) {
	f, kubeconfig := newFixture(t)
	f.policy("manual", nil)
	f.remediation("open", "w2", "manual", v1alpha1.PhaseAwaitingApproval, 3*time.Minute, nil)
	out := mustRun(t, kubeconfig, "describe", "open")
	for _, want := range []string{"Waiting for:     Approval: read the plan", "Approve:         kubectl cnimedic approve open", "Plan:\n  <none>", "so far", "Events:\n  <none>"} {
		if !strings.Contains(squash(out), squash(want)) {
			t.Errorf("describe lacks %q:\n%s", want, out)
		}
	}
}

// TestDescribeShowsTheMappedNodeConditionOfTheEvidence: a remediation opened from a condition the policy maps
// (spec.detection.nodeConditions) says which condition, in which status, why and since when.
func TestDescribeShowsTheMappedNodeConditionOfTheEvidence(t *testing.T) {
	f, kubeconfig := newFixture(t)
	f.policy("manual", nil)
	since := metav1.NewTime(f.now.Add(-5 * time.Minute))
	f.remediation("route", "w3", "manual", v1alpha1.PhaseAwaitingApproval, time.Minute, func(nr *v1alpha1.NodeRemediation) {
		// The cloud route controller's condition
		// (https://github.com/kubernetes/cloud-provider/blob/master/controllers/route/route_controller.go).
		nr.Spec.Evidence = v1alpha1.Evidence{Conditions: []v1alpha1.ConditionEvidence{{Type: "NetworkUnavailable", Status: "True",
			Reason: "NoRouteCreated", Message: "RouteController failed to create a route", Since: &since}}}
	})
	out := mustRun(t, kubeconfig, "describe", "route")
	want := "Mapped condition: NetworkUnavailable=True (NoRouteCreated) since " + timeOrUnknown(&since) + ": RouteController failed to create a route"
	if !strings.Contains(squash(out), squash(want)) {
		t.Errorf("describe lacks %q:\n%s", want, out)
	}
}

// squash collapses runs of spaces, so that assertions do not depend on column widths.
func squash(s string) string {
	return strings.Join(strings.FieldsFunc(s, func(r rune) bool { return r == ' ' }), " ")
}

// TestDescribeShowsThePreviewsDiffsBeforeTheApproveCommand: an approver reads what the plan would change on the
// node (the preview's per-file diff) before the command that approves it. The diff is the node's file content: an
// escape sequence in it is shown, never obeyed. A preview of another plan is never shown as this plan's.
func TestDescribeShowsThePreviewsDiffsBeforeTheApproveCommand(t *testing.T) {
	f, kubeconfig := newFixture(t)
	f.policy("manual", nil)
	plan := v1alpha1.Plan{Steps: []v1alpha1.PlanStep{
		{Type: v1alpha1.StepStopUnit, Unit: "kubelet.service"},
		{Type: v1alpha1.StepSetCNIVersion, ConfList: "10-flannel.conflist"},
		{Type: v1alpha1.StepStartUnit, Unit: "kubelet.service"},
	}}
	// A conflist whose "name" carries ESC [2J (clear the screen) and an OSC title change.
	evil := conflistDiff + "   \"comment\": \"\x1b[2J\x1b]0;owned\x07\",\n"
	f.remediation("pending", "w1", "manual", v1alpha1.PhaseAwaitingApproval, time.Minute, func(nr *v1alpha1.NodeRemediation) {
		nr.Status.Plan = &plan
		nr.Status.Digest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
		nr.Status.Preview = &v1alpha1.PlanPreview{Time: f.ago(30 * time.Second), PlanDigest: v1alpha1.PlanDigest(plan),
			Message:   "preview only: nothing was changed",
			Files:     []v1alpha1.PreviewFile{{Path: "/etc/cni/net.d/10-flannel.conflist", Why: "set cniVersion 0.4.0, which every plugin supports", Diff: evil, Truncated: true}},
			Truncated: true}
	})
	out := mustRun(t, kubeconfig, "describe", "pending")
	t.Log("\n" + out)
	for _, want := range []string{"Preview:", "/etc/cni/net.d/10-flannel.conflist: set cniVersion 0.4.0", `+  "cniVersion": "0.4.0",`, "(diff cut to fit the status)",
		`\x1b[2J\x1b]0;owned\x07`} {
		if !strings.Contains(out, want) {
			t.Errorf("describe lacks %q", want)
		}
	}
	if strings.ContainsAny(out, "\x1b\x07") {
		t.Error("describe printed a raw escape from the node's file")
	}
	diff, approve := strings.Index(out, `+  "cniVersion": "0.4.0",`), strings.Index(out, "kubectl cnimedic approve pending")
	if diff < 0 || approve < diff {
		t.Errorf("the approve command (at %d) comes before the preview's diff (at %d)", approve, diff)
	}

	// The plan changed since (the manager decided again): the old preview is not this plan's.
	f.remediation("replanned", "w2", "manual", v1alpha1.PhaseAwaitingApproval, time.Minute, func(nr *v1alpha1.NodeRemediation) {
		other := plan
		other.Steps = append([]v1alpha1.PlanStep(nil), plan.Steps...)
		other.Steps[0].Unit, other.Steps[2].Unit = "kubelet-custom.service", "kubelet-custom.service"
		nr.Status.Plan = &other
		nr.Status.Preview = &v1alpha1.PlanPreview{Time: f.ago(30 * time.Second), PlanDigest: v1alpha1.PlanDigest(plan),
			Files: []v1alpha1.PreviewFile{{Path: "/etc/cni/net.d/10-flannel.conflist", Diff: conflistDiff}}}
	})
	out = mustRun(t, kubeconfig, "describe", "replanned")
	if !strings.Contains(out, "<none for this plan>") || strings.Contains(out, `+  "cniVersion": "0.4.0",`) {
		t.Errorf("a preview of another plan is shown as this plan's:\n%s", out)
	}
}

// TestTextFromANodeCannotPrintALineOfItsOwnInDescribe (review): a file name a node writes can carry newlines; printed
// raw in the preview it would add lines such as a forged approve command or "<no file would change>". Each field of
// describe is one line: a newline in it is shown as \n.
func TestTextFromANodeCannotPrintALineOfItsOwnInDescribe(t *testing.T) {
	plan := &v1alpha1.Plan{Steps: []v1alpha1.PlanStep{{Type: v1alpha1.StepSetCNIVersion}}}
	nr := &v1alpha1.NodeRemediation{}
	nr.Status.Plan = plan
	nr.Status.Preview = &v1alpha1.PlanPreview{PlanDigest: v1alpha1.PlanDigest(*plan), Files: []v1alpha1.PreviewFile{{
		Path: "/etc/cni/net.d/10-x\n<no file would change>\nApprove:         kubectl cnimedic approve other-remediation\n.conflist", Diff: "-a\n+b\n"}}}
	var b bytes.Buffer
	writePreview(&prefixWriter{w: termsafe.NewWriter(&b)}, nr)
	for _, l := range strings.Split(b.String(), "\n") {
		if strings.HasPrefix(strings.TrimSpace(l), "Approve:") || strings.HasPrefix(strings.TrimSpace(l), "<no file would change>") {
			t.Fatalf("a node's file name printed a line of its own: %q\n%s", l, b.String())
		}
	}
	if !strings.Contains(b.String(), `10-x\n<no file would change>\nApprove:`) {
		t.Fatalf("the file name is not shown as one line with its newlines escaped:\n%s", b.String())
	}
}
