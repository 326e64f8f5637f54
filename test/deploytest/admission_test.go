package deploytest

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
	"github.com/cnimedic/cnimedic/test/manifests"
	"github.com/cnimedic/cnimedic/test/repo"
	"github.com/cnimedic/cnimedic/test/testenv"
)

// One control plane for the package, started by the first test that needs one.
var controlPlane testenv.Lazy

func TestMain(m *testing.M) { testenv.LazyMain(m, &controlPlane) }

func apiServer(t *testing.T) *testenv.Env {
	t.Helper()
	sharedEnv := controlPlane.Get(t)
	return sharedEnv
}

// apply renders a kustomize directory of config/ and server-side applies every object as the admin.
func apply(t *testing.T, c client.Client, dir string) {
	t.Helper()
	rendered, err := manifests.Render(filepath.Join(repo.Root(), "config", dir))
	if err != nil {
		t.Fatal(err)
	}
	objs, err := Objects(rendered)
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range objs {
		if err := c.Patch(context.Background(), o, client.Apply, client.FieldOwner("deploytest"), client.ForceOwnership); err != nil {
			t.Fatalf("applying config/%s %s %s: %v", dir, o.GetKind(), o.GetName(), err)
		}
	}
}

// user returns a client that authenticates as the named user with the groups.
func user(t *testing.T, env *testenv.Env, name string, groups ...string) client.Client {
	t.Helper()
	cfg, err := env.AddUser(name, groups...)
	if err != nil {
		t.Fatal(err)
	}
	return clientFor(t, cfg)
}

