package remediation

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
)

func TestRejectionTouchesNothing(t *testing.T) {
	h := newHarness(t, "reject")
	node := h.node("w1")
	p := h.policy("p", func(s *v1alpha1.RemediationPolicySpec) { s.Approval.Mode = v1alpha1.ApprovalManual })
	nr := h.remediation("nr", node.Name, p, v1alpha1.SignatureCNIVersionIncompatible)
	h.waitPhase(nr.Name, v1alpha1.PhaseAwaitingApproval)
	h.annotate(nr.Name, v1alpha1.AnnotationReject, "the network team is on it")
	done := h.waitPhase(nr.Name, v1alpha1.PhaseRejected)
	if done.Status.Approval == nil || done.Status.Approval.Decision != v1alpha1.DecisionRejected || done.Status.Approval.Reason != "the network team is on it" {
		t.Errorf("rejection not recorded: %+v", done.Status.Approval)
	}
	h.assertUntouched(node.Name, nr.Name)
}

func TestPendingApprovalExpires(t *testing.T) {
	h := newHarness(t, "expiry")
	node := h.node("w1")
	p := h.policy("p", func(s *v1alpha1.RemediationPolicySpec) {
		s.Approval.Mode = v1alpha1.ApprovalManual
		s.Approval.Expiry = &metav1.Duration{Duration: time.Hour}
	})
	nr := h.remediation("nr", node.Name, p, v1alpha1.SignatureCNIVersionIncompatible)
	h.waitPhase(nr.Name, v1alpha1.PhaseAwaitingApproval)
	h.clock.Step(59 * time.Minute)
	time.Sleep(300 * time.Millisecond)
	if got := h.get(nr.Name).Status.Phase; got != v1alpha1.PhaseAwaitingApproval {
		t.Fatalf("expired early: %s", got)
	}
	h.clock.Step(2 * time.Minute)
	done := h.waitPhase(nr.Name, v1alpha1.PhaseRejected)
	if done.Status.Reason != ReasonApprovalExpired || done.Status.Approval.Decision != v1alpha1.DecisionExpired {
		t.Errorf("reason %s, approval %+v; want ApprovalExpired", done.Status.Reason, done.Status.Approval)
	}
	h.assertUntouched(node.Name, nr.Name)
}

// TestClearedFailureEndsWithoutAction: evidence that went stale before the approval arrived ends the incident
// without cordoning the node.
func TestClearedFailureEndsWithoutAction(t *testing.T) {
	h := newHarness(t, "cleared")
	node := h.node("w1")
	p := h.policy("p", func(s *v1alpha1.RemediationPolicySpec) { s.Approval.Mode = v1alpha1.ApprovalManual })
	nr := h.remediation("nr", node.Name, p, v1alpha1.SignatureCNIVersionIncompatible)
	h.waitPhase(nr.Name, v1alpha1.PhaseAwaitingApproval)
	h.clock.Step(20 * time.Minute) // past detection.evidenceExpiry (15m) with no new failure
	h.annotate(nr.Name, v1alpha1.AnnotationApprove, "true")
	done := h.waitPhase(nr.Name, v1alpha1.PhaseSucceeded)
	if done.Status.Reason != ReasonResolvedWithoutAction {
		t.Fatalf("reason %s (%s), want ResolvedWithoutAction", done.Status.Reason, done.Status.Message)
	}
	h.assertUntouched(node.Name, nr.Name)
}

// TestStuckPodsThatRecoveredEndWithoutAction: the evidence is fresh but the pods it names now run.
func TestStuckPodsThatRecoveredEndWithoutAction(t *testing.T) {
	h := newHarness(t, "recovered")
	node := h.node("w1")
	pod := h.workloadPod("web", node.Name)
	h.runPod(pod)
	p := h.policy("p", nil)
	nr := h.remediation("nr", node.Name, p, v1alpha1.SignatureCNIVersionIncompatible, func(nr *v1alpha1.NodeRemediation) {
		nr.Spec.Evidence.Pods = []v1alpha1.PodReference{{Namespace: pod.Namespace, Name: pod.Name}}
	})
	done := h.waitPhase(nr.Name, v1alpha1.PhaseSucceeded)
	if done.Status.Reason != ReasonResolvedWithoutAction {
		t.Fatalf("reason %s (%s), want ResolvedWithoutAction", done.Status.Reason, done.Status.Message)
	}
	h.assertUntouched(node.Name, nr.Name)
}

