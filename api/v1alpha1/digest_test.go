package v1alpha1

import (
	"encoding/json"
	"testing"
)

func TestAPlanReadBackFromItsJSONHasTheSameDigest(t *testing.T) {
	p := Plan{Steps: []PlanStep{{Type: StepStopUnit, Unit: "kubelet.service"}, {Type: StepSetCNIVersion, CNIVersion: "0.4.0"}}}
	b, _ := json.Marshal(p)
	var back Plan
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if PlanDigest(back) != PlanDigest(p) {
		t.Fatalf("digest changed across JSON: %s vs %s", PlanDigest(back), PlanDigest(p))
	}
}

func TestEveryInputOfTheRunDigestChangesIt(t *testing.T) {
	plan := &Plan{Steps: []PlanStep{{Type: StepStopUnit, Unit: "kubelet.service"}}}
	base := RunDigest("worker-1", "default", 3, ActionSetCNIVersion, "img:1", plan)
	other := &Plan{Steps: []PlanStep{{Type: StepStopUnit, Unit: "sshd.service"}}}
	for name, d := range map[string]string{
		"node":       RunDigest("worker-2", "default", 3, ActionSetCNIVersion, "img:1", plan),
		"policy":     RunDigest("worker-1", "other", 3, ActionSetCNIVersion, "img:1", plan),
		"generation": RunDigest("worker-1", "default", 4, ActionSetCNIVersion, "img:1", plan),
		"action":     RunDigest("worker-1", "default", 3, ActionReclaimIPAM, "img:1", plan),
		"image":      RunDigest("worker-1", "default", 3, ActionSetCNIVersion, "img:2", plan),
		"plan":       RunDigest("worker-1", "default", 3, ActionSetCNIVersion, "img:1", other),
		"no plan":    RunDigest("worker-1", "default", 3, ActionSetCNIVersion, "img:1", nil),
		// Quoting keeps a field's text from moving into its neighbour.
		"shifted": RunDigest("worker-1\"\n\"default", "", 3, ActionSetCNIVersion, "img:1", plan),
	} {
		if d == base {
			t.Errorf("changing the %s left the digest the same", name)
		}
	}
	if RunDigest("worker-1", "default", 3, ActionSetCNIVersion, "img:1", plan) != base {
		t.Error("the same inputs gave another digest")
	}
}

func TestAPreviewOfAnotherPlanIsNotCurrent(t *testing.T) {
	plan := Plan{Steps: []PlanStep{{Type: StepSetCNIVersion, CNIVersion: "0.4.0"}}}
	st := NodeRemediationStatus{Plan: &plan, Preview: &PlanPreview{PlanDigest: PlanDigest(plan)}}
	if st.CurrentPreview() == nil {
		t.Fatal("the preview of the recorded plan is not current")
	}
	other := Plan{Steps: []PlanStep{{Type: StepSetCNIVersion, CNIVersion: "0.3.1"}}}
	st.Plan = &other
	if st.CurrentPreview() != nil {
		t.Error("a preview of another plan is shown as current")
	}
	st.Plan = nil
	if st.CurrentPreview() != nil {
		t.Error("a preview is current with no plan recorded")
	}
}
