package remediation

import (
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
)

// TestManagerRestartAtEveryPhase stops the manager while a remediation waits in each phase (held there by the
// test), starts a new one, and checks the remediation carries on from its recorded phase: every phase once, one
// cordon, one executor pod, and the node given back at the end.
func TestManagerRestartAtEveryPhase(t *testing.T) {
	for _, phase := range []v1alpha1.Phase{v1alpha1.PhaseDiagnosing, v1alpha1.PhaseAwaitingApproval, v1alpha1.PhaseApproved, v1alpha1.PhaseDraining,
		v1alpha1.PhaseRepairing, v1alpha1.PhaseVerifying} {
		t.Run(string(phase), func(t *testing.T) {
			h := newHarness(t, "restart-"+strings.ToLower(string(phase)[:5]))
			node := h.node("w1")
			var release atomic.Bool // the test lets the held phase go on after the restart
			p := h.policy("p", func(s *v1alpha1.RemediationPolicySpec) {
				switch phase {
				case v1alpha1.PhaseAwaitingApproval:
					s.Approval.Mode = v1alpha1.ApprovalManual
				case v1alpha1.PhaseApproved:
					s.Retry.Cooldown = &metav1.Duration{Duration: time.Hour}
				}
			})
			var blocker *corev1.Pod
			if phase == v1alpha1.PhaseApproved {
				// An earlier repair of the node finished a moment ago: the cooldown holds the new one in Approved.
				h.finishedRemediation("earlier", node.Name, p)
			}
			if phase == v1alpha1.PhaseDraining {
				blocker = h.workloadPod("db", node.Name)
				h.runPod(blocker)
				h.budget("db", blocker)
			}
			h.runKubelet(kubelet{
				outcome: func(pod *corev1.Pod) *v1alpha1.ExecutorResult {
					if phase == v1alpha1.PhaseRepairing && !release.Load() {
						return nil
					}
					return succeeded(pod)
				},
				diagnosis: func(pod *corev1.Pod) *v1alpha1.ExecutorResult {
					if phase == v1alpha1.PhaseDiagnosing && !release.Load() {
						return nil
					}
					return h.confirms(pod)
				},
				canaryRuns: func(*corev1.Pod) bool { return phase != v1alpha1.PhaseVerifying || release.Load() },
			})
			nr := h.remediation("nr", node.Name, p, v1alpha1.SignatureCNIVersionIncompatible)
			h.waitPhase(nr.Name, phase)
			time.Sleep(300 * time.Millisecond) // let the old manager act in the phase (create pods, evict...)
			h.stop()
			time.Sleep(100 * time.Millisecond)
			h.start()

			release.Store(true)
			switch phase {
			case v1alpha1.PhaseAwaitingApproval:
				h.annotate(nr.Name, v1alpha1.AnnotationApprove, "true")
			case v1alpha1.PhaseApproved:
				// The failure goes on (the detection keeps lastSeen current) while the cooldown runs out.
				h.seen(nr.Name, h.clock.Now().Add(61*time.Minute))
				h.clock.Step(61 * time.Minute)
			case v1alpha1.PhaseDraining:
				if err := h.c.Delete(h.ctx, blocker, client.GracePeriodSeconds(0)); err != nil {
					t.Fatal(err)
				}
			}
			done := h.waitPhase(nr.Name, v1alpha1.PhaseSucceeded)
			if got := phases(done); !slices.Equal(got, happyPath) {
				t.Errorf("history %v, want each phase once: %v", got, happyPath)
			}
			if pods := h.podsOf(nr.Name, componentDiagnosis); len(pods) != 1 {
				t.Errorf("%d diagnosis pods after the restart, want 1", len(pods))
			}
			if pods := h.executorPods(nr.Name); len(pods) != 1 {
				for _, p := range pods {
					t.Logf("executor pod %s created %s args %v", p.Name, p.CreationTimestamp, p.Spec.Containers[0].Args[:2])
				}
				t.Errorf("%d executor pods after the restart, want 1; history %+v", len(pods), done.Status.History)
			}
			if n := h.getNode(node.Name); n.Spec.Unschedulable || n.Annotations[v1alpha1.AnnotationCordonedBy] != "" {
				t.Errorf("node not given back: unschedulable=%v", n.Spec.Unschedulable)
			}
			if done.Status.Attempt != 1 {
				t.Errorf("attempt %d, want 1", done.Status.Attempt)
			}
		})
	}
}

// seen records new evidence at t, as the detection does while failures go on.
func (h *harness) seen(name string, t time.Time) {
	h.t.Helper()
	h.eventually(func() error {
		cur := h.get(name)
		patch := client.MergeFrom(cur.DeepCopy())
		cur.Spec.Evidence.LastSeen = &metav1.Time{Time: t}
		return h.c.Patch(h.ctx, cur, patch)
	}, "evidence of %s", name)
}

// finishedRemediation records an earlier repair of the node that ended now.
func (h *harness) finishedRemediation(name, node string, p *v1alpha1.RemediationPolicy) {
	h.t.Helper()
	nr := h.remediation(name, node, p, v1alpha1.SignatureCNIVersionIncompatible)
	now := metav1.NewTime(h.clock.Now())
	h.eventually(func() error {
		cur := h.get(nr.Name)
		cur.Status.Phase = v1alpha1.PhaseSucceeded
		cur.Status.Reason = ReasonSucceeded
		cur.Status.StartTime, cur.Status.CompletionTime = &now, &now
		return h.c.Status().Update(h.ctx, cur)
	}, "finish %s", nr.Name)
}