func clientFor(t *testing.T, cfg *rest.Config) client.Client {
	t.Helper()
	c, err := client.New(cfg, client.Options{Scheme: scheme.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// annotate merges one annotation into a NodeRemediation as the given client.
func annotate(c client.Client, name, key, value string) error {
	nr := &v1alpha1.NodeRemediation{ObjectMeta: metav1.ObjectMeta{Name: name}}
	patch := fmt.Sprintf(`{"metadata":{"annotations":{%q:%q}}}`, key, value)
	return c.Patch(context.Background(), nr, client.RawPatch("application/merge-patch+json", []byte(patch)))
}

// TestOnlyApproversMayDecideARepair applies config/admission to a real API server and has users with the same
// RBAC rights (the cnimedic-operator role) approve and reject: only the member of the configured group may; the
// manager's ServiceAccount and system:masters are not checked; other changes to the object are not affected; and
// the group list is the ConfigMap's, read on each request.
func TestOnlyApproversMayDecideARepair(t *testing.T) {
	env := apiServer(t)
	ctx := context.Background()
	admin := env.Client
	if err := admin.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "cnimedic-system"}}); client.IgnoreAlreadyExists(err) != nil {
		t.Fatal(err)
	}
	apply(t, admin, "admission")
	apply(t, admin, "rbac")
	// Both people may patch NodeRemediations as far as RBAC goes; only the policy tells them apart.
	for _, name := range []string{"alice", "bob", "carol"} {
		binding := &rbacv1.ClusterRoleBinding{
			ObjectMeta: metav1.ObjectMeta{Name: "operator-" + name},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "cnimedic-operator"},
			Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: name}},
		}
		if err := admin.Create(ctx, binding); client.IgnoreAlreadyExists(err) != nil {
			t.Fatal(err)
		}
	}
	alice := user(t, env, "alice", "cnimedic-approvers") // in the group
	bob := user(t, env, "bob", "developers")             // not in it
	carol := user(t, env, "carol", "oncall")
	manager := user(t, env, "system:serviceaccount:cnimedic-system:cnimedic-manager", "system:serviceaccounts", "system:serviceaccounts:cnimedic-system")
	if err := admin.Create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "manager-test"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "cnimedic-manager"},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: "cnimedic-manager", Namespace: "cnimedic-system"}},
	}); client.IgnoreAlreadyExists(err) != nil {
		t.Fatal(err)
	}

	newRemediation := func(name string) {
		t.Helper()
		nr := &v1alpha1.NodeRemediation{ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec: v1alpha1.NodeRemediationSpec{NodeName: "w1", PolicyName: "default", Signature: "ipam-exhausted"}}
		if err := admin.Create(ctx, nr); err != nil {
			t.Fatal(err)
		}
	}
	newRemediation("nr-a")

	// The API server picks a new policy up asynchronously: wait until it refuses bob.
	deadline := time.Now().Add(30 * time.Second)
	var err error
	for {
		err = annotate(bob, "nr-a", v1alpha1.AnnotationApprove, "true")
		if err != nil || time.Now().After(deadline) {
			break
		}
		// Not yet in force: undo bob's approval before trying again.
		if err := annotate(admin, "nr-a", v1alpha1.AnnotationApprove, "false"); err != nil {
			t.Fatal(err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), "only members of the group(s) cnimedic-approvers may set cnimedic.io/approve, cnimedic.io/reject or cnimedic.io/evict-unmanaged-pods on a NodeRemediation; bob is not one of them") {
		t.Fatalf("bob's approval: %v; want a Forbidden error that names the group", err)
	}
	newRemediation("nr-b")

	for _, tc := range []struct {
		who     string
		c       client.Client
		do      func(client.Client) error
		allowed bool
	}{
		{"bob rejects", bob, func(c client.Client) error { return annotate(c, "nr-b", v1alpha1.AnnotationReject, "no") }, false},
		{"bob labels", bob, func(c client.Client) error {
			return c.Patch(ctx, &v1alpha1.NodeRemediation{ObjectMeta: metav1.ObjectMeta{Name: "nr-b"}},
				client.RawPatch("application/merge-patch+json", []byte(`{"metadata":{"labels":{"team":"net"},"annotations":{"note":"looked at it"}}}`)))
		}, true},
		{"bob creates a pre-approved remediation", bob, func(c client.Client) error {
			return c.Create(ctx, &v1alpha1.NodeRemediation{ObjectMeta: metav1.ObjectMeta{Name: "nr-bob", Annotations: map[string]string{v1alpha1.AnnotationApprove: "true"}},
				Spec: v1alpha1.NodeRemediationSpec{NodeName: "w2", PolicyName: "default", Signature: "ipam-exhausted"}})
		}, false},
		{"alice approves", alice, func(c client.Client) error { return annotate(c, "nr-a", v1alpha1.AnnotationApprove, "true") }, true},
		{"bob removes alice's approval", bob, func(c client.Client) error {
			return c.Patch(ctx, &v1alpha1.NodeRemediation{ObjectMeta: metav1.ObjectMeta{Name: "nr-a"}},
				client.RawPatch("application/merge-patch+json", []byte(`{"metadata":{"annotations":{"cnimedic.io/approve":null}}}`)))
		}, false},
		{"alice rejects", alice, func(c client.Client) error {
			return annotate(c, "nr-b", v1alpha1.AnnotationReject, "node is being replaced")
		}, true},
		{"the manager writes its own object", manager, func(c client.Client) error { return annotate(c, "nr-b", v1alpha1.AnnotationApprove, "true") }, true},
		{"system:masters approves", admin, func(c client.Client) error { return annotate(c, "nr-a", v1alpha1.AnnotationApprove, "false") }, true},
		{"carol approves", carol, func(c client.Client) error { return annotate(c, "nr-a", v1alpha1.AnnotationApprove, "true") }, false},
	} {
		err := tc.do(tc.c)
		switch {
		case tc.allowed && err != nil:
			t.Errorf("%s: refused: %v", tc.who, err)
		case !tc.allowed && !apierrors.IsForbidden(err):
			t.Errorf("%s: %v; want Forbidden", tc.who, err)
		}
	}

	// The groups are the ConfigMap's: hand approval to oncall, and alice loses it while carol gains it.
	cm := &corev1.ConfigMap{}
	if err := admin.Get(ctx, client.ObjectKey{Namespace: "cnimedic-system", Name: "cnimedic-approval"}, cm); err != nil {
		t.Fatal(err)
	}
	cm.Data["groups"] = " sre, oncall "
	if err := admin.Update(ctx, cm); err != nil {
		t.Fatal(err)
	}
	deadline = time.Now().Add(30 * time.Second)
	for {
		err = annotate(carol, "nr-a", v1alpha1.AnnotationApprove, "true")
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("carol (oncall) after the ConfigMap names oncall: %v", err)
	}
	if err := annotate(alice, "nr-a", v1alpha1.AnnotationApprove, "false"); !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), "the group(s) sre, oncall") {
		t.Errorf("alice after the ConfigMap dropped her group: %v", err)
	}

	// Without its ConfigMap the policy fails closed.
	if err := admin.Delete(ctx, cm); err != nil {
		t.Fatal(err)
	}
	deadline = time.Now().Add(30 * time.Second)
	for {
		err = annotate(carol, "nr-a", v1alpha1.AnnotationApprove, "false")
		if err != nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	// The API server answers this one as Invalid (422), with its own wording: what matters is the refusal.
	if err == nil || !strings.Contains(err.Error(), "no params found") {
		t.Errorf("an approval without the ConfigMap: %v; want a refusal", err)
	}
}
