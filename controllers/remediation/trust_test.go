package remediation

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
)

// The trust rules of the workflow (docs/security.md): what runs is what was approved, and only on a node the policy
// covers. Each test tries to get around one of them the way an operator who is not an approver, or someone holding
// more rights than the shipped roles give, would.

// TestAPhaseWrittenIntoTheStatusIsNotAnApproval: a write of status.phase Approved without a recorded approval (it
// needs status rights, which no shipped role grants) moves nothing: the remediation goes back to waiting for an
// approver and the node is never touched.
func TestAPhaseWrittenIntoTheStatusIsNotAnApproval(t *testing.T) {
	h := newHarness(t, "forged-phase")
	node := h.node("w1")
	p := h.policy("p", func(s *v1alpha1.RemediationPolicySpec) { s.Approval.Mode = v1alpha1.ApprovalManual })
	nr := h.remediation("nr", node.Name, p, v1alpha1.SignatureCNIVersionIncompatible)
	h.waitPhase(nr.Name, v1alpha1.PhaseAwaitingApproval)

	h.eventually(func() error {
		cur := h.get(nr.Name)
		patch := client.MergeFromWithOptions(cur.DeepCopy(), client.MergeFromWithOptimisticLock{})
		cur.Status.Phase = v1alpha1.PhaseApproved
		return h.c.Status().Patch(h.ctx, cur, patch)
	}, "write phase Approved into the status")

	h.eventually(func() error {
		if !containsPhaseReason(h.get(nr.Name), v1alpha1.PhaseAwaitingApproval, ReasonApprovalVoided) {
			return errors.New("the void approval is not in the history yet")
		}
		return nil
	}, "the forged approval is voided")
	time.Sleep(300 * time.Millisecond) // several poll intervals
	got := h.get(nr.Name)
	if got.Status.Phase != v1alpha1.PhaseAwaitingApproval || !strings.Contains(got.Status.Message, "no approval is recorded") {
		t.Errorf("phase %s: %q; want AwaitingApproval saying no approval is recorded", got.Status.Phase, got.Status.Message)
	}
	h.assertUntouched(node.Name, nr.Name)
}

// TestAPolicyChangedAfterTheApprovalVoidsIt: the approval binds the policy's generation. An approved repair that
// waits for a slot while someone edits its policy goes back to AwaitingApproval, saying what changed, with the
// approval annotation removed; a new approval lets it go on.
func TestAPolicyChangedAfterTheApprovalVoidsIt(t *testing.T) {
	h := newHarness(t, "voided")
	first, second := h.node("w1"), h.node("w2")
	p := h.policy("p", func(s *v1alpha1.RemediationPolicySpec) {
		s.Approval.Mode = v1alpha1.ApprovalManual
		s.MaxConcurrent = ptr.To(intstr.FromInt32(1))
	})
	// The first repair holds the only slot: no kubelet runs its executor pod.
	holder := h.remediation("holder", first.Name, p, v1alpha1.SignatureCNIVersionIncompatible)
	h.waitPhase(holder.Name, v1alpha1.PhaseAwaitingApproval)
	h.annotate(holder.Name, v1alpha1.AnnotationApprove, "true")
	h.waitPhase(holder.Name, v1alpha1.PhaseRepairing)

	nr := h.remediation("nr", second.Name, p, v1alpha1.SignatureCNIVersionIncompatible)
	pending := h.waitPhase(nr.Name, v1alpha1.PhaseAwaitingApproval)
	h.annotate(nr.Name, v1alpha1.AnnotationApprove, pending.Status.Digest)
	approved := h.waitPhase(nr.Name, v1alpha1.PhaseApproved)
	if approved.Status.Approval == nil || approved.Status.Approval.Digest != pending.Status.Digest {
		t.Fatalf("approval %+v does not bind digest %s", approved.Status.Approval, pending.Status.Digest)
	}

	h.eventually(func() error {
		cur := &v1alpha1.RemediationPolicy{}
		if err := h.c.Get(h.ctx, client.ObjectKeyFromObject(p), cur); err != nil {
			return err
		}
		patch := client.MergeFrom(cur.DeepCopy())
		cur.Spec.Repair.Units.Kubelet = "kubelet-custom.service"
		return h.c.Patch(h.ctx, cur, patch)
	}, "change the policy's kubelet unit")

	voided := h.waitPhase(nr.Name, v1alpha1.PhaseAwaitingApproval)
	if voided.Status.Reason != ReasonApprovalVoided || !strings.Contains(voided.Status.Message, "changed after the approval") {
		t.Errorf("reason %s: %q; want ApprovalVoided saying what changed", voided.Status.Reason, voided.Status.Message)
	}
	if _, ok := voided.Annotations[v1alpha1.AnnotationApprove]; ok {
		t.Error("the void approval's annotation is still there")
	}
	if voided.Status.Digest == pending.Status.Digest || voided.Status.Plan == nil ||
		!slices.ContainsFunc(voided.Status.Plan.Steps, func(s v1alpha1.PlanStep) bool { return s.Unit == "kubelet-custom.service" }) {
		t.Errorf("what will run was not decided again under the changed policy: %+v", voided.Status.Plan)
	}
	h.assertUntouched(second.Name, nr.Name)

	// An approval of the digest shown before the change approves nothing.
	h.annotate(nr.Name, v1alpha1.AnnotationApprove, pending.Status.Digest)
	time.Sleep(300 * time.Millisecond)
	if got := h.get(nr.Name).Status.Phase; got != v1alpha1.PhaseAwaitingApproval {
		t.Fatalf("an approval of an older digest moved the repair to %s", got)
	}
	h.annotate(nr.Name, v1alpha1.AnnotationApprove, voided.Status.Digest)
	h.waitPhase(nr.Name, v1alpha1.PhaseApproved)
}

