package detection

import (
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
)

// A storm counts only the nodes that confirm the failure themselves: pods bound to the node whose kubelet-written
// status shows the sandbox failing for minStuckDuration, or the node's own Ready condition. Events name the node
// their writer chooses, and a tenant with edit may write them.

// stormOf reads the policy's storm: whether StormActive is True, and status.storm.
func (h *harness) stormOf(p *v1alpha1.RemediationPolicy) (bool, *v1alpha1.StormStatus) {
	h.t.Helper()
	cur := &v1alpha1.RemediationPolicy{}
	if err := h.c.Get(h.ctx, types.NamespacedName{Name: p.Name}, cur); err != nil {
		h.t.Fatal(err)
	}
	return meta.IsStatusConditionTrue(cur.Status.Conditions, v1alpha1.PolicyStormActive), cur.Status.Storm
}

// stormAtTwoNodes is the storm setting of TestStormOpensNothingAndSaysWhy: of four covered nodes, two make a storm.
func stormAtTwoNodes(s *v1alpha1.RemediationPolicySpec) {
	s.Storm.ThresholdPercent = 25
	s.Storm.MinNodes = 2
	s.Storm.Cooldown = &metav1.Duration{Duration: time.Hour}
}

// TestForgedEventsAboutManyNodesDoNotMakeAStorm: a tenant bound to edit pins a pod to each of three healthy nodes
// and forges FailedCreatePodSandBox events about it and about a running pod of another namespace on the same node
// (core/v1 with the node as source host, events.k8s.io/v1 reporting as the node's kubelet, 50 occurrences each),
// while a fourth node really fails (its pod's kubelet-written status shows the sandbox not ready). Three of four
// nodes would be a storm under the policy; none of the three confirms anything, so no storm holds the policy and
// the failing node gets its NodeRemediation. Before this rule the forged events made a storm, and the real node got
// nothing. Once kubelet's status shows the tenant's pods failing too, the same events make a storm.
func TestForgedEventsAboutManyNodesDoNotMakeAStorm(t *testing.T) {
	h := newHarness(t, "forgedstorm")
	var healthy []*corev1.Node
	for i := range 3 {
		healthy = append(healthy, h.node(fmt.Sprintf("ok%d", i), nil))
	}
	broken := h.node("broken", nil)
	p := h.policy("p", stormAtTwoNodes)
	tn := h.tenant("tenant")

	var baits []*corev1.Pod
	for i, n := range healthy {
		bait := h.podOn(tn.c, tn.ns, "bait-"+n.Name, n.Name)
		switch i { // what a healthy node's kubelet shows of a pod: sandbox up, image not pulled; running; not reported yet
		case 0:
			h.kubeletStatus(bait, sandboxReadyImageNotPulled(time.Now().Add(-time.Hour)))
		case 1:
			h.kubeletStatus(bait, running(time.Now().Add(-time.Hour)))
		}
		victim := h.podOn(h.c, h.ns, "victim-"+n.Name, n.Name)
		h.kubeletStatus(victim, running(time.Now().Add(-time.Hour)))
		tn.forge(t, "FailedCreatePodSandBox", msgIncompatible, bait, victim)
		baits = append(baits, bait)
	}
	// The forged events reach the detection (and are counted again every 200ms) before the real failure shows.
	time.Sleep(time.Second)

	pod := h.stuckPod("web", broken.Name)
	h.kubeletEvent(pod, "FailedCreatePodSandBox", msgIncompatible, 5, time.Now())
	nr := h.waitRemediation(broken.Name)
	if nr.Spec.Signature != string(v1alpha1.SignatureCNIVersionIncompatible) || len(nr.Spec.Evidence.Pods) != 1 || nr.Spec.Evidence.Pods[0].Name != "web" {
		t.Fatalf("signature %s, evidence %+v", nr.Spec.Signature, nr.Spec.Evidence)
	}
	// Many recounts of every node, each of which checks the storm again.
	time.Sleep(2 * time.Second)
	if active, st := h.stormOf(p); active || st != nil {
		t.Fatalf("forged events about %d healthy nodes made a storm: StormActive %v, status.storm %+v", len(healthy), active, st)
	}
	for _, n := range healthy {
		if items := h.remediationsOf(n.Name); len(items) > 0 {
			t.Fatalf("forged events opened %s on healthy node %s", items[0].Name, n.Name)
		}
	}

	// The same events once each node's kubelet shows the tenant's pod failing: a storm, counting all four nodes.
	for _, bait := range baits {
		cur := &corev1.Pod{}
		if err := h.c.Get(h.ctx, types.NamespacedName{Namespace: bait.Namespace, Name: bait.Name}, cur); err != nil {
			t.Fatal(err)
		}
		h.kubeletStatus(cur, sandboxNotReady(time.Now()))
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		active, st := h.stormOf(p)
		if active && st != nil && st.Signature == string(v1alpha1.SignatureCNIVersionIncompatible) && st.Nodes == 4 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no storm once kubelet confirms the failure on every node: StormActive %v, status.storm %+v", active, st)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestAStormCountsTheNodesKubeletConfirmsEvenBelowTheirThresholds: a real storm still holds the policy when most
// nodes' failures stay under the per-node thresholds (one event each, under minOccurrences 5) and no repair is
// opened for them: each node whose pod's kubelet-written status has shown the sandbox failing for minStuckDuration
// counts. A node whose pod has failed for less than minStuckDuration does not count yet.
func TestAStormCountsTheNodesKubeletConfirmsEvenBelowTheirThresholds(t *testing.T) {
	h := newHarness(t, "realstorm")
	var nodes []*corev1.Node
	for i := range 4 {
		nodes = append(nodes, h.node(fmt.Sprintf("w%d", i), nil))
	}
	p := h.policy("p", func(s *v1alpha1.RemediationPolicySpec) {
		stormAtTwoNodes(s)
		s.Detection.MinOccurrences = 5
		s.Detection.MinStuckDuration = &metav1.Duration{Duration: time.Minute}
	})
	failing := func(n *corev1.Node, since time.Time, events int32) {
		pod := h.podOn(h.c, h.ns, "web-"+n.Name, n.Name)
		h.kubeletStatus(pod, sandboxNotReady(since))
		h.kubeletEvent(pod, "FailedCreatePodSandBox", msgIncompatible, events, time.Now())
	}
	longAgo := time.Now().Add(-time.Hour)
	failing(nodes[1], longAgo, 1)
	failing(nodes[2], longAgo, 1)
	failing(nodes[3], time.Now(), 5) // failing for less than minStuckDuration: not confirmed yet
	time.Sleep(time.Second)
	failing(nodes[0], longAgo, 5) // the one node over the thresholds

	deadline := time.Now().Add(20 * time.Second)
	for {
		active, st := h.stormOf(p)
		if active && st != nil && st.Nodes >= 3 {
			if st.Signature != string(v1alpha1.SignatureCNIVersionIncompatible) || st.Nodes != 3 {
				t.Fatalf("storm status %+v: want the three confirmed nodes", st)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no storm of the three confirmed nodes: StormActive %v, status.storm %+v", active, st)
		}
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(time.Second)
	if _, st := h.stormOf(p); st == nil || st.Nodes != 3 {
		t.Fatalf("storm status %+v: a node whose pod failed for less than minStuckDuration was counted", st)
	}
	opened := 0
	for _, n := range nodes {
		opened += len(h.remediationsOf(n.Name))
	}
	if opened > 1 {
		t.Fatalf("%d remediations opened in a storm", opened)
	}
}
