package detection

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
	"github.com/cnimedic/cnimedic/internal/signature"
)

// Node conditions as other tools write them. envtest runs neither node-problem-detector nor a cloud route
// controller: the tests write the conditions they write, with the admin's credentials (a tenant cannot:
// TestATenantCannotSetANodeCondition).
const (
	// node-problem-detector's systemd-monitor-counter.json names the condition and its reasons
	// (https://github.com/kubernetes/node-problem-detector/blob/master/config/systemd-monitor-counter.json); the
	// message is what its log-counter plugin prints when the count is reached
	// (https://github.com/kubernetes/node-problem-detector/blob/master/cmd/logcounter/log_counter.go).
	condFrequentContainerdRestart = "FrequentContainerdRestart"
	msgFrequentContainerdRestart  = "Found 5 matching logs, which meets the threshold of 5"
	msgContainerdHealthy          = "containerd is functioning properly"
	// The cloud route controller's NetworkUnavailable
	// (https://github.com/kubernetes/cloud-provider/blob/master/controllers/route/route_controller.go).
	msgNoRouteCreated = "RouteController failed to create a route"
	msgRouteCreated   = "RouteController created a route"
)

// setCondition writes one node condition as its owner does (the other conditions stay), its transition at since.
func (h *harness) setCondition(node string, typ corev1.NodeConditionType, status corev1.ConditionStatus, reason, msg string, since time.Time) {
	h.t.Helper()
	n := &corev1.Node{}
	if err := h.c.Get(h.ctx, types.NamespacedName{Name: node}, n); err != nil {
		h.t.Fatal(err)
	}
	c := corev1.NodeCondition{Type: typ, Status: status, Reason: reason, Message: msg,
		LastHeartbeatTime: metav1.Now(), LastTransitionTime: metav1.NewTime(since)}
	replaced := false
	for i := range n.Status.Conditions {
		if n.Status.Conditions[i].Type == typ {
			n.Status.Conditions[i], replaced = c, true
		}
	}
	if !replaced {
		n.Status.Conditions = append(n.Status.Conditions, c)
	}
	if err := h.c.Status().Update(h.ctx, n); err != nil {
		h.t.Fatal(err)
	}
}

// heartbeat moves every condition's lastHeartbeatTime and nothing else, as kubelet and node-problem-detector do
// on every status they post.
func (h *harness) heartbeat(node string) {
	h.t.Helper()
	n := &corev1.Node{}
	if err := h.c.Get(h.ctx, types.NamespacedName{Name: node}, n); err != nil {
		h.t.Fatal(err)
	}
	now := metav1.NewTime(time.Now().Add(time.Second)) // metav1.Time has a one-second resolution on the wire
	for i := range n.Status.Conditions {
		n.Status.Conditions[i].LastHeartbeatTime = now
	}
	if err := h.c.Status().Update(h.ctx, n); err != nil {
		h.t.Fatal(err)
	}
}

func (h *harness) reconcilesOf(node string) int32 {
	v, ok := h.reconciles.Load(node)
	if !ok {
		return 0
	}
	return v.(*atomic.Int32).Load()
}

// containerdRestarting is a custom signature a site could give the NPD condition: the node's diagnosis decides.
var containerdRestarting = v1alpha1.CustomSignature{Name: "containerd-restarting", Pattern: "containerd", Action: v1alpha1.ActionDiagnose}

