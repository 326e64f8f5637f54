package detection

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"testing"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
)

// The trust rule, tried as a tenant: a user holding only the built-in edit ClusterRole in its own namespace, with a
// real client certificate and the API server's RBAC deciding.
//
// envtest's kube-apiserver loads the bootstrap roles (its rbac/bootstrap-roles post-start hook), but the built-in
// edit role is an aggregated one: its rules are the union of the roles labelled
// rbac.authorization.k8s.io/aggregate-to-edit (system:aggregate-to-edit, which carries editRules() of the bootstrap
// policy), filled in by kube-controller-manager's clusterrole-aggregation controller, which envtest does not run. So
// edit arrives empty; tenant() does what that controller does, from the API server's own bootstrap roles, rather
// than writing rules by hand. TestATenantWithEditCannotWritePodStatus checks the result grants what
// docs/security.md says: pods and events written, pods/status not.

const msgVersionMissing = `error killing pod: [failed to "KillPodSandbox" for "8d4f0b1e-3a39-4c1e-9d53-6f7c2a1b9e20" with KillPodSandboxError: "rpc error: code = Unknown desc = failed to destroy network for sandbox \"bbc85f891eaf060c5a879e27bba9b6b06450210161dfdecfbb2732959fb6500a\": invalid version \"\": the version is empty"]`

// tenant is a user bound to the built-in edit ClusterRole in one namespace of its own.
type tenant struct {
	ns   string
	c    client.Client
	kube kubernetes.Interface
}

