package main

import (
	"strings"
	"testing"
	"time"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
)

// TestApproveAndRejectSetTheContractAnnotations runs approve and reject against the API server and reads the
// annotations back: the design's contract is cnimedic.io/approve: "true" and cnimedic.io/reject: "<reason>".
func TestApproveAndRejectSetTheContractAnnotations(t *testing.T) {
	f, kubeconfig := newFixture(t)
	f.policy("manual", nil)
	for _, name := range []string{"p1", "p2", "p3", "p4"} {
		f.remediation(name, "node-"+name, "manual", v1alpha1.PhaseAwaitingApproval, time.Minute, nil)
	}

	out := mustRun(t, kubeconfig, "approve", "p1")
	if out != "noderemediation.cnimedic.io/p1 approved\n" {
		t.Errorf("approve printed %q", out)
	}
	if got := f.get("p1").Annotations[v1alpha1.AnnotationApprove]; got != "true" {
		t.Errorf("p1: %s = %q, want \"true\"", v1alpha1.AnnotationApprove, got)
	}

	mustRun(t, kubeconfig, "reject", "p2", "--reason", "node is being replaced")
	if got := f.get("p2").Annotations[v1alpha1.AnnotationReject]; got != "node is being replaced" {
		t.Errorf("p2: %s = %q", v1alpha1.AnnotationReject, got)
	}

	// A server-side dry run goes through the API server and stores nothing.
	out = mustRun(t, kubeconfig, "approve", "p4", "--dry-run")
	if !strings.Contains(out, "(server dry run)") {
		t.Errorf("dry run printed %q", out)
	}
	if _, ok := f.get("p4").Annotations[v1alpha1.AnnotationApprove]; ok {
		t.Error("a dry run must not store the annotation")
	}

	// --all-pending approves what awaits approval and skips the rejected one.
	out = mustRun(t, kubeconfig, "approve", "--all-pending", "-o", "name")
	if out != "noderemediation.cnimedic.io/p1\nnoderemediation.cnimedic.io/p3\nnoderemediation.cnimedic.io/p4\n" {
		t.Errorf("approve --all-pending printed %q", out)
	}
	for _, name := range []string{"p3", "p4"} {
		if got := f.get(name).Annotations[v1alpha1.AnnotationApprove]; got != "true" {
			t.Errorf("%s: %s = %q after --all-pending", name, v1alpha1.AnnotationApprove, got)
		}
	}
	if _, ok := f.get("p2").Annotations[v1alpha1.AnnotationApprove]; ok {
		t.Error("--all-pending must not approve a rejected remediation")
	}
}

// TestApproveAndRejectRefuseWhatTheControllerWouldIgnore checks the refusals: the controller reads the
// annotations only before approval, so setting them later would change nothing while looking like a decision.
func TestApproveAndRejectRefuseWhatTheControllerWouldIgnore(t *testing.T) {
	f, kubeconfig := newFixture(t)
	f.policy("manual", nil)
	f.remediation("ended", "n1", "manual", v1alpha1.PhaseSucceeded, time.Minute, nil)
	f.remediation("approved", "n2", "manual", v1alpha1.PhaseApproved, time.Minute, nil)
	f.remediation("repairing", "n3", "manual", v1alpha1.PhaseRepairing, time.Minute, nil)
	f.remediation("rejected", "n4", "manual", v1alpha1.PhaseAwaitingApproval, time.Minute, func(nr *v1alpha1.NodeRemediation) {
		nr.Annotations = map[string]string{v1alpha1.AnnotationReject: "no"}
	})
	f.remediation("pending", "n5", "manual", v1alpha1.PhaseAwaitingApproval, time.Minute, nil)

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"approve", "ended"}, "has ended (Succeeded"},
		{[]string{"reject", "ended", "--reason", "x"}, "has ended"},
		{[]string{"reject", "approved", "--reason", "x"}, "already approved: a rejection no longer stops it; pause its policy"},
		{[]string{"reject", "repairing", "--reason", "x"}, "already under way (phase Repairing)"},
		{[]string{"approve", "approved"}, "already approved (phase Approved)"},
		{[]string{"approve", "rejected"}, "already rejected"},
		{[]string{"approve", "missing"}, "not found"},
		{[]string{"reject", "pending"}, "--reason is required"},
		{[]string{"approve"}, "or give --all-pending"},
		{[]string{"approve", "pending", "--all-pending"}, "not both"},
	} {
		_, stderr, err := run(t, kubeconfig, tc.args...)
		if err == nil || !strings.Contains(stderr, tc.want) {
			t.Errorf("%v: err %v, stderr %q; want an error saying %q", tc.args, err, stderr, tc.want)
		}
	}
	if nr := f.get("pending"); len(nr.Annotations) != 0 {
		t.Errorf("a refused command changed %s: %v", nr.Name, nr.Annotations)
	}
	if nr := f.get("approved"); nr.Annotations[v1alpha1.AnnotationReject] != "" {
		t.Error("a refused rejection was stored")
	}
}