func TestAnNPDConditionMappedToASignatureOpensItsRemediationWithTheConditionAsEvidenceOnlyAfterMinStuckDuration(t *testing.T) {
	h := newHarness(t, "npdcond")
	node := h.node("w1", nil)
	h.policy("p", func(s *v1alpha1.RemediationPolicySpec) {
		s.Detection.MinStuckDuration = &metav1.Duration{Duration: 4 * time.Second}
		s.CustomSignatures = []v1alpha1.CustomSignature{containerdRestarting}
		s.Detection.NodeConditions = []v1alpha1.NodeConditionRule{{Type: condFrequentContainerdRestart,
			Reason: condFrequentContainerdRestart, Signature: containerdRestarting.Name}}
	})
	since := time.Now().Truncate(time.Second)
	h.setCondition(node.Name, condFrequentContainerdRestart, corev1.ConditionTrue, condFrequentContainerdRestart, msgFrequentContainerdRestart, since)

	time.Sleep(2 * time.Second)
	if items := h.remediationsOf(node.Name); len(items) > 0 {
		t.Fatalf("a remediation opened %s after the condition appeared, before minStuckDuration (4s)", time.Since(since))
	}
	nr := h.waitRemediation(node.Name)
	if nr.Spec.Signature != containerdRestarting.Name {
		t.Fatalf("signature %q, want %q", nr.Spec.Signature, containerdRestarting.Name)
	}
	if opened := nr.CreationTimestamp.Time; opened.Before(since.Add(3 * time.Second)) { // one second of wire resolution
		t.Errorf("opened at %s, the condition since %s: before minStuckDuration", opened, since)
	}
	ev := nr.Spec.Evidence
	if len(ev.Conditions) != 1 {
		t.Fatalf("evidence conditions %+v, want the one condition", ev.Conditions)
	}
	c := ev.Conditions[0]
	if c.Type != condFrequentContainerdRestart || c.Status != "True" || c.Reason != condFrequentContainerdRestart ||
		c.Message != msgFrequentContainerdRestart || c.Since == nil || !c.Since.Time.Equal(since) {
		t.Errorf("evidence condition %+v", c)
	}
	if ev.NodeCondition != "" || ev.EventCount != 0 || len(ev.Pods) != 0 {
		t.Errorf("the Ready condition, events or pods in the evidence: %+v", ev)
	}
	if len(ev.SampleMessages) != 1 || !strings.Contains(ev.SampleMessages[0], msgFrequentContainerdRestart) {
		t.Errorf("sample messages %q", ev.SampleMessages)
	}
}

func TestAConditionMappedToNoSignatureOpensTheUnclassifiedFamily(t *testing.T) {
	h := newHarness(t, "famcond")
	node := h.node("w1", nil)
	h.policy("p", func(s *v1alpha1.RemediationPolicySpec) {
		s.Detection.NodeConditions = []v1alpha1.NodeConditionRule{{Type: string(corev1.NodeNetworkUnavailable)}}
	})
	h.setCondition(node.Name, corev1.NodeNetworkUnavailable, corev1.ConditionTrue, "NoRouteCreated", msgNoRouteCreated, time.Now())
	nr := h.waitRemediation(node.Name)
	if nr.Spec.Signature != string(v1alpha1.SignatureCNIUnclassified) {
		t.Fatalf("signature %q, want the cni-unclassified family (the node's diagnosis decides)", nr.Spec.Signature)
	}
	if ev := nr.Spec.Evidence; len(ev.Conditions) != 1 || ev.Conditions[0].Type != "NetworkUnavailable" || ev.Conditions[0].Reason != "NoRouteCreated" {
		t.Errorf("evidence %+v", ev)
	}
}

func TestAConditionNoRuleMapsOpensNothing(t *testing.T) {
	h := newHarness(t, "unmapped")
	node := h.node("w1", nil)
	h.policy("p", func(s *v1alpha1.RemediationPolicySpec) {
		s.Detection.NodeConditions = []v1alpha1.NodeConditionRule{
			// NetworkUnavailable is False on a healthy node: the rule maps True (its default status).
			{Type: string(corev1.NodeNetworkUnavailable)},
			// The reason must match exactly.
			{Type: condFrequentContainerdRestart, Reason: "SomeOtherReason"},
		}
	})
	h.setCondition(node.Name, corev1.NodeNetworkUnavailable, corev1.ConditionFalse, "RouteCreated", msgRouteCreated, time.Now().Add(-time.Hour))
	h.setCondition(node.Name, condFrequentContainerdRestart, corev1.ConditionTrue, condFrequentContainerdRestart, msgFrequentContainerdRestart, time.Now().Add(-time.Hour))
	// A condition type no rule names, held for an hour.
	h.setCondition(node.Name, "FrequentKubeletRestart", corev1.ConditionTrue, "FrequentKubeletRestart", msgFrequentContainerdRestart, time.Now().Add(-time.Hour))
	h.assertNone(node.Name, "conditions no rule maps")
}