// TestNodeCordonedBySomeoneElseStaysCordoned: cnimedic only ever uncordons a node it cordoned, also when the policy
// lets it repair nodes others cordoned.
func TestNodeCordonedBySomeoneElseStaysCordoned(t *testing.T) {
	h := newHarness(t, "owner")
	node := h.node("w1", func(n *corev1.Node) { n.Spec.Unschedulable = true })
	p := h.policy("p", func(s *v1alpha1.RemediationPolicySpec) { s.Drain.RepairCordonedNodes = true })
	h.runKubelet(kubelet{outcome: succeeded})
	nr := h.remediation("nr", node.Name, p, v1alpha1.SignatureCNIVersionIncompatible)
	h.waitPhase(nr.Name, v1alpha1.PhaseSucceeded)
	n := h.getNode(node.Name)
	if !n.Spec.Unschedulable {
		t.Fatal("cnimedic uncordoned a node someone else had cordoned")
	}
	if _, ok := n.Annotations[v1alpha1.AnnotationCordonedBy]; ok {
		t.Fatal("cnimedic marked as its own a cordon it did not make")
	}
}

func TestDrainBlockedByBudgetTimesOutAndUncordons(t *testing.T) {
	h := newHarness(t, "pdb-abort")
	node := h.node("w1")
	pod := h.workloadPod("db", node.Name)
	h.runPod(pod) // the eviction API lets a pending pod go whatever its budget says
	h.budget("db", pod)
	p := h.policy("p", func(s *v1alpha1.RemediationPolicySpec) {
		s.Drain.Timeout = &metav1.Duration{Duration: 10 * time.Minute}
	})
	nr := h.remediation("nr", node.Name, p, v1alpha1.SignatureCNIVersionIncompatible)
	h.waitPhase(nr.Name, v1alpha1.PhaseDraining)
	h.eventually(func() error {
		st := h.get(nr.Name).Status.Drain
		if st == nil || st.PodsRemaining != 1 || !strings.Contains(st.BlockedBy, "PodDisruptionBudget "+pod.Namespace+"/"+h.name("db")) {
			return fmt.Errorf("drain status %+v does not name the blocking budget", st)
		}
		return nil
	}, "drain progress visible")
	if !h.getNode(node.Name).Spec.Unschedulable {
		t.Fatal("node not cordoned while draining")
	}
	h.clock.Step(11 * time.Minute)
	done := h.waitPhase(nr.Name, v1alpha1.PhaseFailed)
	if done.Status.Reason != ReasonDrainTimeout {
		t.Fatalf("reason %s, want DrainTimeout", done.Status.Reason)
	}
	if n := h.getNode(node.Name); n.Spec.Unschedulable || n.Annotations[v1alpha1.AnnotationCordonedBy] != "" {
		t.Fatal("an aborted drain must give the node back")
	}
	if p := h.livePod(pod); p.DeletionTimestamp != nil {
		t.Fatal("the budget was overridden: the protected pod was deleted")
	}
	if len(h.executorPods(nr.Name)) != 0 {
		t.Fatal("an executor ran after an aborted drain")
	}
}

func TestDrainTimeoutProceedKeepsTheBudget(t *testing.T) {
	h := newHarness(t, "pdb-proceed")
	node := h.node("w1")
	pod := h.workloadPod("db", node.Name)
	h.runPod(pod)
	h.budget("db", pod)
	p := h.policy("p", func(s *v1alpha1.RemediationPolicySpec) {
		s.Drain.Timeout = &metav1.Duration{Duration: 10 * time.Minute}
		s.Drain.OnTimeout = v1alpha1.DrainTimeoutProceed
	})
	h.runKubelet(kubelet{outcome: succeeded})
	nr := h.remediation("nr", node.Name, p, v1alpha1.SignatureCNIVersionIncompatible)
	h.waitPhase(nr.Name, v1alpha1.PhaseDraining)
	time.Sleep(300 * time.Millisecond)
	h.clock.Step(11 * time.Minute)
	done := h.waitPhase(nr.Name, v1alpha1.PhaseSucceeded)
	if !containsPhaseReason(done, v1alpha1.PhaseRepairing, ReasonDrainTimeoutProceed) {
		t.Errorf("history does not show the escape: %+v", done.Status.History)
	}
	if p := h.livePod(pod); p.DeletionTimestamp != nil {
		t.Fatal("the escape overrode the budget: the protected pod was deleted")
	}
}

