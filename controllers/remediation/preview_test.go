package remediation

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
	"github.com/cnimedic/cnimedic/internal/diagnosepod"
)

// The preview for the approver (preview.go): a human approving in Manual mode sees what will change before saying
// yes. No kubelet runs here: the tests end the preview pods with the result `remediator plan` writes in their
// termination message (cmd/remediator's tests run the command itself on a node laid out in a directory).

// previewed is the result `remediator plan --termination-message-path` writes for a SetCNIVersion plan.
func previewed(pod *corev1.Pod) *v1alpha1.ExecutorResult {
	return &v1alpha1.ExecutorResult{Outcome: v1alpha1.OutcomeNoChange, Message: "preview only: nothing was changed",
		Steps: []v1alpha1.StepResult{
			{Type: v1alpha1.StepStopUnit, Outcome: v1alpha1.StepSkipped, Message: "stop kubelet.service and wait until it is inactive"},
			{Type: v1alpha1.StepSetCNIVersion, Outcome: v1alpha1.StepSkipped, Message: "cniVersion 1.0.0 -> 0.4.0"},
		},
		Changes: []v1alpha1.FileChange{{Path: "/etc/cni/net.d/10-lab.conflist", Why: "set cniVersion 0.4.0, which every plugin of the chain supports",
			Diff: "--- a/etc/cni/net.d/10-lab.conflist\n+++ b/etc/cni/net.d/10-lab.conflist\n@@ -1,3 +1,3 @@\n {\n-  \"cniVersion\": \"1.0.0\",\n+  \"cniVersion\": \"0.4.0\",\n   \"name\": \"lab\",\n"}}}
}

// TestAnApproverSeesThePlansDiffOnTheNodeBeforeApproving: under a Manual policy the recorded plan is previewed on
// the node by a read-only pod (no approval, no cordon), and the status keeps the diff with the digest of the plan
// it previewed; approving then repairs as before.
func TestAnApproverSeesThePlansDiffOnTheNodeBeforeApproving(t *testing.T) {
	h := newHarness(t, "preview")
	node := h.node("w1")
	p := h.policy("p", func(s *v1alpha1.RemediationPolicySpec) { s.Approval.Mode = v1alpha1.ApprovalManual })
	h.runKubelet(kubelet{outcome: succeeded, preview: previewed})
	nr := h.remediation("nr", node.Name, p, v1alpha1.SignatureCNIVersionIncompatible)

	var pending *v1alpha1.NodeRemediation
	h.eventually(func() error {
		pending = h.get(nr.Name)
		if pending.Status.Phase != v1alpha1.PhaseAwaitingApproval || pending.Status.Preview == nil {
			return fmt.Errorf("phase %s, preview %+v", pending.Status.Phase, pending.Status.Preview)
		}
		return nil
	}, "the plan is previewed while the remediation waits for approval")
	pv := pending.Status.CurrentPreview()
	if pv == nil || pv.PlanDigest != v1alpha1.PlanDigest(*pending.Status.Plan) || pv.Unavailable != "" {
		t.Fatalf("preview %+v: want the preview of the recorded plan, with its digest", pending.Status.Preview)
	}
	if len(pv.Files) != 1 || pv.Files[0].Path != "/etc/cni/net.d/10-lab.conflist" || !strings.Contains(pv.Files[0].Diff, `+  "cniVersion": "0.4.0",`) ||
		pv.Files[0].Why == "" || pv.Truncated {
		t.Errorf("preview files %+v: want the file, why and its diff", pv.Files)
	}
	if pending.Status.Approval != nil || pending.Status.ExecutorPod != "" {
		t.Errorf("approval %+v, executor pod %q: the preview approves nothing and is not the repair's executor", pending.Status.Approval, pending.Status.ExecutorPod)
	}
	pods := h.podsOf(nr.Name, componentPreview)
	if len(pods) != 1 {
		t.Fatalf("%d preview pods, want one", len(pods))
	}
	pod := pods[0]
	c := pod.Spec.Containers[0]
	if !slices.Contains(c.Args, "plan") || !slices.Contains(c.Args, "--termination-message-path="+diagnosepod.TerminationMessagePath) ||
		slices.ContainsFunc(c.Args, func(a string) bool { return strings.HasPrefix(a, "--plan-digest") }) {
		t.Errorf("preview pod args %v: want `remediator plan` on the plan file, reporting in the termination message", c.Args)
	}
	for _, m := range c.VolumeMounts {
		if !m.ReadOnly {
			t.Errorf("preview pod mounts %s writable", m.MountPath)
		}
	}
	if !*c.SecurityContext.ReadOnlyRootFilesystem || slices.ContainsFunc(c.SecurityContext.Capabilities.Add, func(c corev1.Capability) bool { return c != "DAC_READ_SEARCH" }) {
		t.Errorf("preview pod security context %+v: want the diagnosis pod's read-only one", c.SecurityContext)
	}
	var shown v1alpha1.Plan
	if err := json.Unmarshal([]byte(pod.Annotations[diagnosepod.PlanAnnotation]), &shown); err != nil || v1alpha1.PlanDigest(shown) != pv.PlanDigest {
		t.Errorf("the preview pod carries plan %s (%v), the status says it previewed %s", v1alpha1.PlanDigest(shown), err, pv.PlanDigest)
	}
	h.assertUntouched(node.Name, nr.Name)

	h.annotate(nr.Name, v1alpha1.AnnotationApprove, pending.Status.Digest)
	h.waitPhase(nr.Name, v1alpha1.PhaseSucceeded)
	if n := len(h.executorPods(nr.Name)); n != 1 {
		t.Errorf("%d executor pods, want one for the repair", n)
	}
	if n := len(h.podsOf(nr.Name, componentPreview)); n != 1 {
		t.Errorf("%d preview pods: the plan was previewed more than once", n)
	}
}