func (h *harness) tenant(name string) *tenant {
	h.t.Helper()
	edit := &rbacv1.ClusterRole{}
	if err := h.c.Get(h.ctx, types.NamespacedName{Name: "edit"}, edit); err != nil {
		h.t.Fatalf("the API server has no built-in edit ClusterRole (bootstrap roles not loaded?): %v", err)
	}
	if len(edit.Rules) == 0 {
		aggregate(h, edit)
	}
	ns := h.name(name)
	if err := h.c.Create(h.ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		h.t.Fatal(err)
	}
	user := "tenant-" + ns
	if err := h.c.Create(h.ctx, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "edit", Namespace: ns},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "edit"},
		Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: user}},
	}); err != nil {
		h.t.Fatal(err)
	}
	cfg, err := env.AddUser(user, "tenants")
	if err != nil {
		h.t.Fatal(err)
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme.Scheme})
	if err != nil {
		h.t.Fatal(err)
	}
	tn := &tenant{ns: ns, c: c, kube: kubernetes.NewForConfigOrDie(cfg)}
	// The API server's RBAC authorizer learns of the binding through its informers: wait until it lets the tenant in.
	deadline := time.Now().Add(20 * time.Second)
	for {
		review := &authorizationv1.SelfSubjectAccessReview{Spec: authorizationv1.SelfSubjectAccessReviewSpec{
			ResourceAttributes: &authorizationv1.ResourceAttributes{Namespace: ns, Verb: "create", Resource: "pods"}}}
		if err := c.Create(h.ctx, review); err == nil && review.Status.Allowed {
			return tn
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("the tenant %s never got the edit role's rights in %s", user, ns)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// aggregate fills an aggregated ClusterRole's rules as kube-controller-manager's clusterrole-aggregation controller
// does: the rules of every ClusterRole its selectors match, in name order, without duplicates.
func aggregate(h *harness, role *rbacv1.ClusterRole) {
	h.t.Helper()
	if role.AggregationRule == nil {
		h.t.Fatalf("ClusterRole %s has no rules and is not aggregated", role.Name)
	}
	var rules []rbacv1.PolicyRule
	for _, sel := range role.AggregationRule.ClusterRoleSelectors {
		matching := &rbacv1.ClusterRoleList{}
		if err := h.c.List(h.ctx, matching, client.MatchingLabels(sel.MatchLabels)); err != nil {
			h.t.Fatal(err)
		}
		sort.Slice(matching.Items, func(i, j int) bool { return matching.Items[i].Name < matching.Items[j].Name })
		for _, m := range matching.Items {
			if m.Name == role.Name {
				continue
			}
			for _, r := range m.Rules {
				if !slices.ContainsFunc(rules, func(o rbacv1.PolicyRule) bool { return equality.Semantic.DeepEqual(o, r) }) {
					rules = append(rules, r)
				}
			}
		}
	}
	if len(rules) == 0 {
		h.t.Fatalf("no ClusterRole aggregates into %s", role.Name)
	}
	role.Rules = rules
	if err := h.c.Update(h.ctx, role); err != nil {
		h.t.Fatal(err)
	}
}

// forge posts, as the tenant, every event the trust rule says proves nothing, about pods on the node: a core/v1
// event about its pod from a source that is not kubelet, naming the node as host, count 50; and events.k8s.io/v1
// events in its namespace reporting as kubelet on the node, one about its own pod and one about a pod of another
// namespace (a series of 50 each).
func (tn *tenant) forge(t *testing.T, reason, message string, own, other *corev1.Pod) {
	t.Helper()
	ctx := context.Background()
	node := own.Spec.NodeName
	now := time.Now()
	core := &corev1.Event{
		ObjectMeta:     metav1.ObjectMeta{GenerateName: own.Name + ".", Namespace: tn.ns},
		InvolvedObject: corev1.ObjectReference{Kind: "Pod", APIVersion: "v1", Namespace: own.Namespace, Name: own.Name, UID: own.UID},
		Reason:         reason, Message: message, Type: corev1.EventTypeWarning, Count: 50,
		Source:         corev1.EventSource{Component: "not-kubelet", Host: node},
		FirstTimestamp: metav1.NewTime(now.Add(-10 * time.Minute)), LastTimestamp: metav1.NewTime(now),
	}
	if err := tn.c.Create(ctx, core); err != nil {
		t.Fatalf("the tenant could not forge a core/v1 event: %v", err)
	}
	for _, pod := range []*corev1.Pod{own, other} {
		ev := &eventsv1.Event{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("%s.%x", pod.Name, time.Now().UnixNano()), Namespace: tn.ns},
			EventTime:  metav1.NewMicroTime(now.Add(-10 * time.Minute)),
			Series:     &eventsv1.EventSeries{Count: 50, LastObservedTime: metav1.NewMicroTime(now)},
			Regarding:  corev1.ObjectReference{Kind: "Pod", APIVersion: "v1", Namespace: pod.Namespace, Name: pod.Name, UID: pod.UID},
			Reason:     reason, Note: message, Type: corev1.EventTypeWarning, Action: "CreatePodSandbox",
			ReportingController: "kubelet", ReportingInstance: node,
		}
		if _, err := tn.kube.EventsV1().Events(tn.ns).Create(ctx, ev, metav1.CreateOptions{}); err != nil {
			t.Fatalf("the tenant could not forge an events.k8s.io/v1 event about %s/%s: %v", pod.Namespace, pod.Name, err)
		}
	}
}

// TestATenantWithEditCannotWritePodStatus checks the ground the rule stands on, as the same tenant: it may create a
// pod bound to any node and write events, but not the pod's status.
func TestATenantWithEditCannotWritePodStatus(t *testing.T) {
	h := newHarness(t, "tenantrights")
	node := h.node("w1", nil)
	tn := h.tenant("tenant")
	pod := h.podOn(tn.c, tn.ns, "bait", node.Name)
	pod.Status = sandboxNotReady(time.Now().Add(-time.Hour))
	if err := tn.c.Status().Update(h.ctx, pod); err == nil {
		t.Fatal("a tenant with edit wrote pods/status: the trust rule's signal would be forgeable")
	}
	patch := []byte(`{"status":{"conditions":[{"type":"PodReadyToStartContainers","status":"False"}]}}`)
	if err := tn.c.Status().Patch(h.ctx, pod, client.RawPatch(types.StrategicMergePatchType, patch)); err == nil {
		t.Fatal("a tenant with edit patched pods/status")
	}
}

// TestForgedEventsFromATenantOpenNothing: the forgery of issue 12 against a healthy node. The tenant's pods sit
// where a healthy node's kubelet leaves them (its bait pod's sandbox is up, the image never pulls; a pod it deletes
// while a finalizer holds it is torn down and terminal) and the pod of another namespace runs; no event it writes,
// whatever its source, count or timestamps, opens a NodeRemediation. Before this rule the same events opened one
// inside the three seconds the test waits.
func TestForgedEventsFromATenantOpenNothing(t *testing.T) {
	h := newHarness(t, "forged")
	node := h.node("w1", nil)
	h.policy("p", nil) // minStuckDuration 0: only the pods' status can hold the count back
	tn := h.tenant("tenant")

	bait := h.podOn(tn.c, tn.ns, "bait", node.Name)
	h.kubeletStatus(bait, sandboxReadyImageNotPulled(time.Now().Add(-time.Hour)))
	victim := h.podOn(h.c, h.ns, "victim", node.Name)
	h.kubeletStatus(victim, running(time.Now().Add(-time.Hour)))
	tn.forge(t, "FailedCreatePodSandBox", msgIncompatible, bait, victim)

	// Teardown: a pod deleted while a finalizer holds it; the healthy node's kubelet tore it down (terminal phase).
	held := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "held", Namespace: tn.ns, Finalizers: []string{"tenant.example.com/hold"}},
		Spec: corev1.PodSpec{NodeName: node.Name, AutomountServiceAccountToken: ptr.To(false), TerminationGracePeriodSeconds: ptr.To(int64(0)),
			Containers: []corev1.Container{{Name: "app", Image: "workload:test"}}},
	}
	if err := tn.c.Create(h.ctx, held); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = h.c.Patch(context.Background(), held, client.RawPatch(types.MergePatchType, []byte(`{"metadata":{"finalizers":null}}`)))
	})
	h.kubeletStatus(held, corev1.PodStatus{Phase: corev1.PodFailed, Reason: "Terminated"})
	if err := tn.c.Delete(h.ctx, held); err != nil {
		t.Fatal(err)
	}
	if err := h.c.Get(h.ctx, client.ObjectKeyFromObject(held), held); err != nil || held.DeletionTimestamp == nil {
		t.Fatalf("the held pod is not being deleted: %v", err)
	}
	tn.forge(t, "FailedKillPod", msgVersionMissing, held, victim)

	// Many recounts (200ms each) and event deliveries: the detection that believed events opened one in this time.
	time.Sleep(3 * time.Second)
	if items := h.remediationsOf(node.Name); len(items) > 0 {
		t.Fatalf("forged events opened %s (%s, evidence %+v)", items[0].Name, items[0].Spec.Signature, items[0].Spec.Evidence)
	}
}