func TestEvictsWorkloadsButNotDaemonSets(t *testing.T) {
	h := newHarness(t, "evict")
	node := h.node("w1")
	web := h.workloadPod("web", node.Name)
	agent := h.workloadPod("agent", node.Name, func(p *corev1.Pod) {
		p.OwnerReferences[0].Kind, p.OwnerReferences[0].APIVersion, p.OwnerReferences[0].Name = "DaemonSet", "apps/v1", h.name("agent")
	})
	h.daemonSet("agent")
	p := h.policy("p", nil)
	nr := h.remediation("nr", node.Name, p, v1alpha1.SignatureCNIVersionIncompatible)
	h.eventually(func() error {
		if ph := h.get(nr.Name).Status.Phase; ph != v1alpha1.PhaseRepairing {
			return fmt.Errorf("phase %s, drain %+v", ph, h.get(nr.Name).Status.Drain)
		}
		return nil
	}, "drained")
	if h.livePod(web).DeletionTimestamp == nil {
		t.Error("the workload pod was not evicted")
	}
	if h.livePod(agent).DeletionTimestamp != nil {
		t.Error("a DaemonSet pod was evicted")
	}
}

func TestExecutorFailureLeavesNodeCordonedUntilAPersonActs(t *testing.T) {
	h := newHarness(t, "exec-fail")
	node := h.node("w1")
	p := h.policy("p", nil)
	h.runKubelet(kubelet{outcome: func(pod *corev1.Pod) *v1alpha1.ExecutorResult {
		return &v1alpha1.ExecutorResult{Outcome: v1alpha1.OutcomeFailed, Message: "containerd did not start again"}
	}})
	nr := h.remediation("nr", node.Name, p, v1alpha1.SignatureCNIVersionIncompatible)
	done := h.waitPhase(nr.Name, v1alpha1.PhaseFailed)
	if done.Status.Reason != ReasonRepairFailed || !strings.Contains(done.Status.Message, "containerd did not start again") ||
		!strings.Contains(done.Status.Message, "stays cordoned") {
		t.Errorf("end does not say what happened and what to look at: %s: %s", done.Status.Reason, done.Status.Message)
	}
	n := h.getNode(node.Name)
	if !n.Spec.Unschedulable || n.Annotations[v1alpha1.AnnotationCordonedBy] != nr.Name {
		t.Fatal("a failed repair must leave the node cordoned, explained by the remediation")
	}
	// Deleting the remediation hands the node to a person: still cordoned, no longer marked as cnimedic's.
	if err := h.c.Delete(h.ctx, done); err != nil {
		t.Fatal(err)
	}
	h.eventually(func() error {
		n := h.getNode(node.Name)
		if !n.Spec.Unschedulable || n.Annotations[v1alpha1.AnnotationCordonedBy] != "" {
			return fmt.Errorf("unschedulable=%v annotations=%v", n.Spec.Unschedulable, n.Annotations)
		}
		return nil
	}, "node left cordoned without cnimedic's mark")
}

func TestExecutorThatNeverStartsTimesOut(t *testing.T) {
	h := newHarness(t, "exec-timeout")
	node := h.node("w1")
	p := h.policy("p", func(s *v1alpha1.RemediationPolicySpec) {
		s.Executor.Timeout = &metav1.Duration{Duration: 10 * time.Minute}
	})
	nr := h.remediation("nr", node.Name, p, v1alpha1.SignatureCNIVersionIncompatible)
	h.waitPhase(nr.Name, v1alpha1.PhaseRepairing)
	h.eventually(func() error {
		if len(h.executorPods(nr.Name)) != 1 {
			return fmt.Errorf("no executor pod")
		}
		return nil
	}, "executor pod created")
	h.clock.Step(11 * time.Minute)
	done := h.waitPhase(nr.Name, v1alpha1.PhaseFailed)
	if done.Status.Reason != ReasonExecutorTimeout {
		t.Fatalf("reason %s, want ExecutorTimeout", done.Status.Reason)
	}
}

