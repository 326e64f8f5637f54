package detection

import (
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
	"github.com/cnimedic/cnimedic/internal/signature"
)

func readyToStart(status corev1.ConditionStatus, since time.Time) corev1.PodCondition {
	return corev1.PodCondition{Type: corev1.PodReadyToStartContainers, Status: status, LastTransitionTime: metav1.NewTime(since)}
}

// Only what kubelet writes in a pod's status (and the deletion timestamp the API server sets) says that a pod's
// sandbox fails; the pod's spec, which a tenant writes, says nothing.
func TestOnlyTheKubeletWrittenStatusSaysASandboxFails(t *testing.T) {
	t0 := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	deleted := metav1.NewTime(t0.Add(30 * time.Second))
	cases := []struct {
		name  string
		pod   corev1.Pod
		since time.Time
		ok    bool
	}{
		{"a pending pod that kubelet never reported on (spec only)", corev1.Pod{Status: corev1.PodStatus{Phase: corev1.PodPending}}, time.Time{}, false},
		{"a pending pod whose sandbox is ready (an image that never pulls)",
			corev1.Pod{Status: corev1.PodStatus{Phase: corev1.PodPending, Conditions: []corev1.PodCondition{readyToStart(corev1.ConditionTrue, t0)}}}, time.Time{}, false},
		{"a pending pod whose sandbox is not ready: since the condition's transition",
			corev1.Pod{Status: corev1.PodStatus{Phase: corev1.PodPending, Conditions: []corev1.PodCondition{readyToStart(corev1.ConditionFalse, t0)}}}, t0, true},
		{"a running pod whose sandbox died and is not recreated",
			corev1.Pod{Status: corev1.PodStatus{Phase: corev1.PodRunning, Conditions: []corev1.PodCondition{readyToStart(corev1.ConditionFalse, t0)}}}, t0, true},
		{"a completed pod (its sandbox is gone on purpose)",
			corev1.Pod{Status: corev1.PodStatus{Phase: corev1.PodSucceeded, Conditions: []corev1.PodCondition{readyToStart(corev1.ConditionFalse, t0)}}}, time.Time{}, false},
		{"a deleted pod kubelet cannot tear down: since its grace period ended",
			corev1.Pod{ObjectMeta: metav1.ObjectMeta{DeletionTimestamp: &deleted}, Status: corev1.PodStatus{Phase: corev1.PodRunning}}, deleted.Time, true},
		{"a deleted pod kubelet tore down, held by a finalizer",
			corev1.Pod{ObjectMeta: metav1.ObjectMeta{DeletionTimestamp: &deleted, Finalizers: []string{"tenant.example/hold"}}, Status: corev1.PodStatus{Phase: corev1.PodFailed}}, time.Time{}, false},
		{"a static pod's mirror being deleted (kubelet never makes static pods terminal)",
			corev1.Pod{ObjectMeta: metav1.ObjectMeta{DeletionTimestamp: &deleted, Annotations: map[string]string{mirrorAnnotation: "x"}}, Status: corev1.PodStatus{Phase: corev1.PodRunning}}, time.Time{}, false},
	}
	for _, c := range cases {
		since, ok := SandboxFailureSince(&c.pod)
		if ok != c.ok || !since.Equal(c.since) {
			t.Errorf("%s: (%s, %v), want (%s, %v)", c.name, since, ok, c.since, c.ok)
		}
	}
}

// A snapshot's events and pods are what the events claim; confirm keeps the pods bound to the node whose status has
// shown the failure for minStuck, and only their occurrences, parameters and messages, and says when the next one
// will have.
func TestOnlyConfirmedPodsAndTheirEventsCount(t *testing.T) {
	t0 := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	const minStuck = time.Minute
	s := newStore(time.Hour)
	res := signature.Result{Signature: "cni-version-incompatible"}
	ref := func(ns, name string) *v1alpha1.PodReference { return &v1alpha1.PodReference{Namespace: ns, Name: name} }
	said := func(k, v string) signature.Result {
		return signature.Result{Signature: res.Signature, Params: map[string]string{k: v}}
	}
	s.observeEvent("w1", "ev-stuck", 4, t0.Add(-time.Minute), ref("a", "stuck"), "uid-stuck", said("configVersion", "1.0.0"), "stuck says")
	s.observeEvent("w1", "ev-old-incarnation", 7, t0.Add(-time.Minute), ref("a", "stuck"), "uid-before", res, "stuck says")
	s.observeEvent("w1", "ev-fresh", 2, t0, ref("a", "fresh"), "", said("network", "fresh"), "fresh says")
	s.observeEvent("w1", "ev-healthy", 50, t0, ref("a", "healthy"), "", said("bridge", "docker0"), "healthy says")
	s.observeEvent("w1", "ev-elsewhere", 50, t0, ref("b", "elsewhere"), "", said("network", "elsewhere"), "elsewhere says")
	s.observeEvent("w1", "ev-nopod", 50, t0, nil, "", said("link", "eth0"), "nobody says")
	cands, _ := s.snapshot("w1", window{now: t0, from: t0.Add(-10 * time.Minute)})
	if len(cands) != 1 || cands[0].events != 4+7+2+50+50+50 || len(cands[0].pods) != 4 {
		t.Fatalf("snapshot %+v: want every claim as an upper bound", cands)
	}
	pod := func(ns, name, uid string, conds ...corev1.PodCondition) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID(uid)},
			Status: corev1.PodStatus{Phase: corev1.PodPending, Conditions: conds}}
	}
	live := map[v1alpha1.PodReference]*corev1.Pod{
		*ref("a", "stuck"):   pod("a", "stuck", "uid-stuck", readyToStart(corev1.ConditionFalse, t0.Add(-2*time.Minute))),
		*ref("a", "fresh"):   pod("a", "fresh", "uid-fresh", readyToStart(corev1.ConditionFalse, t0.Add(-20*time.Second))),
		*ref("a", "healthy"): pod("a", "healthy", "uid-healthy", readyToStart(corev1.ConditionTrue, t0.Add(-time.Hour))),
		// b/elsewhere is not bound to the node: podsOn does not list it.
	}
	c := cands[0]
	c.confirm(live, true, t0, minStuck)
	if len(c.pods) != 1 || c.pods[0] != *ref("a", "stuck") || c.events != 4 {
		t.Fatalf("confirmed pods %v, events %d: want a/stuck and its own 4 occurrences", c.pods, c.events)
	}
	if len(c.params) != 1 || c.params["configVersion"] != "1.0.0" || len(c.samples) != 1 || c.samples[0] != "stuck says" {
		t.Errorf("params %v, samples %q: want only what a/stuck's events said", c.params, c.samples)
	}
	if !c.ripens.Equal(t0.Add(40 * time.Second)) {
		t.Errorf("ripens %s, want when a/fresh has shown the failure for minStuck (t0+40s)", c.ripens)
	}
	if !c.first.Equal(t0.Add(-time.Minute)) || !c.last.Equal(t0.Add(-time.Minute)) {
		t.Errorf("first %s last %s: want the confirmed events' times", c.first, c.last)
	}

	// A node whose kubelet stopped reporting (Ready Unknown) confirms nothing through its pods' last status.
	cands, _ = s.snapshot("w1", window{now: t0, from: t0.Add(-10 * time.Minute)})
	c = cands[0]
	c.confirm(live, false, t0, minStuck)
	if len(c.pods) != 0 || c.events != 0 {
		t.Fatalf("confirmed %v (%d events) on a node whose kubelet is not heard from", c.pods, c.events)
	}
}