// TestNoPreviewRunsUnderAnAutomaticPolicy: a policy that approves at once has nobody to read a preview, and a
// preview would delay the repair.
func TestNoPreviewRunsUnderAnAutomaticPolicy(t *testing.T) {
	h := newHarness(t, "nopreview")
	node := h.node("w1")
	p := h.policy("p", nil) // Automatic
	h.runKubelet(kubelet{outcome: succeeded, preview: previewed})
	nr := h.remediation("nr", node.Name, p, v1alpha1.SignatureCNIVersionIncompatible)
	done := h.waitPhase(nr.Name, v1alpha1.PhaseSucceeded)
	if n := len(h.podsOf(nr.Name, componentPreview)); n != 0 {
		t.Errorf("%d preview pods ran under an Automatic policy", n)
	}
	if done.Status.Preview != nil {
		t.Errorf("preview %+v recorded under an Automatic policy", done.Status.Preview)
	}
}

// TestAPreviewOfAnEarlierPlanIsNotShownAsCurrent: the plan changes after its preview (the policy changed, the
// approval given on the old digest is void and the manager decides again): the old preview stays in the status
// with its own digest but is not the current one, and the new plan is previewed in a pod of its own.
func TestAPreviewOfAnEarlierPlanIsNotShownAsCurrent(t *testing.T) {
	h := newHarness(t, "replan")
	node := h.node("w1")
	p := h.policy("p", func(s *v1alpha1.RemediationPolicySpec) { s.Approval.Mode = v1alpha1.ApprovalManual })
	var answerSecond atomic.Bool
	var answered atomic.Int32
	h.runKubelet(kubelet{outcome: succeeded, preview: func(pod *corev1.Pod) *v1alpha1.ExecutorResult {
		if answered.Load() > 0 && !answerSecond.Load() {
			return nil // the second preview stays pending until the test lets it end
		}
		answered.Add(1)
		return previewed(pod)
	}})
	nr := h.remediation("nr", node.Name, p, v1alpha1.SignatureCNIVersionIncompatible)
	var first *v1alpha1.NodeRemediation
	h.eventually(func() error {
		if first = h.get(nr.Name); first.Status.CurrentPreview() == nil {
			return fmt.Errorf("no current preview: %+v", first.Status.Preview)
		}
		return nil
	}, "the first plan is previewed")
	oldDigest := first.Status.Preview.PlanDigest

	h.eventually(func() error {
		cur := &v1alpha1.RemediationPolicy{}
		if err := h.c.Get(h.ctx, client.ObjectKeyFromObject(p), cur); err != nil {
			return err
		}
		patch := client.MergeFrom(cur.DeepCopy())
		cur.Spec.Repair.Units.Kubelet = "kubelet-custom.service"
		return h.c.Patch(h.ctx, cur, patch)
	}, "change the policy's kubelet unit")
	// An approval given on what was shown: the manager finds the policy changed before the cordon, voids it and
	// decides again.
	h.annotate(nr.Name, v1alpha1.AnnotationApprove, "true")
	var replanned *v1alpha1.NodeRemediation
	h.eventually(func() error {
		replanned = h.get(nr.Name)
		if replanned.Status.Phase != v1alpha1.PhaseAwaitingApproval || replanned.Status.Reason != ReasonApprovalVoided {
			return fmt.Errorf("phase %s (%s)", replanned.Status.Phase, replanned.Status.Reason)
		}
		return nil
	}, "the approval is voided and the plan decided again")
	if v1alpha1.PlanDigest(*replanned.Status.Plan) == oldDigest {
		t.Fatalf("the plan did not change: %+v", replanned.Status.Plan)
	}
	if replanned.Status.Preview == nil || replanned.Status.Preview.PlanDigest != oldDigest || replanned.Status.CurrentPreview() != nil {
		t.Errorf("preview %+v: the preview of the earlier plan is shown as current", replanned.Status.Preview)
	}
	h.eventually(func() error {
		if n := len(h.podsOf(nr.Name, componentPreview)); n != 2 {
			return fmt.Errorf("%d preview pods", n)
		}
		return nil
	}, "the new plan is previewed in a pod of its own")
	if pv := h.get(nr.Name).Status.CurrentPreview(); pv != nil {
		t.Errorf("a current preview %+v before the new plan's preview ended", pv)
	}

	answerSecond.Store(true)
	h.eventually(func() error {
		cur := h.get(nr.Name)
		pv := cur.Status.CurrentPreview()
		if pv == nil || pv.PlanDigest == oldDigest {
			return fmt.Errorf("preview %+v", cur.Status.Preview)
		}
		return nil
	}, "the new plan's preview is current")
	h.assertUntouched(node.Name, nr.Name)
}