func TestExecutorPodThatVanishesIsLost(t *testing.T) {
	h := newHarness(t, "exec-lost")
	node := h.node("w1")
	p := h.policy("p", nil)
	nr := h.remediation("nr", node.Name, p, v1alpha1.SignatureCNIVersionIncompatible)
	var pod corev1.Pod
	h.eventually(func() error {
		pods := h.executorPods(nr.Name)
		if len(pods) != 1 {
			return fmt.Errorf("%d executor pods", len(pods))
		}
		pod = pods[0]
		return nil
	}, "executor pod created")
	h.eventually(func() error {
		if h.get(nr.Name).Status.ExecutorPod != pod.Name {
			return fmt.Errorf("not recorded yet")
		}
		return nil
	}, "executor pod recorded")
	if err := h.c.Delete(h.ctx, &pod, client.GracePeriodSeconds(0)); err != nil {
		t.Fatal(err)
	}
	done := h.waitPhase(nr.Name, v1alpha1.PhaseFailed)
	if done.Status.Reason != ReasonExecutorLost {
		t.Fatalf("reason %s, want ExecutorLost", done.Status.Reason)
	}
	if n := len(h.executorPods(nr.Name)); n != 1 {
		t.Fatalf("%d executor pods ran, want only the one that was lost: no second executor after a lost one", n)
	}
}

func TestFailedVerificationRollsBack(t *testing.T) {
	h := newHarness(t, "rollback")
	node := h.node("w1")
	p := h.policy("p", func(s *v1alpha1.RemediationPolicySpec) {
		s.Verification.Timeout = &metav1.Duration{Duration: 5 * time.Minute}
	})
	h.runKubelet(rollingBackKubelet()) // the canary's sandbox keeps failing
	nr := h.remediation("nr", node.Name, p, v1alpha1.SignatureCNIVersionIncompatible)
	h.waitPhase(nr.Name, v1alpha1.PhaseVerifying)
	time.Sleep(300 * time.Millisecond)
	h.clock.Step(6 * time.Minute)
	done := h.waitPhase(nr.Name, v1alpha1.PhaseRolledBack)
	// The rollback shows as a phase of its own in kubectl get -w, and holds the node while it runs.
	if got := phases(done); !slices.Equal(got[len(got)-3:], []v1alpha1.Phase{v1alpha1.PhaseVerifying, v1alpha1.PhaseRollingBack, v1alpha1.PhaseRolledBack}) {
		t.Errorf("history %v: want Verifying, RollingBack, RolledBack at the end", got)
	}
	if !strings.Contains(done.Status.Message, "verification failed") || !strings.Contains(done.Status.Message, "stays cordoned") {
		t.Errorf("message %q must say verification failed and the node stays cordoned", done.Status.Message)
	}
	if !h.getNode(node.Name).Spec.Unschedulable {
		t.Fatal("a rolled-back node must stay cordoned")
	}
	if n := len(h.executorPods(nr.Name)); n != 2 {
		t.Fatalf("%d executor pods, want 2 (the repair and its rollback)", n)
	}
	h.eventually(func() error {
		pods := &corev1.PodList{}
		if err := h.c.List(h.ctx, pods, client.InNamespace(testNamespace), client.MatchingLabels{v1alpha1.LabelComponent: "canary", v1alpha1.LabelRemediation: nr.Name}); err != nil {
			return err
		}
		for _, p := range pods.Items {
			if p.DeletionTimestamp == nil {
				return fmt.Errorf("canary %s still there", p.Name)
			}
		}
		return nil
	}, "canary cleaned up")
}

