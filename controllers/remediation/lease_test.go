package remediation

import (
	"fmt"
	"testing"
	"time"

	coordv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
	"github.com/cnimedic/cnimedic/internal/nodelease"
)

// otherToolHolds writes the node's lease as node-maintenance-operator writes it (holder "node-maintenance", one
// hour, renewed now on the workflow's clock).
func (h *harness) otherToolHolds(node *corev1.Node) *coordv1.Lease {
	h.t.Helper()
	at := metav1.NewMicroTime(h.clock.Now())
	l := &coordv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Namespace: nodelease.DefaultNamespace, Name: nodelease.Name(node.Name),
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "v1", Kind: "Node", Name: node.Name, UID: node.UID}}},
		Spec: coordv1.LeaseSpec{HolderIdentity: ptr.To("node-maintenance"), LeaseDurationSeconds: ptr.To[int32](3600),
			AcquireTime: &at, RenewTime: &at},
	}
	if err := h.c.Create(h.ctx, l); err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { _ = h.c.Delete(h.ctx, l) })
	return l
}

// leaseGivenBack waits for the node's lease to be gone, after what is said.
func (h *harness) leaseGivenBack(node, after string) {
	h.t.Helper()
	h.eventually(func() error {
		if _, err := h.lease(node); !apierrors.IsNotFound(err) {
			return fmt.Errorf("the lease is still there after %s (%v)", after, err)
		}
		return nil
	}, "the lease given back after %s", after)
}

func (h *harness) lease(node string) (*coordv1.Lease, error) {
	l := &coordv1.Lease{}
	err := h.c.Get(h.ctx, client.ObjectKey{Namespace: nodelease.DefaultNamespace, Name: nodelease.Name(node)}, l)
	return l, err
}

// TestANodeWhoseLeaseAnotherToolHoldsIsLeftAloneAndTheHolderNamed (issue 16): while node-maintenance-operator holds
// the node's lease, an approved repair waits, saying who holds it: no cordon, no executor. Once the other tool gives
// the lease back, cnimedic takes it, repairs, and gives it back.
func TestANodeWhoseLeaseAnotherToolHoldsIsLeftAloneAndTheHolderNamed(t *testing.T) {
	h := newHarness(t, "lease")
	node := h.node("w1")
	other := h.otherToolHolds(node)
	p := h.policy("p", nil)
	h.runKubelet(kubelet{outcome: succeeded})
	nr := h.remediation("nr", node.Name, p, v1alpha1.SignatureCNIVersionIncompatible)
	h.waitPhase(nr.Name, v1alpha1.PhaseApproved)
	h.eventOn(nr.Name, ReasonNodeHeldByOthers, `"node-maintenance"`)
	h.assertUntouched(node.Name, nr.Name)
	if l, err := h.lease(node.Name); err != nil || ptr.Deref(l.Spec.HolderIdentity, "") != "node-maintenance" {
		t.Fatalf("the other tool's lease was changed: %v %+v", err, l.Spec)
	}

	if err := h.c.Delete(h.ctx, other); err != nil {
		t.Fatal(err)
	}
	h.eventually(func() error {
		if ph := h.get(nr.Name).Status.Phase; !ph.HoldsNode() && ph != v1alpha1.PhaseSucceeded {
			return fmt.Errorf("phase %s", ph)
		}
		return nil
	}, "the repair starts once the lease is free")
	h.waitPhase(nr.Name, v1alpha1.PhaseSucceeded)
	h.leaseGivenBack(node.Name, "the repair")
}

// TestCnimedicHoldsTheNodesLeaseWhileItHoldsTheNode (issue 16): from the admission to the end, the node's lease is
// cnimedic's, so that the medik8s operators and anything else that follows the convention leave the node alone.
func TestCnimedicHoldsTheNodesLeaseWhileItHoldsTheNode(t *testing.T) {
	h := newHarness(t, "leaseheld")
	node := h.node("w1")
	pod := h.workloadPod("db", node.Name)
	h.runPod(pod)
	h.budget("db", pod) // the drain stays blocked: the remediation holds the node in Draining
	p := h.policy("p", func(s *v1alpha1.RemediationPolicySpec) {
		s.Drain.Timeout = &metav1.Duration{Duration: 10 * time.Minute}
	})
	nr := h.remediation("nr", node.Name, p, v1alpha1.SignatureCNIVersionIncompatible)
	h.waitPhase(nr.Name, v1alpha1.PhaseDraining)
	h.eventually(func() error {
		l, err := h.lease(node.Name)
		if err != nil {
			return err
		}
		if got := ptr.Deref(l.Spec.HolderIdentity, ""); got != nodelease.Holder {
			return fmt.Errorf("lease holder %q", got)
		}
		if len(l.OwnerReferences) != 1 || l.OwnerReferences[0].UID != node.UID {
			return fmt.Errorf("lease owners %+v", l.OwnerReferences)
		}
		return nil
	}, "cnimedic holds the lease while draining")
	h.clock.Step(11 * time.Minute)
	h.waitPhase(nr.Name, v1alpha1.PhaseFailed)
	h.leaseGivenBack(node.Name, "the remediation failed")
}