// TestAFailedPreviewLeavesTheRemediationApprovable: a preview pod that ends without a result is recorded as
// unavailable, with why, and blocks nothing: the remediation waits for approval and repairs once approved.
func TestAFailedPreviewLeavesTheRemediationApprovable(t *testing.T) {
	h := newHarness(t, "failpreview")
	node := h.node("w1")
	p := h.policy("p", func(s *v1alpha1.RemediationPolicySpec) { s.Approval.Mode = v1alpha1.ApprovalManual })
	h.runKubelet(kubelet{outcome: succeeded})
	nr := h.remediation("nr", node.Name, p, v1alpha1.SignatureCNIVersionIncompatible)
	var pod corev1.Pod
	h.eventually(func() error {
		pods := h.podsOf(nr.Name, componentPreview)
		if len(pods) != 1 {
			return fmt.Errorf("%d preview pods", len(pods))
		}
		pod = pods[0]
		return nil
	}, "the preview pod starts")
	// The container was killed before it wrote anything (an image that cannot run, the OOM killer).
	if err := h.setPodStatus(&pod, func(p *corev1.Pod) {
		p.Status.Phase = corev1.PodFailed
		p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: p.Spec.Containers[0].Name, Image: p.Spec.Containers[0].Image,
			State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 137, Reason: "OOMKilled"}}}}
	}); err != nil {
		t.Fatal(err)
	}
	var pending *v1alpha1.NodeRemediation
	h.eventually(func() error {
		pending = h.get(nr.Name)
		if pending.Status.Preview == nil {
			return fmt.Errorf("no preview recorded")
		}
		return nil
	}, "the failed preview is recorded")
	pv := pending.Status.CurrentPreview()
	if pv == nil || !strings.Contains(pv.Unavailable, "OOMKilled") || len(pv.Files) != 0 {
		t.Errorf("preview %+v: want it unavailable, saying why", pending.Status.Preview)
	}
	if pending.Status.Phase != v1alpha1.PhaseAwaitingApproval || pending.Status.ExecutorPod != "" {
		t.Fatalf("phase %s, executor pod %q: a failed preview must leave the remediation waiting for approval", pending.Status.Phase, pending.Status.ExecutorPod)
	}
	h.annotate(nr.Name, v1alpha1.AnnotationApprove, pending.Status.Digest)
	h.waitPhase(nr.Name, v1alpha1.PhaseSucceeded)
	if n := len(h.podsOf(nr.Name, componentPreview)); n != 1 {
		t.Errorf("%d preview pods: a failed preview is not retried for the same plan", n)
	}
}