func TestRetryCapEscalates(t *testing.T) {
	h := newHarness(t, "retry")
	node := h.node("w1")
	p := h.policy("p", func(s *v1alpha1.RemediationPolicySpec) { s.Retry.MaxAttempts = 2 })
	h.runKubelet(kubelet{outcome: func(*corev1.Pod) *v1alpha1.ExecutorResult {
		return &v1alpha1.ExecutorResult{Outcome: v1alpha1.OutcomeRolledBack, Message: "plugin still refuses the version"}
	}})
	for i := range 2 {
		nr := h.remediation(fmt.Sprintf("nr%d", i), node.Name, p, v1alpha1.SignatureCNIVersionIncompatible)
		h.waitPhase(nr.Name, v1alpha1.PhaseRolledBack)
	}
	third := h.remediation("nr2", node.Name, p, v1alpha1.SignatureCNIVersionIncompatible)
	done := h.waitPhase(third.Name, v1alpha1.PhaseEscalated)
	if done.Status.Reason != ReasonRetryLimitReached {
		t.Fatalf("reason %s, want RetryLimitReached", done.Status.Reason)
	}
	if len(h.executorPods(third.Name)) != 0 {
		t.Fatal("an executor ran past the retry cap")
	}
}

func TestDryRunChangesNothing(t *testing.T) {
	h := newHarness(t, "dryrun")
	node := h.node("w1")
	web := h.workloadPod("web", node.Name)
	p := h.policy("p", func(s *v1alpha1.RemediationPolicySpec) { s.DryRun = true })
	h.runKubelet(kubelet{outcome: func(pod *corev1.Pod) *v1alpha1.ExecutorResult {
		return &v1alpha1.ExecutorResult{Outcome: v1alpha1.OutcomeNoChange, Message: "would set cniVersion 0.4.0",
			Changes: []v1alpha1.FileChange{{Path: "/etc/cni/net.d/10-lab.conflist", Diff: `-  "cniVersion": "1.0.0",` + "\n" + `+  "cniVersion": "0.4.0",`}}}
	}})
	nr := h.remediation("nr", node.Name, p, v1alpha1.SignatureCNIVersionIncompatible)
	done := h.waitPhase(nr.Name, v1alpha1.PhaseSucceeded)
	if done.Status.Reason != ReasonDryRun || done.Status.Result == nil || !strings.Contains(done.Status.Result.Changes[0].Diff, "0.4.0") {
		t.Fatalf("a dry run must end with the executor's preview: %s %+v", done.Status.Reason, done.Status.Result)
	}
	if !strings.Contains(done.Status.Drain.Message, "would cordon") || !strings.Contains(done.Status.Drain.Message, web.Name) {
		t.Errorf("the dry run must say what the drain would do: %q", done.Status.Drain.Message)
	}
	n := h.getNode(node.Name)
	if n.Spec.Unschedulable || n.Annotations[v1alpha1.AnnotationCordonedBy] != "" {
		t.Fatal("a dry run cordoned the node")
	}
	if h.livePod(web).DeletionTimestamp != nil {
		t.Fatal("a dry run evicted a pod")
	}
	pods := h.executorPods(nr.Name)
	if len(pods) != 1 || pods[0].Spec.Containers[0].Args[0] != "plan" {
		t.Fatalf("a dry run must only ask the executor for its plan: %v", pods)
	}
}

// --- helpers for pods on the test's nodes -------------------------------------------------------------

// workloadPod creates a pod of a ReplicaSet on the node, stuck as a broken CNI leaves it.
func (h *harness) workloadPod(name, node string, mutate ...func(*corev1.Pod)) *corev1.Pod {
	h.t.Helper()
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: h.name(name), Namespace: "default", Labels: map[string]string{"app": h.name(name)},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: h.name(name), UID: types.UID(h.name(name) + "-uid"), Controller: ptr.To(true)}}},
		Spec: corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "app", Image: "workload:test"}},
			AutomountServiceAccountToken: ptr.To(false), TerminationGracePeriodSeconds: ptr.To(int64(30))},
	}
	for _, m := range mutate {
		m(pod)
	}
	if err := h.c.Create(h.ctx, pod); err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { _ = h.c.Delete(h.ctx, pod, client.GracePeriodSeconds(0)) })
	return pod
}

func (h *harness) livePod(pod *corev1.Pod) *corev1.Pod {
	p := &corev1.Pod{}
	if err := h.c.Get(h.ctx, client.ObjectKeyFromObject(pod), p); err != nil {
		h.t.Fatal(err)
	}
	return p
}