func TestAConditionThatClearsBeforeMinStuckDurationOpensNothing(t *testing.T) {
	h := newHarness(t, "clears")
	node := h.node("w1", nil)
	h.policy("p", func(s *v1alpha1.RemediationPolicySpec) {
		s.Detection.MinStuckDuration = &metav1.Duration{Duration: 3 * time.Second}
		s.Detection.NodeConditions = []v1alpha1.NodeConditionRule{{Type: condFrequentContainerdRestart}}
	})
	h.setCondition(node.Name, condFrequentContainerdRestart, corev1.ConditionTrue, condFrequentContainerdRestart, msgFrequentContainerdRestart, time.Now())
	time.Sleep(time.Second)
	h.setCondition(node.Name, condFrequentContainerdRestart, corev1.ConditionFalse, "NoFrequentContainerdRestart", msgContainerdHealthy, time.Now())
	time.Sleep(3 * time.Second)
	h.assertNone(node.Name, "a condition that held for a second, under minStuckDuration (3s)")
}

// TestHeartbeatOnlyNodeUpdatesDoNotReconcile: node-problem-detector and kubelet rewrite every condition's
// lastHeartbeatTime on each status they post; only a change of a mapped condition wakes the detection.
func TestHeartbeatOnlyNodeUpdatesDoNotReconcile(t *testing.T) {
	h := newHarness(t, "heartbeat")
	node := h.node("w1", nil)
	h.policy("p", func(s *v1alpha1.RemediationPolicySpec) {
		s.Detection.NodeConditions = []v1alpha1.NodeConditionRule{{Type: condFrequentContainerdRestart}}
	})
	// The healthy state node-problem-detector keeps posting.
	h.setCondition(node.Name, condFrequentContainerdRestart, corev1.ConditionFalse, "NoFrequentContainerdRestart", msgContainerdHealthy, time.Now().Add(-time.Hour))
	deadline := time.Now().Add(10 * time.Second)
	for h.reconcilesOf(node.Name) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the node was never reconciled: the test's counter hears nothing")
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(time.Second) // the node's creation and first statuses settle
	before := h.reconcilesOf(node.Name)
	for i := 0; i < 3; i++ {
		h.heartbeat(node.Name)
		time.Sleep(1100 * time.Millisecond)
	}
	if got := h.reconcilesOf(node.Name); got != before {
		t.Fatalf("%d reconciles after heartbeat-only updates, want none", got-before)
	}
	// Nor does a change of a condition no policy maps.
	h.setCondition(node.Name, "FrequentKubeletRestart", corev1.ConditionTrue, "FrequentKubeletRestart", msgFrequentContainerdRestart, time.Now())
	time.Sleep(1100 * time.Millisecond)
	if got := h.reconcilesOf(node.Name); got != before {
		t.Fatalf("%d reconciles after a change of a condition no policy maps, want none", got-before)
	}
	// A change of the mapped condition does reconcile (the counter works).
	h.setCondition(node.Name, condFrequentContainerdRestart, corev1.ConditionTrue, condFrequentContainerdRestart, msgFrequentContainerdRestart, time.Now())
	deadline = time.Now().Add(10 * time.Second)
	for h.reconcilesOf(node.Name) == before {
		if time.Now().After(deadline) {
			t.Fatal("a change of the mapped condition's status did not reconcile the node")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestATenantCannotSetANodeCondition checks the ground conditions stand on (docs/security.md), as a real user bound
// to the built-in edit role: nodes/status is not its to write, so it cannot make a mapped condition appear.
func TestATenantCannotSetANodeCondition(t *testing.T) {
	h := newHarness(t, "tenantcond")
	node := h.node("w1", nil)
	tn := h.tenant("tenant")
	n := &corev1.Node{}
	if err := h.c.Get(h.ctx, types.NamespacedName{Name: node.Name}, n); err != nil {
		t.Fatal(err)
	}
	n.Status.Conditions = append(n.Status.Conditions, corev1.NodeCondition{Type: corev1.NodeNetworkUnavailable, Status: corev1.ConditionTrue,
		Reason: "NoRouteCreated", Message: msgNoRouteCreated, LastHeartbeatTime: metav1.Now(), LastTransitionTime: metav1.Now()})
	if err := tn.c.Status().Update(h.ctx, n); !apierrors.IsForbidden(err) {
		t.Fatalf("a tenant with edit updating nodes/status: got %v, want Forbidden", err)
	}
	patch := []byte(`{"status":{"conditions":[{"type":"NetworkUnavailable","status":"True","reason":"NoRouteCreated"}]}}`)
	if err := tn.c.Status().Patch(context.Background(), n, client.RawPatch(types.StrategicMergePatchType, patch)); !apierrors.IsForbidden(err) {
		t.Fatalf("a tenant with edit patching nodes/status: got %v, want Forbidden", err)
	}
}

// TestTheStoreKeepsEveryConditionOfANodeAtOnce: the Ready condition and two mapped conditions hold together, two of
// them of one signature; each is kept, and one that clears leaves the others.
func TestTheStoreKeepsEveryConditionOfANodeAtOnce(t *testing.T) {
	s := newStore(time.Hour)
	t0 := time.Now().Add(-10 * time.Minute)
	unclassified := signature.Result{Signature: string(v1alpha1.SignatureCNIUnclassified), Family: true}
	seen := []conditionSeen{
		{key: readyKey, res: signature.Result{Signature: string(v1alpha1.SignatureCNINotInitialized)}, message: msgNotReady, since: t0},
		{key: "NetworkUnavailable", res: unclassified, message: "node condition NetworkUnavailable=True", since: t0.Add(time.Minute),
			detail: &v1alpha1.ConditionEvidence{Type: "NetworkUnavailable", Status: "True"}},
		{key: condFrequentContainerdRestart, res: unclassified, message: "node condition FrequentContainerdRestart=True", since: t0.Add(2 * time.Minute),
			detail: &v1alpha1.ConditionEvidence{Type: condFrequentContainerdRestart, Status: "True"}},
	}
	s.observeConditions("w1", seen)
	w := window{now: time.Now(), from: time.Now().Add(-time.Hour)}
	cands, _ := s.snapshot("w1", w)
	bySig := map[string]candidate{}
	for _, c := range cands {
		bySig[c.signature] = c
	}
	if c := bySig[string(v1alpha1.SignatureCNINotInitialized)]; c.readyMessage != msgNotReady || len(c.conditions) != 0 {
		t.Errorf("the Ready condition's candidate: %+v", c)
	}
	fam := bySig[string(v1alpha1.SignatureCNIUnclassified)]
	if len(fam.conditions) != 2 || fam.readyMessage != "" || !fam.conditionBegan.Equal(t0.Add(time.Minute)) {
		t.Fatalf("the family's candidate keeps both conditions, counted from the earlier: %+v", fam)
	}
	if got := s.confirmedNodesWith(string(v1alpha1.SignatureCNIUnclassified), w.from); len(got) != 1 {
		t.Errorf("a storm counts the node its own conditions confirm: %v", got)
	}

	s.observeConditions("w1", seen[:2]) // FrequentContainerdRestart cleared
	cands, _ = s.snapshot("w1", w)
	for _, c := range cands {
		if c.signature == string(v1alpha1.SignatureCNIUnclassified) && (len(c.conditions) != 1 || c.conditions[0].Type != "NetworkUnavailable") {
			t.Errorf("after one cleared: %+v", c.conditions)
		}
	}
	s.observeConditions("w1", nil)
	if cands, _ = s.snapshot("w1", w); len(cands) != 0 {
		t.Errorf("no condition holds, yet %d candidates", len(cands))
	}
}
