//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
)

// TestForgedEventsLeaveAHealthyNodeUntouched is issue 12's forgery, on the lab under its Automatic policy: a
// ServiceAccount holding only the built-in edit role in its own namespace pins a pod whose image never pulls to a
// healthy worker and writes a Warning FailedCreatePodSandBox event about it (source not-kubelet, the worker as
// source.host, count 50, a cni-version-incompatible message). The node is never cordoned and no executor runs;
// a remediation, if one opens at all, ends NotConfirmed.
func TestForgedEventsLeaveAHealthyNodeUntouched(t *testing.T) {
	r := &run{t: t}
	ctx := t.Context()
	c, err := theLab.Client()
	if err != nil {
		t.Fatal(err)
	}
	r.ctx, r.c = ctx, c
	r.node = r.targetNode()
	r.cleanSlate()
	cs, err := theLab.Clientset()
	if err != nil {
		t.Fatal(err)
	}

	const ns = "tenant-forger"
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// The bait pod must be gone before the next scenario drains this node (t.Context is done by now).
		bg := context.Background()
		_ = c.Delete(bg, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "bait", Namespace: ns}}, client.GracePeriodSeconds(0))
		_ = c.Delete(bg, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})
		r.ctx = bg
		r.eventually("the tenant's bait pod gone", 2*time.Minute, func() (bool, string) {
			err := c.Get(bg, client.ObjectKey{Namespace: ns, Name: "bait"}, &corev1.Pod{})
			return apierrors.IsNotFound(err), fmt.Sprintf("%v", err)
		})
	})
	if err := c.Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "forger", Namespace: ns}}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	if err := c.Create(ctx, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "forger-edit", Namespace: ns},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "edit"},
		Subjects: []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: "forger", Namespace: ns}}}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	tok, err := cs.CoreV1().ServiceAccounts(ns).CreateToken(ctx, "forger", &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To(int64(3600))}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	admin, err := theLab.RESTConfig()
	if err != nil {
		t.Fatal(err)
	}
	tenantCfg := rest.AnonymousClientConfig(admin)
	tenantCfg.BearerToken = tok.Status.Token
	tenant, err := kubernetes.NewForConfig(tenantCfg)
	if err != nil {
		t.Fatal(err)
	}

	// The bait: a pod pinned to the healthy worker whose image never pulls, so it stays Pending (its sandbox is fine).
	bait, err := tenant.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "bait"},
		Spec: corev1.PodSpec{NodeName: r.node, Containers: []corev1.Container{{Name: "c", Image: "cnimedic.local/never-pulls:nope"}}}},
		metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("the tenant could not create its pod: %v", err)
	}
	now := metav1.Now()
	forged := &corev1.Event{
		ObjectMeta:     metav1.ObjectMeta{Name: "forged-sandbox-failure", Namespace: ns},
		InvolvedObject: corev1.ObjectReference{Kind: "Pod", Namespace: ns, Name: bait.Name, UID: bait.UID, APIVersion: "v1"},
		Reason:         "FailedCreatePodSandBox",
		Type:           corev1.EventTypeWarning,
		Source:         corev1.EventSource{Component: "not-kubelet", Host: r.node},
		Count:          50,
		FirstTimestamp: metav1.NewTime(now.Add(-10 * time.Minute)),
		LastTimestamp:  now,
		Message: `Failed to create pod sandbox: rpc error: code = Unknown desc = failed to setup network for sandbox "0123456789abcdef": ` +
			`plugin type="bridge" failed (add): incompatible CNI versions; config is "1.0.0", plugin supports ["0.1.0" "0.2.0" "0.3.0" "0.3.1" "0.4.0"]`,
	}
	if _, err := tenant.CoreV1().Events(ns).Create(ctx, forged, metav1.CreateOptions{}); err != nil {
		t.Fatalf("the tenant could not write its event: %v", err)
	}
	// Keep forging for longer than the lab policy's minStuckDuration (10s) and detection needs (0-1 s here).
	deadline := time.Now().Add(30 * time.Second)
	for i := 0; time.Now().Before(deadline); i++ {
		forged.Name = fmt.Sprintf("forged-sandbox-failure-%d", i)
		forged.LastTimestamp = metav1.Now()
		if _, err := tenant.CoreV1().Events(ns).Create(ctx, forged, metav1.CreateOptions{}); err != nil {
			t.Fatalf("the tenant could not write its event: %v", err)
		}
		time.Sleep(3 * time.Second)
	}

	n := &corev1.Node{}
	if err := c.Get(ctx, client.ObjectKey{Name: r.node}, n); err != nil {
		t.Fatal(err)
	}
	if n.Spec.Unschedulable || n.Annotations[v1alpha1.AnnotationCordonedBy] != "" {
		t.Errorf("forged events cordoned the healthy node %s", r.node)
	}
	list := &v1alpha1.NodeRemediationList{}
	if err := c.List(ctx, list, client.MatchingLabels{v1alpha1.LabelNode: r.node}); err != nil {
		t.Fatal(err)
	}
	for _, nr := range list.Items {
		t.Logf("remediation %s: %s (%s) %s", nr.Name, nr.Status.Phase, nr.Status.Reason, nr.Status.Message)
		if nr.Status.Phase != v1alpha1.PhaseNotConfirmed && nr.Status.Phase != v1alpha1.PhaseDiagnosing && nr.Status.Phase != v1alpha1.PhaseDetected {
			t.Errorf("forged events moved remediation %s to %s", nr.Name, nr.Status.Phase)
		}
	}
	pods := &corev1.PodList{}
	if err := c.List(ctx, pods, client.MatchingLabels{v1alpha1.LabelNode: r.node, v1alpha1.LabelComponent: "executor"}); err != nil {
		t.Fatal(err)
	}
	if len(pods.Items) != 0 {
		t.Errorf("%d executor pods ran on the healthy node", len(pods.Items))
	}
}
