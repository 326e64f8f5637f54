package signature

import (
	"os"
	"regexp"
	"slices"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
)

func TestCatalogCoversExactlyTheAPISignatures(t *testing.T) {
	var ids []v1alpha1.SignatureID
	for _, d := range Definitions() {
		if slices.Contains(ids, d.ID) {
			t.Errorf("%s is defined twice", d.ID)
		}
		ids = append(ids, d.ID)
	}
	for _, id := range v1alpha1.BuiltinSignatures {
		if !slices.Contains(ids, id) {
			t.Errorf("the API's %s has no definition", id)
		}
	}
	if len(ids) != len(v1alpha1.BuiltinSignatures) {
		t.Errorf("catalog has %d signatures, the API %d", len(ids), len(v1alpha1.BuiltinSignatures))
	}
}

// The design's table fixes each signature's repair; the catalog must not drift from it.
func TestCatalogActionsFollowTheDesign(t *testing.T) {
	want := map[v1alpha1.SignatureID][2]v1alpha1.RepairAction{
		v1alpha1.SignatureCNIVersionIncompatible: {v1alpha1.ActionSetCNIVersion, ""},
		v1alpha1.SignatureCNIVersionMissing:      {v1alpha1.ActionSetCNIVersion, ""},
		v1alpha1.SignatureCNINotInitialized:      {v1alpha1.ActionRepairRuntimeCNIConfig, ""},
		v1alpha1.SignaturePluginBinaryMissing:    {v1alpha1.ActionInstallReferencePlugins, ""},
		v1alpha1.SignatureIPAMExhausted:          {v1alpha1.ActionReclaimIPAM, ""},
		v1alpha1.SignatureDaemonUnavailable:      {v1alpha1.ActionEscalate, v1alpha1.ActionRestartCNIAgentPod},
		v1alpha1.SignatureAPIServerAccess:        {v1alpha1.ActionRestartCNIAgentPod, ""},
		v1alpha1.SignatureConfigInvalid:          {v1alpha1.ActionRestoreConfig, ""},
		v1alpha1.SignatureStaleState:             {v1alpha1.ActionCleanStaleNetwork, ""},
		v1alpha1.SignatureCNIUnclassified:        {v1alpha1.ActionDiagnose, ""},
	}
	for _, d := range Definitions() {
		w := want[d.ID]
		if d.Action != w[0] || d.Alternative != w[1] {
			t.Errorf("%s: action %q alternative %q, want %q %q", d.ID, d.Action, d.Alternative, w[0], w[1])
		}
	}
}

// Every parameter a definition can produce is documented in its Params, and every definition is complete enough
// for the generated reference documentation.
func TestCatalogDefinitionsAreComplete(t *testing.T) {
	for _, d := range Definitions() {
		if d.Title == "" || d.Description == "" || len(d.Runbooks) == 0 || len(d.Reasons) == 0 || len(d.Patterns) == 0 {
			t.Errorf("%s: title, description, runbooks, reasons and patterns are all required", d.ID)
		}
		if (d.decide != nil) != (d.ActionNote != "") {
			t.Errorf("%s: an action that depends on the parameters needs an ActionNote, and only then", d.ID)
		}
		var produced []string
		for _, p := range d.Patterns {
			re := regexp.MustCompile(p.Regexp)
			if prefix, _ := re.LiteralPrefix(); prefix == "" {
				t.Errorf("%s: pattern %q does not start with literal text, so every search tries every offset", d.ID, p.Regexp)
			}
			produced = append(produced, re.SubexpNames()...)
			for k := range p.Implies {
				produced = append(produced, k)
			}
		}
		for _, e := range d.Extract {
			produced = append(produced, e.Param)
		}
		for _, k := range produced {
			if k != "" && !slices.Contains(d.Params, k) {
				t.Errorf("%s produces parameter %q that its Params do not list", d.ID, k)
			}
		}
	}
}

// DefaultAllowedActions restates the CRD's default for spec.allowedActions; read it from the generated CRD so
// the two cannot drift apart.
func TestDefaultAllowedActionsMatchTheCRDDefault(t *testing.T) {
	raw, err := os.ReadFile("../../config/crd/bases/cnimedic.io_remediationpolicies.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var crd struct {
		Spec struct {
			Versions []struct {
				Name   string
				Schema struct {
					OpenAPIV3Schema struct {
						Properties struct {
							Spec struct {
								Properties struct {
									AllowedActions struct {
										Default []v1alpha1.RepairAction
									} `json:"allowedActions"`
								}
							}
						}
					} `json:"openAPIV3Schema"`
				}
			}
		}
	}
	if err := yaml.Unmarshal(raw, &crd); err != nil {
		t.Fatal(err)
	}
	for _, v := range crd.Spec.Versions {
		if v.Name != "v1alpha1" {
			continue
		}
		got := v.Schema.OpenAPIV3Schema.Properties.Spec.Properties.AllowedActions.Default
		if !slices.Equal(got, DefaultAllowedActions) {
			t.Fatalf("CRD default allowedActions %v, DefaultAllowedActions %v", got, DefaultAllowedActions)
		}
		return
	}
	t.Fatal("no v1alpha1 version in the CRD")
}

func TestPluginClassification(t *testing.T) {
	for _, p := range []string{"bridge", "host-local", "portmap", "loopback", "bandwidth", "tuning", "macvlan"} {
		if !IsReferencePlugin(p) || IsVendorPlugin(p) {
			t.Errorf("%s must be a reference plugin only", p)
		}
	}
	for _, p := range []string{"flannel", "calico", "calico-ipam", "cilium-cni", "weave-net", "antrea", "multus-shim", "aws-cni", "azure-vnet"} {
		if IsReferencePlugin(p) || !IsVendorPlugin(p) {
			t.Errorf("%s must be a vendor plugin only", p)
		}
	}
	if v, _ := Vendor("calico-ipam"); v != "calico" {
		t.Errorf("calico-ipam belongs to %q, want calico", v)
	}
	if IsReferencePlugin("") || IsReferencePlugin("my-own-plugin") {
		t.Error("unknown plugins must not count as reference plugins: cnimedic would install the wrong binary")
	}
}

// The family catches what every other signature leaves, so it must cost the non-matching majority nothing: each of
// its patterns, like every built-in one, gives the scanner literal pieces, and it comes last in precedence.
func TestEveryBuiltinPatternIsPrefilteredAndTheFamilyComesLast(t *testing.T) {
	for _, r := range Default().rules {
		if r.always {
			t.Errorf("%s: %s has no literal piece to prefilter on", r.signature, r.re)
		}
	}
	defs := Definitions()
	last := defs[len(defs)-1]
	if last.ID != v1alpha1.SignatureCNIUnclassified || !last.Family || last.Action != v1alpha1.ActionDiagnose {
		t.Errorf("the last definition is %s (family %v, action %s), want the cni-unclassified family with Diagnose", last.ID, last.Family, last.Action)
	}
	for _, d := range defs[:len(defs)-1] {
		if d.Family {
			t.Errorf("%s is a family but not last: it would hide the causes after it", d.ID)
		}
	}
}
