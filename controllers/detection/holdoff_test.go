package detection

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
	"github.com/cnimedic/cnimedic/internal/signature"
)

// msgFlannelMissing is kubelet's message when the vendor plugin's binary is missing (issue 17: escalated, then
// reopened every 5-15 s under retry.cooldown 0s).
const msgFlannelMissing = `Failed to create pod sandbox: rpc error: code = Unknown desc = failed to setup network for sandbox "5d1c": plugin type="flannel" failed (add): failed to find plugin "flannel" in path [/opt/cni/bin]`

// end writes a finished phase on the remediation as the workflow would (there is no workflow in these suites).
func (h *harness) end(nr *v1alpha1.NodeRemediation, phase v1alpha1.Phase, reason string, at time.Time) {
	h.t.Helper()
	cur := &v1alpha1.NodeRemediation{}
	if err := h.c.Get(h.ctx, client.ObjectKeyFromObject(nr), cur); err != nil {
		h.t.Fatal(err)
	}
	cur.Status.Phase, cur.Status.Reason = phase, reason
	cur.Status.CompletionTime = &metav1.Time{Time: at}
	cur.Status.History = append(cur.Status.History, v1alpha1.PhaseTransition{Phase: phase, Reason: reason, Time: metav1.NewTime(at)})
	if err := h.c.Status().Update(h.ctx, cur); err != nil {
		h.t.Fatal(err)
	}
}

// repeat posts kubelet's repeated failure events about the pod for d, one new event every 200ms (kubelet's retries
// of a sandbox that keeps failing).
func (h *harness) repeat(pod *corev1.Pod, reason, msg string, d time.Duration) {
	h.t.Helper()
	for deadline := time.Now().Add(d); time.Now().Before(deadline); {
		h.kubeletEvent(pod, reason, msg, 3, time.Now())
		time.Sleep(200 * time.Millisecond)
	}
}

func (h *harness) eventsAbout(name, reason string) []corev1.Event {
	h.t.Helper()
	list := &corev1.EventList{}
	if err := h.c.List(h.ctx, list); err != nil {
		h.t.Fatal(err)
	}
	var out []corev1.Event
	for _, e := range list.Items {
		if e.InvolvedObject.Name == name && e.Reason == reason {
			out = append(out, e)
		}
	}
	return out
}

// Issue 17 item 3: an escalated failure that persists is escalated once, whatever retry.cooldown says, and the
// hold is said in an event on the escalated remediation.
func TestAVendorPluginEscalationUnderCooldownZeroOpensOneRemediation(t *testing.T) {
	h := newHarness(t, "escalateonce")
	node := h.node("w1", nil)
	h.policy("p", func(s *v1alpha1.RemediationPolicySpec) { s.Retry.Cooldown = &metav1.Duration{} })
	pod := h.stuckPod("web", node.Name)
	h.kubeletEvent(pod, "FailedCreatePodSandBox", msgFlannelMissing, 5, time.Now())
	nr := h.waitRemediation(node.Name)
	if nr.Spec.Signature != string(v1alpha1.SignaturePluginBinaryMissing) {
		t.Fatalf("signature %s", nr.Spec.Signature)
	}
	h.end(&nr, v1alpha1.PhaseEscalated, "Escalated", time.Now())

	// The failure persists: the pod stays stuck, kubelet keeps reporting it (and a second pod joins it).
	h.repeat(pod, "FailedCreatePodSandBox", msgFlannelMissing, 2*time.Second)
	h.repeat(h.stuckPod("api", node.Name), "FailedCreatePodSandBox", msgFlannelMissing, time.Second)
	if items := h.remediationsOf(node.Name); len(items) != 1 {
		t.Fatalf("%d remediations for one persisting escalated failure, want 1", len(items))
	}
	held := h.eventsAbout(nr.Name, ReasonIncidentHeldOff)
	if len(held) == 0 || !strings.Contains(held[0].Message, "not opened again while it persists") {
		t.Fatalf("no IncidentHeldOff event on %s saying why: %+v", nr.Name, held)
	}
}

