package deploytest

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
)

// mergePatch sends a JSON merge patch to an object as the given client.
func mergePatch(c client.Client, obj client.Object, patch string) error {
	return c.Patch(context.Background(), obj, client.RawPatch("application/merge-patch+json", []byte(patch)))
}

// bindClusterRole binds a ClusterRole to a user, cluster-wide or (namespace set) in one namespace.
func bindClusterRole(t *testing.T, admin client.Client, role, user, namespace string) {
	t.Helper()
	ref := rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role}
	subjects := []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: user}}
	var obj client.Object = &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: role + "-" + user}, RoleRef: ref, Subjects: subjects}
	if namespace != "" {
		obj = &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: role + "-" + user, Namespace: namespace}, RoleRef: ref, Subjects: subjects}
	}
	if err := admin.Create(context.Background(), obj); client.IgnoreAlreadyExists(err) != nil {
		t.Fatal(err)
	}
}

// TestOnlyApproversWidenWhatRunsWithoutAHuman applies config/admission and config/rbac to a real API server and
// has three real users try what issue "what runs is what was approved" lists: an operator who is not an approver
// (dave: the cnimedic-operator role), an approver (erin: the same role, in cnimedic-approvers) and a tenant (tina:
// the built-in edit role in her namespace only). Dave may tune a policy and pause it, and ask for a repair; he may
// not switch a policy to Automatic, change its repair or executor settings, its custom signatures or allowed
// actions, change what an Automatic policy covers (its nodes, signatures and mapped node conditions), nor write a
// remediation's evidence or parameters. Erin may.
// Tina may do none of it.
func TestOnlyApproversWidenWhatRunsWithoutAHuman(t *testing.T) {
	env := apiServer(t)
	ctx := context.Background()
	admin := env.Client
	for _, ns := range []string{"cnimedic-system", "team-a"} {
		if err := admin.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); client.IgnoreAlreadyExists(err) != nil {
			t.Fatal(err)
		}
	}
	apply(t, admin, "admission") // also puts back the approvers ConfigMap another test changes
	apply(t, admin, "rbac")
	bindClusterRole(t, admin, "cnimedic-operator", "dave", "")
	bindClusterRole(t, admin, "cnimedic-operator", "erin", "")
	bindClusterRole(t, admin, "edit", "tina", "team-a")
	dave := user(t, env, "dave", "developers")
	erin := user(t, env, "erin", "cnimedic-approvers")
	tina := user(t, env, "tina", "team-a-devs")
	manager := user(t, env, "system:serviceaccount:cnimedic-system:cnimedic-manager", "system:serviceaccounts", "system:serviceaccounts:cnimedic-system")
	bindClusterRole(t, admin, "cnimedic-manager", "system:serviceaccount:cnimedic-system:cnimedic-manager", "")

	pol := &v1alpha1.RemediationPolicy{ObjectMeta: metav1.ObjectMeta{Name: "guarded"},
		Spec: v1alpha1.RemediationPolicySpec{NodeNames: []string{"w1"}, Approval: v1alpha1.ApprovalSpec{Mode: v1alpha1.ApprovalManual}}}
	if err := admin.Create(ctx, pol); err != nil {
		t.Fatal(err)
	}
	ref := func(name string) *v1alpha1.RemediationPolicy {
		return &v1alpha1.RemediationPolicy{ObjectMeta: metav1.ObjectMeta{Name: name}}
	}

	// The API server picks a new admission policy up asynchronously: wait until it refuses dave.
	deadline := time.Now().Add(30 * time.Second)
	var err error
	for {
		err = mergePatch(dave, ref("guarded"), `{"spec":{"approval":{"mode":"Automatic"}}}`)
		if err != nil || time.Now().After(deadline) {
			break
		}
		if err := mergePatch(admin, ref("guarded"), `{"spec":{"approval":{"mode":"Manual"}}}`); err != nil {
			t.Fatal(err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), "only approvers may set spec.approval.mode to Automatic: dave is not in the approver group(s) cnimedic-approvers") {
		t.Fatalf("dave switching the policy to Automatic: %v; want a Forbidden error that says who may", err)
	}

	newRequest := func(c client.Client, name string, ev v1alpha1.Evidence, params map[string]string) error {
		return c.Create(ctx, &v1alpha1.NodeRemediation{ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec: v1alpha1.NodeRemediationSpec{NodeName: "w1", PolicyName: "guarded", Signature: "ipam-exhausted", Evidence: ev, Parameters: params}})
	}
	for _, tc := range []struct {
		name    string
		do      func() error
		allowed bool
		says    string
	}{
		{"dave changes the units a repair stops", func() error {
			return mergePatch(dave, ref("guarded"), `{"spec":{"repair":{"units":{"kubelet":"sshd.service"}}}}`)
		}, false, "only approvers may change spec.repair"},
		{"dave points containerd's bin_dir elsewhere", func() error {
			return mergePatch(dave, ref("guarded"), `{"spec":{"repair":{"containerd":{"binDir":"/etc/cron.d"}}}}`)
		}, false, "only approvers may change spec.repair"},
		{"dave changes the executor image", func() error {
			return mergePatch(dave, ref("guarded"), `{"spec":{"executor":{"image":"evil.example/root:latest"}}}`)
		}, false, "only approvers may change spec.executor"},
		{"dave adds a custom signature", func() error {
			return mergePatch(dave, ref("guarded"), `{"spec":{"customSignatures":[{"name":"mine","pattern":"boom","action":"ReclaimIPAM"}]}}`)
		}, false, "only approvers may change spec.customSignatures"},
		{"dave allows restarting agent pods", func() error {
			return mergePatch(dave, ref("guarded"), `{"spec":{"allowedActions":["RestartCNIAgentPod"]}}`)
		}, false, "only approvers may change spec.allowedActions"},
		{"dave creates an Automatic policy", func() error {
			return dave.Create(ctx, &v1alpha1.RemediationPolicy{ObjectMeta: metav1.ObjectMeta{Name: "daves"},
				Spec: v1alpha1.RemediationPolicySpec{NodeNames: []string{"w1"}, Approval: v1alpha1.ApprovalSpec{Mode: v1alpha1.ApprovalAutomatic}}})
		}, false, "only approvers may set spec.approval.mode to Automatic"},
		{"dave tunes detection", func() error {
			return mergePatch(dave, ref("guarded"), `{"spec":{"detection":{"minOccurrences":5}}}`)
		}, true, ""},
		{"dave pauses the policy", func() error { return mergePatch(dave, ref("guarded"), `{"spec":{"paused":true}}`) }, true, ""},
		{"dave maps a node condition on the Manual policy", func() error {
			return mergePatch(dave, ref("guarded"), `{"spec":{"detection":{"nodeConditions":[{"type":"NetworkUnavailable"}]}}}`)
		}, true, ""},
		{"dave asks for a repair with a made-up node condition", func() error {
			return newRequest(dave, "daves-condition", v1alpha1.Evidence{Conditions: []v1alpha1.ConditionEvidence{{Type: "NetworkUnavailable", Status: "True"}}}, nil)
		}, false, "spec.evidence and spec.parameters are written only by the cnimedic detection"},
		{"dave asks for a repair", func() error { return newRequest(dave, "daves-request", v1alpha1.Evidence{}, nil) }, true, ""},
		{"dave asks for a repair with made-up evidence", func() error {
			return newRequest(dave, "daves-forgery", v1alpha1.Evidence{EventCount: 50, PodCount: 4}, nil)
		}, false, "spec.evidence and spec.parameters are written only by the cnimedic detection"},
		{"dave asks for a repair naming the link to delete", func() error {
			return newRequest(dave, "daves-link", v1alpha1.Evidence{}, map[string]string{"link": "storage0"})
		}, false, "spec.evidence and spec.parameters are written only by the cnimedic detection"},
		{"dave adds parameters to his request", func() error {
			return mergePatch(dave, &v1alpha1.NodeRemediation{ObjectMeta: metav1.ObjectMeta{Name: "daves-request"}}, `{"spec":{"parameters":{"link":"docker0"}}}`)
		}, false, "spec.evidence and spec.parameters are written only by the cnimedic detection"},
		{"the manager feeds evidence", func() error {
			return mergePatch(manager, &v1alpha1.NodeRemediation{ObjectMeta: metav1.ObjectMeta{Name: "daves-request"}}, `{"spec":{"evidence":{"eventCount":3}}}`)
		}, true, ""},
		{"dave lets the drain evict pods no controller recreates", func() error {
			return annotate(dave, "daves-request", v1alpha1.AnnotationEvictUnmanagedPods, "true")
		}, false, "may set cnimedic.io/approve, cnimedic.io/reject or cnimedic.io/evict-unmanaged-pods"},
		{"erin lets it", func() error { return annotate(erin, "daves-request", v1alpha1.AnnotationEvictUnmanagedPods, "true") }, true, ""},
		{"dave approves through the status", func() error {
			nr := &v1alpha1.NodeRemediation{ObjectMeta: metav1.ObjectMeta{Name: "daves-request"}}
			return dave.Status().Patch(ctx, nr, client.RawPatch("application/merge-patch+json",
				[]byte(`{"status":{"phase":"Approved","approval":{"decision":"Approved","mode":"Manual","source":"dave","time":"2026-01-01T00:00:00Z"}}}`)))
		}, false, ""},
		{"dave moves his request's node label to hide it from the retry cap", func() error {
			return mergePatch(dave, &v1alpha1.NodeRemediation{ObjectMeta: metav1.ObjectMeta{Name: "daves-request"}}, `{"metadata":{"labels":{"cnimedic.io/node":"elsewhere"}}}`)
		}, false, "the labels cnimedic.io/node and cnimedic.io/policy are set by cnimedic"},
		{"dave creates a request labelled for another node", func() error {
			return dave.Create(ctx, &v1alpha1.NodeRemediation{ObjectMeta: metav1.ObjectMeta{Name: "daves-mislabelled", Labels: map[string]string{v1alpha1.LabelNode: "elsewhere"}},
				Spec: v1alpha1.NodeRemediationSpec{NodeName: "w1", PolicyName: "guarded", Signature: "ipam-exhausted"}})
		}, false, "the labels cnimedic.io/node and cnimedic.io/policy are set by cnimedic"},
		{"dave changes the canary image", func() error {
			return mergePatch(dave, ref("guarded"), `{"spec":{"verification":{"canaryImage":"evil.example/canary:latest"}}}`)
		}, false, "only approvers may change spec.verification.canaryImage"},
		{"tina asks for a repair", func() error { return newRequest(tina, "tinas-request", v1alpha1.Evidence{}, nil) }, false, ""},
		{"tina edits the policy", func() error { return mergePatch(tina, ref("guarded"), `{"spec":{"paused":false}}`) }, false, ""},
		{"erin changes the repair settings", func() error {
			return mergePatch(erin, ref("guarded"), `{"spec":{"repair":{"versionStrategy":"UpgradePlugins"}}}`)
		}, true, ""},
		{"erin switches the policy to Automatic", func() error {
			return mergePatch(erin, ref("guarded"), `{"spec":{"approval":{"mode":"Automatic"}}}`)
		}, true, ""},
		{"dave widens what the Automatic policy covers", func() error {
			return mergePatch(dave, ref("guarded"), `{"spec":{"nodeNames":["w1","cp-1"]}}`)
		}, false, "only approvers may change which nodes or signatures an Automatic policy covers"},
		{"dave maps another node condition on the Automatic policy", func() error {
			return mergePatch(dave, ref("guarded"), `{"spec":{"detection":{"nodeConditions":[{"type":"NetworkUnavailable"},{"type":"FrequentContainerdRestart"}]}}}`)
		}, false, "only approvers may change which node conditions an Automatic policy repairs on (spec.detection.nodeConditions): dave is not in the approver group(s)"},
		{"dave still tunes the Automatic policy's detection thresholds", func() error {
			return mergePatch(dave, ref("guarded"), `{"spec":{"detection":{"minOccurrences":4}}}`)
		}, true, ""},
		{"erin maps it", func() error {
			return mergePatch(erin, ref("guarded"), `{"spec":{"detection":{"nodeConditions":[{"type":"NetworkUnavailable"},{"type":"FrequentContainerdRestart"}]}}}`)
		}, true, ""},
		{"dave keeps the Automatic policy paused", func() error { return mergePatch(dave, ref("guarded"), `{"spec":{"paused":true}}`) }, true, ""},
		{"dave raises what the Automatic policy repairs at once", func() error {
			return mergePatch(dave, ref("guarded"), `{"spec":{"maxConcurrent":50}}`)
		}, false, "only approvers may change how much an Automatic policy does at once"},
		{"dave lets the Automatic policy repair under unevictable pods", func() error {
			return mergePatch(dave, ref("guarded"), `{"spec":{"drain":{"onTimeout":"Proceed"}}}`)
		}, false, "only approvers may change how much an Automatic policy does at once and how it drains"},
		{"dave resumes the paused Automatic policy", func() error { return mergePatch(dave, ref("guarded"), `{"spec":{"paused":false}}`) }, false,
			"only approvers may resume a paused Automatic policy"},
		{"erin resumes it", func() error { return mergePatch(erin, ref("guarded"), `{"spec":{"paused":false}}`) }, true, ""},
	} {
		err := tc.do()
		switch {
		case tc.allowed && err != nil:
			t.Errorf("%s: refused: %v", tc.name, err)
		case !tc.allowed && !apierrors.IsForbidden(err):
			t.Errorf("%s: %v; want Forbidden", tc.name, err)
		case !tc.allowed && !strings.Contains(err.Error(), tc.says):
			t.Errorf("%s: %v; want it to say %q", tc.name, err, tc.says)
		}
	}
}