// TestTheSameEventsOpenOneRemediationOnceKubeletShowsTheSandboxNotReady: the positive path of the same forgery. When
// the pod's own status (kubelet's, written here with admin credentials) shows PodReadyToStartContainers False for
// minStuckDuration, measured from the condition's transition, the events count and exactly one NodeRemediation
// opens; its evidence holds the confirmed pod and its occurrences, not the pod of another namespace that runs.
func TestTheSameEventsOpenOneRemediationOnceKubeletShowsTheSandboxNotReady(t *testing.T) {
	h := newHarness(t, "confirmed")
	node := h.node("w1", nil)
	const minStuck = 4 * time.Second
	h.policy("p", func(s *v1alpha1.RemediationPolicySpec) {
		s.Detection.MinStuckDuration = &metav1.Duration{Duration: minStuck}
	})
	tn := h.tenant("tenant")

	pod := h.podOn(tn.c, tn.ns, "web", node.Name)
	victim := h.podOn(h.c, h.ns, "victim", node.Name)
	h.kubeletStatus(victim, running(time.Now().Add(-time.Hour)))
	since := time.Now()
	h.kubeletStatus(pod, sandboxNotReady(since))
	tn.forge(t, "FailedCreatePodSandBox", msgIncompatible, pod, victim)

	time.Sleep(time.Until(since.Add(minStuck - time.Second)))
	if items := h.remediationsOf(node.Name); len(items) > 0 {
		t.Fatalf("opened %s before the pod's status had shown the failure for minStuckDuration", items[0].Name)
	}
	nr := h.waitRemediation(node.Name)
	if opened := time.Since(since); opened < minStuck-time.Second {
		t.Errorf("opened %s after the condition turned False, before minStuckDuration %s", opened, minStuck)
	}
	if nr.Spec.Signature != string(v1alpha1.SignatureCNIVersionIncompatible) {
		t.Errorf("signature %s", nr.Spec.Signature)
	}
	ev := nr.Spec.Evidence
	want := v1alpha1.PodReference{Namespace: tn.ns, Name: "web"}
	if len(ev.Pods) != 1 || ev.Pods[0] != want || ev.PodCount != 1 || ev.EventCount != 100 {
		t.Errorf("evidence %+v: want only %v and its 50+50 occurrences", ev, want)
	}
	time.Sleep(time.Second)
	if items := h.remediationsOf(node.Name); len(items) != 1 {
		names := ""
		for _, i := range items {
			names += fmt.Sprintf(" %s", i.Name)
		}
		t.Fatalf("%d remediations for the node, want exactly one:%s", len(items), names)
	}
}