// budget creates a PodDisruptionBudget that allows no disruption of the pod.
func (h *harness) budget(name string, pod *corev1.Pod) {
	h.t.Helper()
	pdb := &policyv1.PodDisruptionBudget{
		ObjectMeta: metav1.ObjectMeta{Name: h.name(name), Namespace: pod.Namespace},
		Spec: policyv1.PodDisruptionBudgetSpec{MinAvailable: ptr.To(intstr.FromInt32(1)),
			Selector: &metav1.LabelSelector{MatchLabels: pod.Labels}},
	}
	if err := h.c.Create(h.ctx, pdb); err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { _ = h.c.Delete(h.ctx, pdb) })
	// No disruption controller runs here: write the status it would (one healthy pod, none may go).
	h.eventually(func() error {
		cur := &policyv1.PodDisruptionBudget{}
		if err := h.c.Get(h.ctx, client.ObjectKeyFromObject(pdb), cur); err != nil {
			return err
		}
		cur.Status = policyv1.PodDisruptionBudgetStatus{ObservedGeneration: cur.Generation, CurrentHealthy: 1, DesiredHealthy: 1, ExpectedPods: 1, DisruptionsAllowed: 0}
		return h.c.Status().Update(h.ctx, cur)
	}, "budget status")
}

func (h *harness) daemonSet(name string) {
	h.t.Helper()
	// kubectl's drain looks the DaemonSet up before it leaves its pods alone.
	ds := &appsv1DaemonSet{}
	ds.init(h.name(name))
	if err := h.c.Create(h.ctx, ds.obj); err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { _ = h.c.Delete(h.ctx, ds.obj) })
}

// assertUntouched fails if the remediation ever acted on the node.
func (h *harness) assertUntouched(node, nr string) {
	h.t.Helper()
	n := h.getNode(node)
	if n.Spec.Unschedulable || n.Annotations[v1alpha1.AnnotationCordonedBy] != "" {
		h.t.Errorf("the node was touched: unschedulable=%v annotations=%v", n.Spec.Unschedulable, n.Annotations)
	}
	if pods := h.executorPods(nr); len(pods) != 0 {
		h.t.Errorf("%d executor pods ran", len(pods))
	}
	for _, tr := range h.get(nr).Status.History {
		if tr.Phase.HoldsNode() {
			h.t.Errorf("the remediation entered %s", tr.Phase)
		}
	}
}

func containsPhaseReason(nr *v1alpha1.NodeRemediation, p v1alpha1.Phase, reason string) bool {
	for _, t := range nr.Status.History {
		if t.Phase == p && t.Reason == reason {
			return true
		}
	}
	return false
}

func TestAgentPodRestartWhenAllowed(t *testing.T) {
	h := newHarness(t, "agent")
	node := h.node("w1")
	h.daemonSet("calico-node")
	agent := h.workloadPod("calico-node-x1", node.Name, func(p *corev1.Pod) {
		p.OwnerReferences[0].Kind, p.OwnerReferences[0].APIVersion, p.OwnerReferences[0].Name = "DaemonSet", "apps/v1", h.name("calico-node")
	})
	h.runPod(agent)
	p := h.policy("p", func(s *v1alpha1.RemediationPolicySpec) {
		s.AllowedActions = []v1alpha1.RepairAction{v1alpha1.ActionRestartCNIAgentPod, v1alpha1.ActionEscalate}
	})
	h.runKubelet(kubelet{})
	nr := h.remediation("nr", node.Name, p, v1alpha1.SignatureAPIServerAccess, func(nr *v1alpha1.NodeRemediation) {
		nr.Spec.Parameters = map[string]string{"pluginType": "calico", v1alpha1.ParamAgentDaemonSet: "default/" + h.name("calico-node")}
	})
	done := h.waitPhase(nr.Name, v1alpha1.PhaseSucceeded)
	if !containsPhaseReason(done, v1alpha1.PhaseVerifying, ReasonVerifying) {
		t.Errorf("history %v", phases(done))
	}
	if h.livePod(agent).DeletionTimestamp == nil {
		t.Fatal("the CNI agent pod was not restarted")
	}
	if len(h.executorPods(nr.Name)) != 0 {
		t.Fatal("restarting the agent pod needs no executor")
	}
	if n := h.getNode(node.Name); n.Spec.Unschedulable {
		t.Fatal("restarting the agent pod needs no cordon")
	}
}