// TestANodeCordonedBySomeoneElseIsLeftAloneUnlessThePolicySaysSo (issue 16): a node kured, a maintenance or a person
// cordoned is not drained or repaired by default; the remediation waits and says why.
func TestANodeCordonedBySomeoneElseIsLeftAloneUnlessThePolicySaysSo(t *testing.T) {
	h := newHarness(t, "foreign")
	node := h.node("w1", func(n *corev1.Node) { n.Spec.Unschedulable = true })
	p := h.policy("p", nil)
	h.runKubelet(kubelet{outcome: succeeded})
	nr := h.remediation("nr", node.Name, p, v1alpha1.SignatureCNIVersionIncompatible)
	h.waitPhase(nr.Name, v1alpha1.PhaseApproved)
	h.eventOn(nr.Name, ReasonNodeHeldByOthers, "cordoned by someone else")
	h.assertNoExecutorAndNoHold(nr.Name)
	if n := h.getNode(node.Name); !n.Spec.Unschedulable || n.Annotations[v1alpha1.AnnotationCordonedBy] != "" {
		t.Fatalf("the node's cordon was changed: unschedulable=%v annotations=%v", n.Spec.Unschedulable, n.Annotations)
	}
}

// TestAnotherRemediationOfTheNodeEndingKeepsTheLeaseOfTheRepairInProgress (review): a second remediation of a node
// that ends at once (a person's request naming a policy that does not exist) must not give back the lease the first
// one holds while it drains: only the remediation that took the lease gives it back.
func TestAnotherRemediationOfTheNodeEndingKeepsTheLeaseOfTheRepairInProgress(t *testing.T) {
	h := newHarness(t, "leaseowner")
	node := h.node("w1")
	pod := h.workloadPod("db", node.Name)
	h.runPod(pod)
	h.budget("db", pod) // the drain stays blocked: the first remediation holds the node in Draining
	p := h.policy("p", func(s *v1alpha1.RemediationPolicySpec) {
		s.Drain.Timeout = &metav1.Duration{Duration: 10 * time.Minute}
	})
	nr := h.remediation("nr", node.Name, p, v1alpha1.SignatureCNIVersionIncompatible)
	h.waitPhase(nr.Name, v1alpha1.PhaseDraining)
	heldBy := func() (string, error) {
		l, err := h.lease(node.Name)
		if err != nil {
			return "", err
		}
		return l.Annotations[nodelease.AnnotationOwner], nil
	}
	h.eventually(func() error {
		if owner, err := heldBy(); err != nil || owner != nr.Name {
			return fmt.Errorf("lease owner %q (%v), want %s", owner, err, nr.Name)
		}
		return nil
	}, "the draining remediation holds the lease")
	missing := &v1alpha1.RemediationPolicy{ObjectMeta: metav1.ObjectMeta{Name: "does-not-exist"}}
	other := h.remediation("other", node.Name, missing, v1alpha1.SignatureCNIVersionIncompatible, func(n *v1alpha1.NodeRemediation) {
		n.Spec.Parameters, n.Spec.Evidence = nil, v1alpha1.Evidence{}
	})
	h.waitPhase(other.Name, v1alpha1.PhaseRejected)
	time.Sleep(500 * time.Millisecond) // the rejected one's end (release) has run
	if owner, err := heldBy(); err != nil || owner != nr.Name {
		t.Fatalf("after another remediation of the node ended: lease owner %q (%v), want %s still", owner, err, nr.Name)
	}
}

// TestAStaleCordonMarkDoesNotMakeSomeoneElsesCordonCnimedics (review): kubectl uncordon keeps annotations, so a node
// that still carries the mark of an old cnimedic repair and that another tool cordoned later is someone else's: the
// repair waits. The cordon is cnimedic's own only when its mark names a failed or rolled-back remediation of the node.
func TestAStaleCordonMarkDoesNotMakeSomeoneElsesCordonCnimedics(t *testing.T) {
	h := newHarness(t, "stalemark")
	node := h.node("w1", func(n *corev1.Node) {
		n.Spec.Unschedulable = true
		n.Annotations = map[string]string{v1alpha1.AnnotationCordonedBy: "an-old-remediation"}
	})
	p := h.policy("p", nil)
	h.runKubelet(kubelet{outcome: succeeded})
	nr := h.remediation("nr", node.Name, p, v1alpha1.SignatureCNIVersionIncompatible)
	h.waitPhase(nr.Name, v1alpha1.PhaseApproved)
	h.eventOn(nr.Name, ReasonNodeHeldByOthers, "cordoned by someone else")
	h.assertNoExecutorAndNoHold(nr.Name)
}

func (h *harness) assertNoExecutorAndNoHold(nr string) {
	h.t.Helper()
	if pods := h.executorPods(nr); len(pods) != 0 {
		h.t.Fatalf("%d executor pods ran", len(pods))
	}
	for _, tr := range h.get(nr).Status.History {
		if tr.Phase.HoldsNode() {
			h.t.Fatalf("the remediation entered %s", tr.Phase)
		}
	}
}

// TestARepairThatRolledBackGivesTheLeaseBackThoughTheNodeStaysCordoned (review): after a rollback cnimedic does
// nothing more to the node (a person looks at it), so the next repair of the node is not kept waiting for a lease
// nobody renews.
func TestARepairThatRolledBackGivesTheLeaseBackThoughTheNodeStaysCordoned(t *testing.T) {
	h := newHarness(t, "leaserb")
	node := h.node("w1")
	p := h.policy("p", nil)
	h.runKubelet(kubelet{outcome: func(*corev1.Pod) *v1alpha1.ExecutorResult {
		return &v1alpha1.ExecutorResult{Outcome: v1alpha1.OutcomeRolledBack, Message: "plugin still refuses the version"}
	}})
	nr := h.remediation("nr", node.Name, p, v1alpha1.SignatureCNIVersionIncompatible)
	h.waitPhase(nr.Name, v1alpha1.PhaseRolledBack)
	h.leaseGivenBack(node.Name, "the rollback")
	if !h.getNode(node.Name).Spec.Unschedulable {
		t.Fatal("the node was uncordoned after a rollback")
	}
}
