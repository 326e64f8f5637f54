package policy

import (
	"os"
	"path/filepath"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
	"github.com/cnimedic/cnimedic/test/repo"
)

// TestTheDefaultPolicyDoesNotCoverAWindowsNode: the policy cnimedic is installed with (config/policy, and
// deploy/cnimedic-policy.yaml rendered from it) selects Linux workers only: cnimedic's diagnosis and executor are
// Linux pods, and a Linux executor pinned to a Windows node would never start. Control-plane nodes stay uncovered
// (they are covered only by name), and the policy still passes the CRD's rule of a selector or names, not both.
func TestTheDefaultPolicyDoesNotCoverAWindowsNode(t *testing.T) {
	windows := node("win-1", map[string]string{"kubernetes.io/os": "windows", "kubernetes.io/arch": "amd64"})
	linux := node("w-1", map[string]string{"kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64"})
	controlPlane := node("cp-1", map[string]string{"kubernetes.io/os": "linux", "node-role.kubernetes.io/control-plane": ""})
	for _, file := range []string{"config/policy/default.yaml", "deploy/cnimedic-policy.yaml"} {
		t.Run(file, func(t *testing.T) {
			raw, err := os.ReadFile(filepath.Join(repo.Root(), file))
			if err != nil {
				t.Fatal(err)
			}
			p := &v1alpha1.RemediationPolicy{}
			if err := yaml.UnmarshalStrict(raw, p); err != nil {
				t.Fatalf("%s: %v", file, err)
			}
			if len(p.Spec.NodeNames) != 0 {
				t.Fatalf("%s names nodes %v: the default policy selects by label", file, p.Spec.NodeNames)
			}
			sel, err := NewSelector(p)
			if err != nil {
				t.Fatal(err)
			}
			if sel.Covers(windows) {
				t.Errorf("%s covers a Windows node", file)
			}
			if !sel.Covers(linux) {
				t.Errorf("%s does not cover a Linux worker", file)
			}
			if sel.Covers(controlPlane) {
				t.Errorf("%s covers a control-plane node", file)
			}
		})
	}
}