func TestAgentPodRestartNotAllowedEscalates(t *testing.T) {
	h := newHarness(t, "agent-no")
	node := h.node("w1")
	p := h.policy("p", nil) // the default allowedActions leave RestartCNIAgentPod out
	nr := h.remediation("nr", node.Name, p, v1alpha1.SignatureAPIServerAccess)
	done := h.waitPhase(nr.Name, v1alpha1.PhaseEscalated)
	if done.Status.Reason != ReasonActionNotAllowed {
		t.Fatalf("reason %s", done.Status.Reason)
	}
	h.assertUntouched(node.Name, nr.Name)
}

// TestDeletingARolledBackRemediationLeavesTheNodeCordonedAndSaysSo: a person deleting a rolled-back remediation
// takes the node over; it stays cordoned, cnimedic's mark is removed, and a LeftCordoned event on the Node says so
// (the event was dropped when the remediation was already gone by the time its status was written).
func TestDeletingARolledBackRemediationLeavesTheNodeCordonedAndSaysSo(t *testing.T) {
	h := newHarness(t, "leftcordoned")
	node := h.node("w1")
	p := h.policy("p", func(s *v1alpha1.RemediationPolicySpec) {
		s.Verification.Timeout = &metav1.Duration{Duration: 5 * time.Minute}
	})
	h.runKubelet(rollingBackKubelet())
	nr := h.remediation("nr", node.Name, p, v1alpha1.SignatureCNIVersionIncompatible)
	h.waitPhase(nr.Name, v1alpha1.PhaseVerifying)
	time.Sleep(300 * time.Millisecond)
	h.clock.Step(6 * time.Minute)
	h.waitPhase(nr.Name, v1alpha1.PhaseRolledBack)

	if err := h.c.Delete(h.ctx, h.get(nr.Name)); err != nil {
		t.Fatal(err)
	}
	h.eventually(func() error {
		list := &eventsv1.EventList{}
		if err := h.c.List(h.ctx, list); err != nil {
			return err
		}
		for _, e := range list.Items {
			if e.Reason == ReasonLeftCordoned && e.Regarding.Name == node.Name {
				return nil
			}
		}
		return fmt.Errorf("no LeftCordoned event on node %s yet", node.Name)
	}, "the LeftCordoned event")
	n := h.getNode(node.Name)
	if !n.Spec.Unschedulable || n.Annotations[v1alpha1.AnnotationCordonedBy] != "" {
		t.Errorf("unschedulable=%v annotations=%v: the node must stay cordoned, without cnimedic's mark", n.Spec.Unschedulable, n.Annotations)
	}
}

// TestTheExecutorPodsOfASucceededRepairAreRemoved (issue 17): after a success nothing of the repair is left in the
// install namespace; after a rollback its pods are kept a day for their logs, then removed.
func TestTheExecutorPodsOfASucceededRepairAreRemoved(t *testing.T) {
	h := newHarness(t, "tidy")
	ok, bad := h.node("w1"), h.node("w2")
	p := h.policy("p", func(s *v1alpha1.RemediationPolicySpec) {
		s.Verification.Timeout = &metav1.Duration{Duration: 5 * time.Minute}
	})
	h.runKubelet(rollingBackKubelet(ok.Name))
	gone := func(nr string) error {
		live := &corev1.PodList{}
		if err := h.c.List(h.ctx, live, client.InNamespace(testNamespace), client.MatchingLabels{v1alpha1.LabelRemediation: nr}); err != nil {
			return err
		}
		for _, pod := range live.Items {
			if pod.DeletionTimestamp == nil && pod.Labels[v1alpha1.LabelComponent] != "canary" {
				return fmt.Errorf("pod %s still there", pod.Name)
			}
		}
		if len(h.podsOf(nr, "executor")) == 0 || len(h.podsOf(nr, componentDiagnosis)) == 0 {
			return fmt.Errorf("no executor or diagnosis pod ever ran for %s", nr)
		}
		return nil
	}
	good := h.remediation("good", ok.Name, p, v1alpha1.SignatureCNIVersionIncompatible)
	h.waitPhase(good.Name, v1alpha1.PhaseSucceeded)
	h.eventually(func() error { return gone(good.Name) }, "the succeeded repair's pods removed")

	failed := h.remediation("failed", bad.Name, p, v1alpha1.SignatureCNIVersionIncompatible)
	h.waitPhase(failed.Name, v1alpha1.PhaseVerifying)
	time.Sleep(300 * time.Millisecond)
	h.clock.Step(6 * time.Minute)
	h.waitPhase(failed.Name, v1alpha1.PhaseRolledBack)
	time.Sleep(300 * time.Millisecond)
	if gone(failed.Name) == nil {
		t.Fatal("the pods of a rolled-back repair were removed at once; their logs are what a person reads")
	}
	h.clock.Step(25 * time.Hour)
	h.annotate(failed.Name, "test/poke", "1") // the requeue is a day away on the real clock: wake the reconcile
	h.eventually(func() error { return gone(failed.Name) }, "the rolled-back repair's pods removed after a day")
}

