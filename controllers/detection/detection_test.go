package detection

import (
	"fmt"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
)

// Messages as measured on a real node of the lab (docs/lab.md) and in the seed runbooks.
const (
	msgIncompatible = `Failed to create pod sandbox: rpc error: code = Unknown desc = failed to setup network for sandbox "4b6e2a0d8c1f": plugin type="bridge" failed (add): incompatible CNI versions; config is "1.0.0", plugin supports ["0.1.0" "0.2.0" "0.3.0" "0.3.1" "0.4.0"]`
	msgNotReady     = `container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady message:Network plugin returns error: cni plugin not initialized`
	msgIPAM         = `Failed to create pod sandbox: rpc error: code = Unknown desc = failed to setup network for sandbox "9f2c": plugin type="bridge" failed (add): failed to allocate for range 0: no IP addresses available in range set: 10.244.0.200-10.244.0.201`
	msgPullFailed   = `Failed to create pod sandbox: rpc error: code = Unknown desc = failed to get sandbox image "registry.k8s.io/pause:3.9": failed to pull image "registry.k8s.io/pause:3.9": dial tcp: lookup registry.k8s.io: no such host`
)

func TestEventsOpenOneRemediationWithSignatureAndParameters(t *testing.T) {
	h := newHarness(t, "events")
	node := h.node("w1", nil)
	p := h.policy("p", nil)
	pod := h.stuckPod("web", node.Name)
	h.kubeletEvent(pod, "FailedCreatePodSandBox", msgIncompatible, 4, time.Now())

	nr := h.waitRemediation(node.Name)
	if nr.Spec.Signature != string(v1alpha1.SignatureCNIVersionIncompatible) || nr.Spec.PolicyName != p.Name {
		t.Fatalf("signature %s policy %s", nr.Spec.Signature, nr.Spec.PolicyName)
	}
	if got := nr.Spec.Parameters["configVersion"]; got != "1.0.0" {
		t.Errorf("configVersion %q, want 1.0.0", got)
	}
	if got := nr.Spec.Parameters["supportedVersions"]; got != "0.1.0,0.2.0,0.3.0,0.3.1,0.4.0" {
		t.Errorf("supportedVersions %q", got)
	}
	ev := nr.Spec.Evidence
	if ev.EventCount != 4 || ev.PodCount != 1 || len(ev.Pods) != 1 || ev.Pods[0].Name != "web" || len(ev.SampleMessages) != 1 {
		t.Errorf("evidence %+v", ev)
	}
	if nr.Labels[v1alpha1.LabelNode] != node.Name || nr.Labels[v1alpha1.LabelPolicy] != p.Name {
		t.Errorf("labels %v", nr.Labels)
	}

	// More failures of more pods feed the open remediation; none opens a second one.
	pod2 := h.stuckPod("api", node.Name)
	h.kubeletEvent(pod2, "FailedCreatePodSandBox", msgIncompatible, 3, time.Now())
	h.kubeletEvent(pod, "FailedCreatePodSandBox", msgIncompatible, 2, time.Now())
	deadline := time.Now().Add(10 * time.Second)
	for {
		items := h.remediationsOf(node.Name)
		if len(items) != 1 {
			t.Fatalf("%d remediations for one node, want 1", len(items))
		}
		if e := items[0].Spec.Evidence; e.PodCount == 2 && e.EventCount == 9 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("evidence not fed: %+v", items[0].Spec.Evidence)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestNodeConditionOpensCNINotInitialized(t *testing.T) {
	h := newHarness(t, "condition")
	node := h.node("w1", nil)
	h.policy("p", nil)
	h.setReady(node.Name, corev1.ConditionFalse, msgNotReady, time.Now())
	nr := h.waitRemediation(node.Name)
	if nr.Spec.Signature != string(v1alpha1.SignatureCNINotInitialized) || !strings.Contains(nr.Spec.Evidence.NodeCondition, "cni plugin not initialized") {
		t.Fatalf("signature %s, evidence %+v", nr.Spec.Signature, nr.Spec.Evidence)
	}
}

func TestBelowThresholdOpensNothing(t *testing.T) {
	h := newHarness(t, "below")
	node := h.node("w1", nil)
	h.policy("p", func(s *v1alpha1.RemediationPolicySpec) { s.Detection.MinOccurrences = 5; s.Detection.MinPods = 2 })
	h.kubeletEvent(h.stuckPod("web", node.Name), "FailedCreatePodSandBox", msgIncompatible, 4, time.Now())
	h.assertNone(node.Name, "4 events of 1 pod under minOccurrences 5 and minPods 2")
}

func TestStaleEvidenceOpensNothing(t *testing.T) {
	h := newHarness(t, "stale")
	node := h.node("w1", nil)
	h.policy("p", func(s *v1alpha1.RemediationPolicySpec) {
		s.Detection.Window = &metav1.Duration{Duration: 10 * time.Minute}
	})
	h.kubeletEvent(h.stuckPod("web", node.Name), "FailedCreatePodSandBox", msgIncompatible, 50, time.Now().Add(-20*time.Minute))
	h.assertNone(node.Name, "failures last seen 20 minutes ago, outside a 10-minute window")
}

func TestPodsThatRecoveredOpenNothing(t *testing.T) {
	h := newHarness(t, "recovered")
	node := h.node("w1", nil)
	h.policy("p", nil)
	pod := h.stuckPod("web", node.Name)
	h.kubeletStatus(pod, running(time.Now()))
	h.kubeletEvent(pod, "FailedCreatePodSandBox", msgIncompatible, 5, time.Now())
	h.assertNone(node.Name, "the failing pod runs now")
}

func TestBootGraceOpensNothing(t *testing.T) {
	h := newHarness(t, "boot")
	node := h.node("w1", nil)
	h.setReady(node.Name, corev1.ConditionTrue, "kubelet is posting ready status", time.Now()) // just (re)started
	h.policy("p", func(s *v1alpha1.RemediationPolicySpec) {
		s.Detection.BootGracePeriod = &metav1.Duration{Duration: 5 * time.Minute}
	})
	h.kubeletEvent(h.stuckPod("web", node.Name), "FailedCreatePodSandBox", msgIncompatible, 5, time.Now())
	h.assertNone(node.Name, "failures inside the boot grace period")
}

func TestNearMissOpensNothing(t *testing.T) {
	h := newHarness(t, "nearmiss")
	node := h.node("w1", nil)
	h.policy("p", nil)
	h.kubeletEvent(h.stuckPod("web", node.Name), "FailedCreatePodSandBox", msgPullFailed, 10, time.Now())
	h.assertNone(node.Name, "a pause image pull failure is not a CNI failure")
}

func TestPolicyThatDoesNotCoverTheNodeIsIgnored(t *testing.T) {
	h := newHarness(t, "cover")
	covered := h.node("a1", map[string]string{"pool": "a"})
	other := h.node("b1", map[string]string{"pool": "b"})
	h.policy("pa", func(s *v1alpha1.RemediationPolicySpec) {
		s.NodeSelector = &metav1.LabelSelector{MatchLabels: map[string]string{"test": h.prefix, "pool": "a"}}
	})
	h.kubeletEvent(h.stuckPod("b-web", other.Name), "FailedCreatePodSandBox", msgIPAM, 5, time.Now())
	h.kubeletEvent(h.stuckPod("a-web", covered.Name), "FailedCreatePodSandBox", msgIPAM, 5, time.Now())
	nr := h.waitRemediation(covered.Name)
	if nr.Spec.Signature != string(v1alpha1.SignatureIPAMExhausted) {
		t.Fatalf("signature %s", nr.Spec.Signature)
	}
	h.assertNone(other.Name, "no policy covers pool b")
}

func TestDisabledSignatureOpensNothing(t *testing.T) {
	h := newHarness(t, "disabled")
	node := h.node("w1", nil)
	h.policy("p", func(s *v1alpha1.RemediationPolicySpec) {
		s.Signatures = []v1alpha1.SignatureID{v1alpha1.SignatureIPAMExhausted}
	})
	h.kubeletEvent(h.stuckPod("web", node.Name), "FailedCreatePodSandBox", msgIncompatible, 5, time.Now())
	h.assertNone(node.Name, "the policy acts on ipam-exhausted only")
}

func TestStormOpensNothingAndSaysWhy(t *testing.T) {
	h := newHarness(t, "storm")
	var nodes []*corev1.Node
	for i := range 4 {
		nodes = append(nodes, h.node(fmt.Sprintf("w%d", i), nil))
	}
	p := h.policy("p", func(s *v1alpha1.RemediationPolicySpec) {
		s.Storm.ThresholdPercent = 25
		s.Storm.MinNodes = 2
		s.Storm.Cooldown = &metav1.Duration{Duration: time.Hour}
	})
	for _, n := range nodes[:3] {
		h.kubeletEvent(h.stuckPod("web-"+n.Name, n.Name), "FailedCreatePodSandBox", msgIncompatible, 5, time.Now())
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		cur := &v1alpha1.RemediationPolicy{}
		if err := h.c.Get(h.ctx, types.NamespacedName{Name: p.Name}, cur); err != nil {
			t.Fatal(err)
		}
		if meta.IsStatusConditionTrue(cur.Status.Conditions, v1alpha1.PolicyStormActive) {
			if cur.Status.Storm == nil || cur.Status.Storm.Signature != string(v1alpha1.SignatureCNIVersionIncompatible) || cur.Status.Storm.Nodes < 2 {
				t.Fatalf("storm status %+v", cur.Status.Storm)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no storm declared: %+v", cur.Status)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// With minNodes 2, a storm holds as soon as a second node shows the signature: at most one remediation can have been
	// opened before (the first node, while it was alone).
	time.Sleep(time.Second)
	opened := 0
	for _, n := range nodes {
		opened += len(h.remediationsOf(n.Name))
	}
	if opened > 1 {
		t.Fatalf("%d remediations opened in a storm", opened)
	}
	evs := &corev1.EventList{}
	if err := h.c.List(h.ctx, evs); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, e := range evs.Items {
		if e.InvolvedObject.Name == p.Name && e.Reason == ReasonStormDetected && strings.Contains(e.Message, "not fixed node by node") {
			found = true
		}
	}
	if !found {
		t.Error("no StormDetected warning event on the policy")
	}
}

// TestAgentDownIsEscalatedWithTheDaemonSetState: a flannel agent that is down is a cluster-level cause; the
// remediation escalates and says what the provider's DaemonSet shows.
func TestAgentDownIsEscalatedWithTheDaemonSetState(t *testing.T) {
	h := newHarness(t, "agentdown")
	node := h.node("w1", nil)
	h.policy("p", nil)
	labels := map[string]string{"app": "flannel"}
	ds := &appsv1.DaemonSet{
		ObjectMeta: metav1.ObjectMeta{Name: "kube-flannel-ds", Namespace: h.ns},
		Spec: appsv1.DaemonSetSpec{Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "flannel", Image: "flannel:test"}}}}},
	}
	if err := h.c.Create(h.ctx, ds); err != nil {
		t.Fatal(err)
	}
	ds.Status = appsv1.DaemonSetStatus{DesiredNumberScheduled: 3, NumberReady: 1, NumberAvailable: 1, UpdatedNumberScheduled: 3}
	if err := h.c.Status().Update(h.ctx, ds); err != nil {
		t.Fatal(err)
	}
	msg := `Failed to create pod sandbox: rpc error: code = Unknown desc = failed to setup network for sandbox "3c05350cf571": plugin type="flannel" failed (add): loadFlannelSubnetEnv failed: open /run/flannel/subnet.env: no such file or directory`
	h.kubeletEvent(h.stuckPod("web", node.Name), "FailedCreatePodSandBox", msg, 5, time.Now())
	nr := h.waitRemediation(node.Name)
	if nr.Spec.Signature != string(v1alpha1.SignatureDaemonUnavailable) {
		t.Fatalf("signature %s", nr.Spec.Signature)
	}
	if got := nr.Spec.Parameters[v1alpha1.ParamAgentDaemonSet]; got != h.ns+"/kube-flannel-ds" {
		t.Errorf("agentDaemonSet %q", got)
	}
	if got := nr.Spec.Parameters[v1alpha1.ParamAgentState]; got != "3 desired, 1 ready, 1 available, 3 updated" {
		t.Errorf("agentState %q", got)
	}
}
