package step

import (
	"strings"
	"testing"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
)

func TestDotDotAndOtherNamesThatAreNotOneEntryAreRefusedNamingTheField(t *testing.T) {
	bad := []string{".", "..", "../x", "a/b", "/etc/passwd", "a b", "a\x1bb", "tab\t"}
	for _, name := range bad {
		steps := map[string]v1alpha1.PlanStep{
			"unit":       {Type: v1alpha1.StepStopUnit, Unit: name},
			"confList":   {Type: v1alpha1.StepSetCNIVersion, ConfList: name},
			"plugins[1]": {Type: v1alpha1.StepInstallReferencePlugins, Plugins: []string{"bridge", name}},
			"network":    {Type: v1alpha1.StepReclaimIPAM, Network: name},
			"link":       {Type: v1alpha1.StepDeleteLink, Link: name},
		}
		for field, s := range steps {
			err := ValidatePlanNames(v1alpha1.Plan{Steps: []v1alpha1.PlanStep{{Type: v1alpha1.StepVerifyNode}, s}})
			if err == nil {
				t.Errorf("%s %q: accepted", field, name)
				continue
			}
			if msg := err.Error(); !strings.HasPrefix(msg, "step 2 ("+string(s.Type)+"): "+field+": ") || strings.Contains(msg, "\n") {
				t.Errorf("%s %q: want a one-line error naming step 2 and the field, got %q", field, name, msg)
			}
		}
	}
	if err := ValidName(""); err == nil {
		t.Error("an empty name is accepted")
	}
}

func TestOrdinaryNamesAndEmptyOptionalFieldsPass(t *testing.T) {
	plan := v1alpha1.Plan{Steps: []v1alpha1.PlanStep{
		{Type: v1alpha1.StepStopUnit, Unit: "kubelet.service"},
		{Type: v1alpha1.StepSetCNIVersion, ConfList: "10-flannel.conflist"},
		{Type: v1alpha1.StepSetCNIVersion},
		{Type: v1alpha1.StepInstallReferencePlugins, Plugins: []string{"bridge", "host-local"}},
		{Type: v1alpha1.StepReclaimIPAM, Network: "cbr0"},
		{Type: v1alpha1.StepDeleteLink, Link: "flannel.1"},
	}}
	if err := ValidatePlanNames(plan); err != nil {
		t.Fatal(err)
	}
}