// TestAPodWithoutAControllerBlocksTheDrainAtOnceUntilAnApproverAllowsIt (issue 17): a pod no controller recreates
// is not evicted by default (kubectl's own default); the drain says so at once, naming the annotation that allows
// it for this remediation, instead of waiting silently for its timeout. Allowed, the drain goes on; a policy may
// allow it for all its repairs.
func TestAPodWithoutAControllerBlocksTheDrainAtOnceUntilAnApproverAllowsIt(t *testing.T) {
	for _, byPolicy := range []bool{false, true} {
		t.Run(fmt.Sprintf("by policy %v", byPolicy), func(t *testing.T) {
			h := newHarness(t, fmt.Sprintf("unmanaged-%v", byPolicy))
			node := h.node("w1")
			pod := h.workloadPod("bare", node.Name, func(p *corev1.Pod) { p.OwnerReferences = nil })
			h.runPod(pod)
			p := h.policy("p", func(s *v1alpha1.RemediationPolicySpec) {
				s.Drain.Timeout = &metav1.Duration{Duration: 10 * time.Minute}
				s.Drain.EvictUnmanagedPods = byPolicy
			})
			h.runKubelet(kubelet{outcome: succeeded})
			nr := h.remediation("nr", node.Name, p, v1alpha1.SignatureCNIVersionIncompatible)
			if !byPolicy {
				h.waitPhase(nr.Name, v1alpha1.PhaseDraining)
				h.eventually(func() error {
					st := h.get(nr.Name).Status.Drain
					if st == nil || !strings.Contains(st.BlockedBy, "declare no controller") || !strings.Contains(st.BlockedBy, v1alpha1.AnnotationEvictUnmanagedPods+"=true") {
						return fmt.Errorf("drain status %+v does not say what blocks it and how to allow it", st)
					}
					return nil
				}, "the block reported before any timeout")
				h.annotate(nr.Name, v1alpha1.AnnotationEvictUnmanagedPods, "true")
			}
			h.waitPhase(nr.Name, v1alpha1.PhaseSucceeded)
			if h.livePod(pod).DeletionTimestamp == nil {
				t.Error("the pod without a controller was not evicted once allowed")
			}
		})
	}
}

// rollingBackKubelet plays a kubelet whose executor repairs and, asked to, rolls back, and on which the canary never
// runs but on the nodes named: their repairs verify, the others' roll back.
func rollingBackKubelet(canaryRunsOn ...string) kubelet {
	return kubelet{
		outcome: func(pod *corev1.Pod) *v1alpha1.ExecutorResult {
			if pod.Spec.Containers[0].Args[0] == "rollback" {
				return &v1alpha1.ExecutorResult{Outcome: v1alpha1.OutcomeRolledBack, Message: "restored 1 file"}
			}
			return succeeded(pod)
		},
		canaryRuns: func(pod *corev1.Pod) bool { return slices.Contains(canaryRunsOn, pod.Spec.NodeName) },
	}
}