// Issue 17 item 4: after an escalation (under the default 30m cooldown), another failure on the same node opens
// its own remediation.
func TestADifferentFailureAfterAnEscalationOpensItsOwnRemediation(t *testing.T) {
	h := newHarness(t, "escalatethen")
	node := h.node("w1", nil)
	h.policy("p", nil)
	pod := h.stuckPod("web", node.Name)
	h.kubeletEvent(pod, "FailedCreatePodSandBox", msgFlannelMissing, 5, time.Now())
	first := h.waitRemediation(node.Name)
	h.end(&first, v1alpha1.PhaseEscalated, "Escalated", time.Now())

	h.kubeletEvent(h.stuckPod("db", node.Name), "FailedCreatePodSandBox", msgIPAM, 5, time.Now().Add(time.Second))
	deadline := time.Now().Add(20 * time.Second)
	for {
		var sigs []string
		for _, nr := range h.remediationsOf(node.Name) {
			sigs = append(sigs, nr.Spec.Signature)
			if nr.Spec.Signature == string(v1alpha1.SignatureIPAMExhausted) {
				if nr.Spec.Evidence.PodCount != 1 || nr.Spec.Evidence.Pods[0].Name != "db" {
					t.Fatalf("the new incident's evidence %+v, want pod db only", nr.Spec.Evidence)
				}
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no remediation for the different failure; the node has %v", sigs)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Issue 17 item 6: what a finished remediation consumed (its events, pods and messages) is not counted or quoted
// by the next incident of the node.
func TestANewIncidentAfterASuccessCarriesNoneOfTheOldEvidence(t *testing.T) {
	h := newHarness(t, "consumed")
	node := h.node("w1", nil)
	h.policy("p", func(s *v1alpha1.RemediationPolicySpec) { s.Detection.MinOccurrences = 2 })
	web, api := h.stuckPod("web", node.Name), h.stuckPod("api", node.Name)
	h.kubeletEvent(web, "FailedCreatePodSandBox", msgIncompatible, 40, time.Now())
	h.kubeletEvent(api, "FailedCreatePodSandBox", msgIncompatible, 11, time.Now())
	first := h.waitRemediation(node.Name)
	h.end(&first, v1alpha1.PhaseSucceeded, "Verified", time.Now())
	// Nothing opens on the consumed evidence alone. (Times in the API have whole seconds: the new event below must
	// come in a later second than the end.)
	time.Sleep(2 * time.Second)
	if items := h.remediationsOf(node.Name); len(items) != 1 {
		t.Fatalf("%d remediations after the success with no new evidence, want 1", len(items))
	}

	// api recovered; web fails again, a new way.
	h.kubeletStatus(api, running(time.Now()))
	newer := strings.ReplaceAll(msgIncompatible, `config is "1.0.0"`, `config is "1.1.0"`)
	h.kubeletEvent(web, "FailedCreatePodSandBox", newer, 2, time.Now())
	deadline := time.Now().Add(20 * time.Second)
	for {
		for _, nr := range h.remediationsOf(node.Name) {
			if nr.Name == first.Name {
				continue
			}
			ev := nr.Spec.Evidence
			if ev.EventCount != 2 || ev.PodCount != 1 || len(ev.SampleMessages) != 1 || !strings.Contains(ev.SampleMessages[0], `"1.1.0"`) ||
				nr.Spec.Parameters["configVersion"] != "1.1.0" {
				t.Fatalf("the new incident carries old evidence: %+v, parameters %v", ev, nr.Spec.Parameters)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("no new incident after the success")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Evidence consumed by a finished remediation stays consumed when the events are listed again (a restart of the
// manager lists kubelet's events of the last hour), and a node condition counts toward minStuckDuration only from
// the end.
func TestConsumedEvidenceDoesNotCountAgainWhenItsEventsAreListedAgain(t *testing.T) {
	t0 := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	end := t0.Add(time.Minute)
	res := signature.Result{Signature: string(v1alpha1.SignatureCNIVersionIncompatible), Params: map[string]string{"configVersion": "1.0.0"}}
	web := &v1alpha1.PodReference{Namespace: "a", Name: "web"}
	w := window{now: end.Add(time.Minute), from: t0.Add(-10 * time.Minute)}

	s := newStore(time.Hour)
	s.consume("w1", res.Signature, end) // the cache lists the finished remediation first...
	s.observeEvent("w1", "ev1", 50, t0, web, "", res, "old")
	if cands, _ := s.snapshot("w1", w); len(cands) != 0 {
		t.Fatalf("consumed evidence counted again: %+v", cands)
	}
	s.observeEvent("w1", "ev1", 52, end.Add(10*time.Second), web, "", signature.Result{Signature: res.Signature, Params: map[string]string{"configVersion": "1.1.0"}}, "new")
	cands, _ := s.snapshot("w1", w)
	if len(cands) != 1 || cands[0].events != 2 || cands[0].named[*web].params["configVersion"] != "1.1.0" || len(cands[0].named[*web].samples) != 1 {
		t.Fatalf("after the end only the 2 new occurrences count: %+v", cands)
	}

	// ...or the events came first: consume drops them, their parameters and messages.
	s = newStore(time.Hour)
	s.observeEvent("w1", "ev1", 50, t0, web, "", res, "old")
	s.observeEvent("w1", "ev2", 1, end.Add(time.Second), web, "", signature.Result{Signature: res.Signature, Params: map[string]string{"configVersion": "1.1.0"}}, "new")
	if !s.consume("w1", res.Signature, end) || s.consume("w1", res.Signature, t0) {
		t.Fatal("consume moves the mark forward only")
	}
	cands, _ = s.snapshot("w1", w)
	if len(cands) != 1 || cands[0].events != 1 || cands[0].named[*web].params["configVersion"] != "1.1.0" ||
		len(cands[0].named[*web].samples) != 1 || cands[0].named[*web].samples[0] != "new" {
		t.Fatalf("consume left old evidence: %+v", cands)
	}

	s.observeConditions("w1", []conditionSeen{{key: readyKey, res: signature.Result{Signature: string(v1alpha1.SignatureCNINotInitialized)}, message: msgNotReady, since: t0}})
	s.consume("w1", string(v1alpha1.SignatureCNINotInitialized), end)
	for _, c := range func() []candidate { c, _ := s.snapshot("w1", w); return c }() {
		if c.signature == string(v1alpha1.SignatureCNINotInitialized) && (c.conditionFor != time.Minute || !c.conditionBegan.Equal(t0)) {
			t.Fatalf("condition counts for %s from %s, want 1m from the end (began %s)", c.conditionFor, c.conditionFirst, c.conditionBegan)
		}
	}
}

// What retry.cooldown holds, and what it does not (docs/operations.md, "Retry, cooldown and hold-off").
func TestHoldOffAfterEachEnd(t *testing.T) {
	now := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	p := &v1alpha1.RemediationPolicy{}
	p.Spec.Retry.Cooldown = &metav1.Duration{Duration: 30 * time.Minute}
	ended := func(sig string, phase v1alpha1.Phase, reason string, ago time.Duration) *v1alpha1.NodeRemediation {
		nr := &v1alpha1.NodeRemediation{ObjectMeta: metav1.ObjectMeta{Name: sig + "-" + string(phase), CreationTimestamp: metav1.NewTime(now.Add(-ago - time.Minute))},
			Spec: v1alpha1.NodeRemediationSpec{NodeName: "w1", Signature: sig}}
		nr.Status.Phase, nr.Status.Reason, nr.Status.CompletionTime = phase, reason, &metav1.Time{Time: now.Add(-ago)}
		return nr
	}
	const plugin, ipam = "cni-plugin-binary-missing", "ipam-exhausted"
	persisting := &candidate{signature: plugin, failingSince: now.Add(-10 * time.Hour)}
	recurred := &candidate{signature: plugin, failingSince: now.Add(-time.Second)}
	other := &candidate{signature: ipam, failingSince: now.Add(-time.Hour)}
	cases := []struct {
		name  string
		ended []*v1alpha1.NodeRemediation
		c     *candidate
		held  bool
	}{
		{"nothing ended", nil, persisting, false},
		{"an escalated failure that persists, a minute later", []*v1alpha1.NodeRemediation{ended(plugin, v1alpha1.PhaseEscalated, "Escalated", time.Minute)}, persisting, true},
		{"an escalated failure that persists, hours later (past any cooldown)", []*v1alpha1.NodeRemediation{ended(plugin, v1alpha1.PhaseEscalated, "Escalated", 5*time.Hour)}, persisting, true},
		{"an escalated failure that began again after the end", []*v1alpha1.NodeRemediation{ended(plugin, v1alpha1.PhaseEscalated, "Escalated", time.Minute)}, recurred, false},
		{"a failure the node's diagnosis did not confirm, that persists", []*v1alpha1.NodeRemediation{ended(plugin, v1alpha1.PhaseNotConfirmed, "NotConfirmed", time.Minute)}, persisting, true},
		{"another failure after an escalation", []*v1alpha1.NodeRemediation{ended(plugin, v1alpha1.PhaseEscalated, "Escalated", time.Minute)}, other, false},
		{"any failure after the retry cap", []*v1alpha1.NodeRemediation{ended(plugin, v1alpha1.PhaseEscalated, reasonRetryLimitReached, 5*time.Hour)}, other, true},
		{"any failure inside the cooldown of a rolled-back repair", []*v1alpha1.NodeRemediation{ended(plugin, v1alpha1.PhaseRolledBack, "VerificationFailed", time.Minute)}, other, true},
		{"after the cooldown of a rolled-back repair", []*v1alpha1.NodeRemediation{ended(plugin, v1alpha1.PhaseRolledBack, "VerificationFailed", time.Hour)}, persisting, false},
		{"after a success (the workflow holds its repair for the cooldown)", []*v1alpha1.NodeRemediation{ended(plugin, v1alpha1.PhaseSucceeded, "Verified", time.Minute)}, recurred, false},
	}
	for _, c := range cases {
		if h := holdOff(p, c.ended, c.c, now); (h != nil) != c.held {
			t.Errorf("%s: held %v (%+v), want %v", c.name, h != nil, h, c.held)
		}
	}
}

// slowReader answers a list after a delay and records whether the read's context was cancelled meanwhile.
type slowReader struct {
	client.Reader
	cancelled atomic.Bool
}

func (s *slowReader) List(ctx context.Context, list client.ObjectList, opts ...client.ListOption) error {
	time.Sleep(200 * time.Millisecond)
	if ctx.Err() != nil {
		s.cancelled.Store(true)
		return ctx.Err()
	}
	return s.Reader.List(ctx, list, opts...)
}

// Issue 17 item 8: a count that ends before it needs the node's remediations (nothing qualified, the pods' read
// failed) leaves their live read to finish: cancelling it mid-response made client-go log "Unexpected error when
// reading response body ... context canceled" as an error.
func TestARemediationsReadIsNotCancelledWhenTheCountEndsEarly(t *testing.T) {
	c := fake.NewClientBuilder().WithScheme(scheme.Scheme).Build()
	reader := &slowReader{Reader: c}
	r := &Reconciler{Client: c, APIReader: reader}
	ctx, cancel := context.WithCancel(context.Background())
	rr := r.readRemediations(ctx, "w1")
	cancel() // the reconcile returns
	if _, err := rr.wait(); err != nil || reader.cancelled.Load() {
		t.Fatalf("the read was cancelled with its reconcile: %v", err)
	}
}
