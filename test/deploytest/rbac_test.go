package deploytest

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/cnimedic/cnimedic/internal/nodelease"
	"github.com/cnimedic/cnimedic/test/manifests"
	"github.com/cnimedic/cnimedic/test/repo"
)

// lintRules reports what least privilege forbids in a role's rules: a wildcard verb, resource or API group, and
// any access to Secrets (cnimedic reads none; a token or key in the manager would be a way into the cluster).
func lintRules(role string, rules []rbacv1.PolicyRule) []string {
	var problems []string
	for _, r := range rules {
		for _, field := range []struct {
			name   string
			values []string
		}{{"verbs", r.Verbs}, {"resources", r.Resources}, {"apiGroups", r.APIGroups}, {"nonResourceURLs", r.NonResourceURLs}} {
			for _, v := range field.values {
				if v == rbacv1.VerbAll || v == "*/*" || (len(v) > 1 && v[len(v)-1] == '*' && field.name == "nonResourceURLs") {
					problems = append(problems, role+": wildcard in "+field.name+": "+v)
				}
			}
		}
		for _, res := range r.Resources {
			if res == "secrets" || len(res) > 8 && res[:8] == "secrets/" {
				problems = append(problems, role+": access to "+res)
			}
		}
	}
	return problems
}

// lintClusterWide reports what a role granted in every namespace must not hold: writing pods (the manager creates
// and deletes its pods only in its own namespace, through a Role; elsewhere it reads and evicts) and updating
// nodes whole (it only patches them: a stale copy written back whole would undo another writer's change).
func lintClusterWide(role string, rules []rbacv1.PolicyRule) []string {
	var problems []string
	for _, r := range rules {
		if !slices.Contains(r.APIGroups, "") {
			continue
		}
		for _, res := range r.Resources {
			for _, v := range r.Verbs {
				switch {
				case res == "pods" && slices.Contains([]string{"create", "delete", "deletecollection", "update", "patch"}, v):
					problems = append(problems, role+": "+v+" pods in every namespace (only its own namespace's Role may)")
				case res == "nodes" && v == "update":
					problems = append(problems, role+": update nodes (patch only)")
				}
			}
		}
	}
	return problems
}

// TestGeneratedRoleIsLeastPrivilege reads the ClusterRole controller-gen writes from the +kubebuilder:rbac markers
// and fails on any wildcard or any Secrets access.
func TestGeneratedRoleIsLeastPrivilege(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(repo.Root(), "config", "rbac", "role.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	objs, err := Objects(raw)
	if err != nil {
		t.Fatal(err)
	}
	if len(objs) == 0 {
		t.Fatal("config/rbac/role.yaml holds no role")
	}
	for _, o := range objs {
		role := &rbacv1.ClusterRole{}
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, role); err != nil {
			t.Fatal(err)
		}
		if len(role.Rules) == 0 {
			t.Errorf("%s has no rules: was it generated?", role.Name)
		}
		for _, p := range append(lintRules(role.Name, role.Rules), lintClusterWide(role.Name, role.Rules)...) {
			t.Error(p)
		}
	}
}

// TestEveryShippedRoleIsLeastPrivilege applies the same rule to every role config/rbac installs (the manager's,
// leader election, metrics, the roles for people), and checks that the executor's ServiceAccount is bound to
// nothing and mounts no token: the executor pod carries no API credentials.
func TestEveryShippedRoleIsLeastPrivilege(t *testing.T) {
	rendered, err := manifests.Render(filepath.Join(repo.Root(), "config", "rbac"))
	if err != nil {
		t.Fatal(err)
	}
	objs, err := Objects(rendered)
	if err != nil {
		t.Fatal(err)
	}
	var executorSA *corev1.ServiceAccount
	for _, o := range objs {
		switch o.GetKind() {
		case "ClusterRole", "Role":
			role := &rbacv1.ClusterRole{}
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, role); err != nil {
				t.Fatal(err)
			}
			for _, p := range lintRules(o.GetKind()+" "+role.Name, role.Rules) {
				t.Error(p)
			}
			if o.GetKind() == "ClusterRole" {
				for _, p := range lintClusterWide(role.Name, role.Rules) {
					t.Error(p)
				}
			} else if o.GetNamespace() == nodelease.DefaultNamespace {
				// The nodes' maintenance leases live in the namespace the medik8s operators share: there the manager
				// may touch leases and nothing else.
				for _, r := range role.Rules {
					if !slices.Equal(r.APIGroups, []string{"coordination.k8s.io"}) || !slices.Equal(r.Resources, []string{"leases"}) {
						t.Errorf("Role %s in the node leases' namespace grants %v on %v: only leases belong there", role.Name, r.Verbs, r.Resources)
					}
				}
			} else if o.GetNamespace() != "cnimedic-system" {
				t.Errorf("Role %s is in namespace %q, not the install's", role.Name, o.GetNamespace())
			}
		case "ClusterRoleBinding", "RoleBinding":
			b := &rbacv1.RoleBinding{}
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, b); err != nil {
				t.Fatal(err)
			}
			if slices.ContainsFunc(b.Subjects, func(s rbacv1.Subject) bool { return s.Name == "cnimedic-executor" }) {
				t.Errorf("%s %s binds the executor's ServiceAccount: it must have no permissions", o.GetKind(), b.Name)
			}
		case "ServiceAccount":
			if o.GetName() == "cnimedic-executor" {
				executorSA = &corev1.ServiceAccount{}
				if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, executorSA); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	if executorSA == nil {
		t.Fatal("config/rbac ships no cnimedic-executor ServiceAccount")
	}
	if executorSA.AutomountServiceAccountToken == nil || *executorSA.AutomountServiceAccountToken {
		t.Error("the executor's ServiceAccount must set automountServiceAccountToken: false")
	}
}

// TestLintRulesCatchesWhatItMust keeps the linter honest: each forbidden rule is reported.
func TestLintRulesCatchesWhatItMust(t *testing.T) {
	for _, r := range []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"*"}},
		{APIGroups: []string{""}, Resources: []string{"*"}, Verbs: []string{"get"}},
		{APIGroups: []string{"*"}, Resources: []string{"pods"}, Verbs: []string{"get"}},
		{APIGroups: []string{""}, Resources: []string{"secrets"}, Verbs: []string{"get"}},
		{NonResourceURLs: []string{"/metrics*"}, Verbs: []string{"get"}},
	} {
		if len(lintRules("test", []rbacv1.PolicyRule{r})) == 0 {
			t.Errorf("%+v passed the linter", r)
		}
	}
	for _, r := range []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"create"}},
		{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"delete"}},
		{APIGroups: []string{""}, Resources: []string{"nodes"}, Verbs: []string{"update"}},
	} {
		if len(lintClusterWide("test", []rbacv1.PolicyRule{r})) == 0 {
			t.Errorf("%+v passed the cluster-wide linter", r)
		}
	}
	if p := lintClusterWide("test", []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"pods", "pods/eviction", "nodes"}, Verbs: []string{"get", "list", "patch"}}}); len(p) != 1 {
		t.Errorf("only patching pods in every namespace should be reported, got %v", p)
	}
	if p := lintRules("test", []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"pods", "pods/eviction"}, Verbs: []string{"get", "create"}}}); len(p) != 0 {
		t.Errorf("a narrow rule was reported: %v", p)
	}
}