// TestARequestForAControlPlaneNodeThroughAPolicyThatDoesNotNameItIsRejected: a person's NodeRemediation may name any
// node and any policy; the workflow checks that the policy covers the node (a control-plane node only by name) and
// ends it Rejected, touching nothing.
func TestARequestForAControlPlaneNodeThroughAPolicyThatDoesNotNameItIsRejected(t *testing.T) {
	h := newHarness(t, "cp")
	cp := h.node("cp1", func(n *corev1.Node) { n.Labels["node-role.kubernetes.io/control-plane"] = "" })
	p := h.policy("p", nil) // Automatic, selecting the test's nodes by label
	nr := h.remediation("nr", cp.Name, p, v1alpha1.SignatureCNIVersionIncompatible, func(nr *v1alpha1.NodeRemediation) {
		nr.Spec.Evidence = v1alpha1.Evidence{}
	})
	done := h.waitPhase(nr.Name, v1alpha1.PhaseRejected)
	if done.Status.Reason != ReasonNotCovered || !strings.Contains(done.Status.Message, "control-plane node is covered only when a policy names it") {
		t.Errorf("reason %s: %q", done.Status.Reason, done.Status.Message)
	}
	h.assertUntouched(cp.Name, nr.Name)
}

// TestARequestMadeByHandWaitsForAnApproverUnderAnAutomaticPolicy: a NodeRemediation without the detection's
// evidence is a person's request; an Automatic policy never approves it by itself.
func TestARequestMadeByHandWaitsForAnApproverUnderAnAutomaticPolicy(t *testing.T) {
	h := newHarness(t, "by-hand")
	node := h.node("w1")
	p := h.policy("p", nil) // Automatic
	nr := h.remediation("nr", node.Name, p, v1alpha1.SignatureCNIVersionIncompatible, func(nr *v1alpha1.NodeRemediation) {
		nr.Spec.Evidence, nr.Spec.Parameters = v1alpha1.Evidence{}, nil
	})
	h.waitPhase(nr.Name, v1alpha1.PhaseAwaitingApproval)
	time.Sleep(500 * time.Millisecond) // several poll intervals
	if got := h.get(nr.Name); got.Status.Phase != v1alpha1.PhaseAwaitingApproval || got.Status.Approval != nil {
		t.Fatalf("phase %s, approval %+v: a request made by hand was approved by the policy", got.Status.Phase, got.Status.Approval)
	}
	// Evidence written into it later (the detection feeding an open remediation of the node) does not turn the
	// request into a detected incident: what it was is recorded once, in the status.
	h.eventually(func() error {
		cur := h.get(nr.Name)
		patch := client.MergeFrom(cur.DeepCopy())
		cur.Spec.Evidence = v1alpha1.Evidence{EventCount: 50, PodCount: 3}
		return h.c.Patch(h.ctx, cur, patch)
	}, "feed the request evidence")
	time.Sleep(500 * time.Millisecond)
	if got := h.get(nr.Name); got.Status.Phase != v1alpha1.PhaseAwaitingApproval || got.Status.Approval != nil || !got.Status.ByHand {
		t.Fatalf("phase %s, approval %+v, byHand %v: evidence fed later made a request by hand approvable by the policy", got.Status.Phase, got.Status.Approval, got.Status.ByHand)
	}
	h.assertUntouched(node.Name, nr.Name)
}

// TestAPolicyNamingAnExecutorImageTheInstallDoesNotAllowRunsNothing: the executor runs as root with the host's
// D-Bus socket; a policy may pick only an image the installation allows.
func TestAPolicyNamingAnExecutorImageTheInstallDoesNotAllowRunsNothing(t *testing.T) {
	h := newHarness(t, "image")
	node := h.node("w1")
	p := h.policy("p", func(s *v1alpha1.RemediationPolicySpec) { s.Executor.Image = "evil.example/root:latest" })
	nr := h.remediation("nr", node.Name, p, v1alpha1.SignatureCNIVersionIncompatible)
	done := h.waitPhase(nr.Name, v1alpha1.PhaseEscalated)
	if done.Status.Reason != ReasonExecutorImageNotAllowed || !strings.Contains(done.Status.Message, "evil.example/root:latest") {
		t.Errorf("reason %s: %q", done.Status.Reason, done.Status.Message)
	}
	h.assertUntouched(node.Name, nr.Name)
}

// TestTheExecutorIsHandedTheDigestOfTheApprovedPlan: the executor pod is built from the status the approval bound,
// and carries the plan's digest as an argument, which `remediator apply` checks against the plan file.
func TestTheExecutorIsHandedTheDigestOfTheApprovedPlan(t *testing.T) {
	h := newHarness(t, "digest")
	node := h.node("w1")
	p := h.policy("p", nil)
	nr := h.remediation("nr", node.Name, p, v1alpha1.SignatureCNIVersionIncompatible)
	h.waitPhase(nr.Name, v1alpha1.PhaseRepairing)
	var pods []corev1.Pod
	h.eventually(func() error {
		if pods = h.executorPods(nr.Name); len(pods) == 0 {
			return errors.New("no executor pod yet")
		}
		return nil
	}, "the executor pod")
	got := h.get(nr.Name)
	if got.Status.Approval == nil || got.Status.Approval.Digest != got.Status.Digest || got.Status.Digest != runDigest(got) {
		t.Fatalf("approval %+v, digest %s: the approval must bind what is recorded to run", got.Status.Approval, got.Status.Digest)
	}
	want := "--plan-digest=" + v1alpha1.PlanDigest(*got.Status.Plan)
	if !slices.Contains(pods[0].Spec.Containers[0].Args, want) {
		t.Errorf("executor args %v lack %s", pods[0].Spec.Containers[0].Args, want)
	}
}
