package main

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
	"github.com/cnimedic/cnimedic/test/manifests"
	"github.com/cnimedic/cnimedic/test/repo"
)

// TestApproveAndRejectSetTheContractAnnotations runs approve and reject against the API server and reads the
// annotations back: the design's contract is cnimedic.io/approve: "true" and cnimedic.io/reject: "<reason>".
func TestApproveAndRejectSetTheContractAnnotations(t *testing.T) {
	f, kubeconfig := newFixture(t)
	f.policy("manual", nil)
	for _, name := range []string{"p1", "p2", "p3", "p4"} {
		f.remediation(name, "node-"+name, "manual", v1alpha1.PhaseAwaitingApproval, time.Minute, nil)
	}

	out := mustRun(t, kubeconfig, "approve", "p1")
	if out != "noderemediation.cnimedic.io/p1 approved\n" {
		t.Errorf("approve printed %q", out)
	}
	if got := f.get("p1").Annotations[v1alpha1.AnnotationApprove]; got != "true" {
		t.Errorf("p1: %s = %q, want \"true\"", v1alpha1.AnnotationApprove, got)
	}

	mustRun(t, kubeconfig, "reject", "p2", "--reason", "node is being replaced")
	if got := f.get("p2").Annotations[v1alpha1.AnnotationReject]; got != "node is being replaced" {
		t.Errorf("p2: %s = %q", v1alpha1.AnnotationReject, got)
	}

	// A server-side dry run goes through the API server and stores nothing.
	out = mustRun(t, kubeconfig, "approve", "p4", "--dry-run")
	if !strings.Contains(out, "(server dry run)") {
		t.Errorf("dry run printed %q", out)
	}
	if _, ok := f.get("p4").Annotations[v1alpha1.AnnotationApprove]; ok {
		t.Error("a dry run must not store the annotation")
	}

	// --all-pending approves what awaits approval and skips the rejected one.
	out = mustRun(t, kubeconfig, "approve", "--all-pending", "-o", "name")
	if out != "noderemediation.cnimedic.io/p1\nnoderemediation.cnimedic.io/p3\nnoderemediation.cnimedic.io/p4\n" {
		t.Errorf("approve --all-pending printed %q", out)
	}
	for _, name := range []string{"p3", "p4"} {
		if got := f.get(name).Annotations[v1alpha1.AnnotationApprove]; got != "true" {
			t.Errorf("%s: %s = %q after --all-pending", name, v1alpha1.AnnotationApprove, got)
		}
	}
	if _, ok := f.get("p2").Annotations[v1alpha1.AnnotationApprove]; ok {
		t.Error("--all-pending must not approve a rejected remediation")
	}
}

// TestApproveAndRejectRefuseWhatTheControllerWouldIgnore checks the refusals: the controller reads the
// annotations only before approval, so setting them later would change nothing while looking like a decision.
func TestApproveAndRejectRefuseWhatTheControllerWouldIgnore(t *testing.T) {
	f, kubeconfig := newFixture(t)
	f.policy("manual", nil)
	f.remediation("ended", "n1", "manual", v1alpha1.PhaseSucceeded, time.Minute, nil)
	f.remediation("approved", "n2", "manual", v1alpha1.PhaseApproved, time.Minute, nil)
	f.remediation("repairing", "n3", "manual", v1alpha1.PhaseRepairing, time.Minute, nil)
	f.remediation("rejected", "n4", "manual", v1alpha1.PhaseAwaitingApproval, time.Minute, func(nr *v1alpha1.NodeRemediation) {
		nr.Annotations = map[string]string{v1alpha1.AnnotationReject: "no"}
	})
	f.remediation("pending", "n5", "manual", v1alpha1.PhaseAwaitingApproval, time.Minute, nil)

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"approve", "ended"}, "has ended (Succeeded"},
		{[]string{"reject", "ended", "--reason", "x"}, "has ended"},
		{[]string{"reject", "approved", "--reason", "x"}, "already approved: a rejection no longer stops it; pause its policy"},
		{[]string{"reject", "repairing", "--reason", "x"}, "already under way (phase Repairing)"},
		{[]string{"approve", "approved"}, "already approved (phase Approved)"},
		{[]string{"approve", "rejected"}, "already rejected"},
		{[]string{"approve", "missing"}, "not found"},
		{[]string{"reject", "pending"}, "--reason is required"},
		{[]string{"approve"}, "or give --all-pending"},
		{[]string{"approve", "pending", "--all-pending"}, "not both"},
	} {
		_, stderr, err := run(t, kubeconfig, tc.args...)
		if err == nil || !strings.Contains(stderr, tc.want) {
			t.Errorf("%v: err %v, stderr %q; want an error saying %q", tc.args, err, stderr, tc.want)
		}
	}
	if nr := f.get("pending"); len(nr.Annotations) != 0 {
		t.Errorf("a refused command changed %s: %v", nr.Name, nr.Annotations)
	}
	if nr := f.get("approved"); nr.Annotations[v1alpha1.AnnotationReject] != "" {
		t.Error("a refused rejection was stored")
	}
}