// TestAnApprovalNeverWaitsForThePreview: approved while its preview pod has not even started, the repair goes on,
// and the preview pod is not mistaken for the repair's executor.
func TestAnApprovalNeverWaitsForThePreview(t *testing.T) {
	h := newHarness(t, "nowait")
	node := h.node("w1")
	p := h.policy("p", func(s *v1alpha1.RemediationPolicySpec) { s.Approval.Mode = v1alpha1.ApprovalManual })
	h.runKubelet(kubelet{outcome: succeeded}) // preview pods stay pending
	nr := h.remediation("nr", node.Name, p, v1alpha1.SignatureCNIVersionIncompatible)
	h.eventually(func() error {
		if n := len(h.podsOf(nr.Name, componentPreview)); n != 1 {
			return fmt.Errorf("%d preview pods", n)
		}
		return nil
	}, "the preview pod is created")
	h.annotate(nr.Name, v1alpha1.AnnotationApprove, "true")
	h.eventually(func() error {
		list := &corev1.PodList{}
		if err := h.c.List(h.ctx, list, client.InNamespace(testNamespace), client.MatchingLabels{v1alpha1.LabelRemediation: nr.Name, v1alpha1.LabelComponent: componentPreview}); err != nil {
			return err
		}
		for _, pod := range list.Items {
			if pod.DeletionTimestamp == nil {
				return fmt.Errorf("preview pod %s still runs after the approval", pod.Name)
			}
		}
		return nil
	}, "the preview nobody will read is stopped")
	done := h.waitPhase(nr.Name, v1alpha1.PhaseSucceeded)
	if n := len(h.executorPods(nr.Name)); n != 1 || done.Status.Attempt != 1 {
		t.Errorf("%d executor pods, attempt %d: want one repair", n, done.Status.Attempt)
	}
	if done.Status.Preview != nil {
		t.Errorf("preview %+v recorded, but its pod never ended", done.Status.Preview)
	}
}

// TestAPreviewThatNeverReportsIsUnavailableOnceTheExecutorTimeoutPassed: a preview pod that never ends (an image
// that never pulls) is given up after executor.timeout from its start, recorded as unavailable, and deleted; the
// remediation still waits for approval.
func TestAPreviewThatNeverReportsIsUnavailableOnceTheExecutorTimeoutPassed(t *testing.T) {
	h := newHarness(t, "lostpreview")
	node := h.node("w1")
	p := h.policy("p", func(s *v1alpha1.RemediationPolicySpec) { s.Approval.Mode = v1alpha1.ApprovalManual })
	h.runKubelet(kubelet{outcome: succeeded}) // preview pods stay pending
	nr := h.remediation("nr", node.Name, p, v1alpha1.SignatureCNIVersionIncompatible)
	h.eventually(func() error {
		if n := len(h.podsOf(nr.Name, componentPreview)); n != 1 {
			return fmt.Errorf("%d preview pods", n)
		}
		return nil
	}, "the preview pod is created")
	h.clock.Step(p.Spec.Executor.Timeout.Duration + time.Minute)
	var pending *v1alpha1.NodeRemediation
	h.eventually(func() error {
		if pending = h.get(nr.Name); pending.Status.Preview == nil {
			return fmt.Errorf("no preview recorded")
		}
		return nil
	}, "the preview is given up")
	if pv := pending.Status.CurrentPreview(); pv == nil || !strings.Contains(pv.Unavailable, "gave no result within") {
		t.Errorf("preview %+v: want it unavailable, saying it gave no result in time", pending.Status.Preview)
	}
	if pending.Status.Phase != v1alpha1.PhaseAwaitingApproval || pending.Status.ExecutorPod != "" {
		t.Errorf("phase %s, executor pod %q: want the remediation still waiting for approval", pending.Status.Phase, pending.Status.ExecutorPod)
	}
	h.eventually(func() error {
		list := &corev1.PodList{}
		if err := h.c.List(h.ctx, list, client.InNamespace(testNamespace), client.MatchingLabels{v1alpha1.LabelRemediation: nr.Name, v1alpha1.LabelComponent: componentPreview}); err != nil {
			return err
		}
		for _, pod := range list.Items {
			if pod.DeletionTimestamp == nil {
				return fmt.Errorf("preview pod %s is still there", pod.Name)
			}
		}
		return nil
	}, "the preview pod that gave no result is deleted")
}