// TestAPodKubeletCannotTearDownOpensOneRemediation: the teardown path. A pod deleted past its grace period whose
// status kubelet still reports Running (it writes the terminal phase only once the sandbox is torn down) confirms
// kubelet's FailedKillPod events, and one NodeRemediation opens for the signature they carry.
func TestAPodKubeletCannotTearDownOpensOneRemediation(t *testing.T) {
	h := newHarness(t, "teardown")
	node := h.node("w1", nil)
	h.policy("p", nil)
	pod := &corev1.Pod{
		// The finalizer stands in for kubelet, which would never let the pod go while its sandbox stays.
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: h.ns, Finalizers: []string{"test.cnimedic.io/hold"}},
		Spec: corev1.PodSpec{NodeName: node.Name, AutomountServiceAccountToken: ptr.To(false), TerminationGracePeriodSeconds: ptr.To(int64(0)),
			Containers: []corev1.Container{{Name: "app", Image: "workload:test"}}},
	}
	if err := h.c.Create(h.ctx, pod); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = h.c.Patch(context.Background(), pod, client.RawPatch(types.MergePatchType, []byte(`{"metadata":{"finalizers":null}}`)))
	})
	h.kubeletStatus(pod, running(time.Now().Add(-time.Hour)))
	if err := h.c.Delete(h.ctx, pod); err != nil {
		t.Fatal(err)
	}
	if err := h.c.Get(h.ctx, client.ObjectKeyFromObject(pod), pod); err != nil || pod.DeletionTimestamp == nil {
		t.Fatalf("the pod is not being deleted: %v", err)
	}
	h.kubeletEvent(pod, "FailedKillPod", msgVersionMissing, 3, time.Now())
	nr := h.waitRemediation(node.Name)
	if nr.Spec.Signature != string(v1alpha1.SignatureCNIVersionMissing) || len(nr.Spec.Evidence.Pods) != 1 || nr.Spec.Evidence.EventCount != 3 {
		t.Fatalf("signature %s, evidence %+v", nr.Spec.Signature, nr.Spec.Evidence)
	}
}