// TestApproveOutsideTheApproverGroupIsRefused installs config/admission and runs approve as two users who both may
// patch NodeRemediations (cnimedic-operator): the one outside the approver group gets the API server's refusal,
// naming the group; the one inside approves.
func TestApproveOutsideTheApproverGroupIsRefused(t *testing.T) {
	f, _ := newFixture(t)
	env, _ := apiServer(t)
	f.namespace("cnimedic-system")
	for _, dir := range []string{"rbac", "admission"} {
		rendered, err := manifests.Render(filepath.Join(repo.Root(), "config", dir))
		if err != nil {
			t.Fatal(err)
		}
		dec := yaml.NewYAMLOrJSONDecoder(bytes.NewReader(rendered), 4096)
		for {
			u := &unstructured.Unstructured{}
			if err := dec.Decode(&u.Object); err != nil {
				break
			}
			if err := f.c.Patch(f.ctx, u, client.Apply, client.FieldOwner("test"), client.ForceOwnership); err != nil {
				t.Fatalf("applying %s %s: %v", u.GetKind(), u.GetName(), err)
			}
		}
	}
	kubeconfigs := map[string]string{}
	for name, group := range map[string]string{"dave": "developers", "erin": "cnimedic-approvers"} {
		cfg, err := env.AddUser(name, group)
		if err != nil {
			t.Fatal(err)
		}
		kubeconfigs[name] = writeKubeconfig(t, cfg)
		binding := &rbacv1.ClusterRoleBinding{
			ObjectMeta: metav1.ObjectMeta{Name: "plugin-operator-" + name},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "cnimedic-operator"},
			Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: name}},
		}
		if err := f.c.Create(f.ctx, binding); client.IgnoreAlreadyExists(err) != nil {
			t.Fatal(err)
		}
	}
	f.policy("manual", nil)
	f.remediation("guarded", "w9", "manual", v1alpha1.PhaseAwaitingApproval, time.Minute, nil)

	// The API server loads a new admission policy asynchronously: wait until it refuses dave (a dry run changes
	// nothing while it does not yet).
	var stderr string
	var err error
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if _, stderr, err = run(t, kubeconfigs["dave"], "approve", "guarded", "--dry-run"); err != nil {
			break
		}
	}
	if err == nil || !strings.Contains(stderr, "only members of the group(s) cnimedic-approvers may set cnimedic.io/approve, cnimedic.io/reject or cnimedic.io/evict-unmanaged-pods on a NodeRemediation; dave is not one of them") {
		t.Fatalf("approve as dave: %v\n%s", err, stderr)
	}
	if _, stderr, err = run(t, kubeconfigs["dave"], "reject", "guarded", "--reason", "mine"); err == nil || !strings.Contains(stderr, "dave is not one of them") {
		t.Errorf("reject as dave: %v\n%s", err, stderr)
	}
	mustRun(t, kubeconfigs["erin"], "approve", "guarded")
	if got := f.get("guarded").Annotations[v1alpha1.AnnotationApprove]; got != "true" {
		t.Errorf("erin's approval was not stored: %q", got)
	}
}
