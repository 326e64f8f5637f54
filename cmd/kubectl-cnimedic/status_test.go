package main

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
)

// TestStatusSaysWhyEachRepairWaits lays out one open repair per reason to wait that the workflow has, and checks
// that status names each reason, in the text and in the data.
func TestStatusSaysWhyEachRepairWaits(t *testing.T) {
	f, kubeconfig := newFixture(t)
	f.policy("manual", nil)
	f.policy("auto", func(p *v1alpha1.RemediationPolicy) {
		p.Spec.Approval.Mode = v1alpha1.ApprovalAutomatic
		p.Status.Conditions = append(p.Status.Conditions, metav1.Condition{Type: v1alpha1.PolicyStormActive, Status: metav1.ConditionTrue,
			Reason: "StormDetected", Message: "cni-version-incompatible on 3 of 3 nodes", LastTransitionTime: f.ago(10 * time.Minute)})
		p.Status.Storm = &v1alpha1.StormStatus{Signature: "cni-version-incompatible", Nodes: 3, Since: f.ago(10 * time.Minute), LastSeen: f.ago(time.Minute)}
	})
	f.policy("paused", func(p *v1alpha1.RemediationPolicy) {
		p.Spec.Paused = true
		p.Status.Conditions[2] = metav1.Condition{Type: v1alpha1.PolicyPaused, Status: metav1.ConditionTrue, Reason: "PausedBySpec",
			Message: "spec.paused is set", LastTransitionTime: f.ago(time.Minute)}
	})
	f.policy("wide", func(p *v1alpha1.RemediationPolicy) {
		p.Spec.MaxConcurrent = ptrIntOrString(intstr.FromString("50%"))
		p.Status.CoveredNodes = 10
	})

	f.remediation("pending", "w1", "manual", v1alpha1.PhaseAwaitingApproval, 5*time.Minute, nil)
	f.remediation("stormed", "w2", "auto", v1alpha1.PhaseAwaitingApproval, 5*time.Minute, nil)
	f.remediation("draining", "w3", "manual", v1alpha1.PhaseDraining, time.Minute, func(nr *v1alpha1.NodeRemediation) {
		nr.Status.Drain = &v1alpha1.DrainStatus{PodsRemaining: 2, BlockedBy: "PodDisruptionBudget default/web"}
	})
	f.remediation("queued", "w4", "manual", v1alpha1.PhaseApproved, 2*time.Minute, nil)
	f.remediation("held-by-pause", "w5", "paused", v1alpha1.PhaseApproved, 2*time.Minute, nil)
	// w6 was repaired 10 minutes ago; the default retry.cooldown is 30m.
	f.remediation("w6-earlier", "w6", "wide", v1alpha1.PhaseSucceeded, 10*time.Minute, func(nr *v1alpha1.NodeRemediation) {
		nr.Status.StartTime = ptrTime(f.ago(15 * time.Minute))
	})
	f.remediation("cooling", "w6", "wide", v1alpha1.PhaseApproved, time.Minute, nil)
	f.remediation("free", "w7", "wide", v1alpha1.PhaseApproved, time.Minute, nil)

	out := mustRun(t, kubeconfig, "status")
	t.Log("\n" + out)
	for _, want := range []string{
		"manual", "Manual", "auto", "Automatic", "50% (5 nodes)",
		"auto: StormActive=True (StormDetected)", "storm of cni-version-incompatible on 3 nodes",
		"paused: Paused=True (PausedBySpec)",
		"Open repairs: AwaitingApproval 2, Approved 4, Draining 1 (nodes held: 1)",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}
	for name, want := range map[string]string{
		"pending":       "Approval: kubectl cnimedic approve pending",
		"stormed":       "Storm: cni-version-incompatible on 3 nodes since",
		"draining":      "Drain: 2 pods left, blocked by PodDisruptionBudget default/web",
		"queued":        "ConcurrencySlot: 1 nodes are being repaired and policy manual allows 1 at once",
		"held-by-pause": "Paused: policy paused is paused",
		"cooling":       "Cooldown: node w6 was repaired less than 30m0s ago",
		"free":          "Admission: a slot is free (1 of 5 held)",
	} {
		if line := lineOf(out, name+" "); !strings.Contains(line, want) {
			t.Errorf("the line of %s should say %q, got %q", name, want, line)
		}
	}
	if strings.Contains(out, "w6-earlier") {
		t.Errorf("an ended repair is not open:\n%s", out)
	}

	var rep StatusReport
	if err := json.Unmarshal([]byte(mustRun(t, kubeconfig, "status", "-o", "json")), &rep); err != nil {
		t.Fatal(err)
	}
	kinds := map[string]WaitKind{}
	for _, r := range rep.Open {
		kinds[r.Name] = r.Waiting.Kind
	}
	want := map[string]WaitKind{"pending": WaitApproval, "stormed": WaitStorm, "draining": WaitDrain, "queued": WaitSlot,
		"held-by-pause": WaitPaused, "cooling": WaitCooldown, "free": WaitAdmission}
	for name, k := range want {
		if kinds[name] != k {
			t.Errorf("%s waits for %q, want %q", name, kinds[name], k)
		}
	}
	if len(rep.Open) != len(want) || rep.HeldNodes != 1 || rep.OpenByPhase[v1alpha1.PhaseApproved] != 4 {
		t.Errorf("report counts: %d open, %d held, by phase %v", len(rep.Open), rep.HeldNodes, rep.OpenByPhase)
	}
	if _, _, err := run(t, kubeconfig, "status", "-o", "table"); err == nil {
		t.Error("an unknown output format must be refused")
	}
}

// TestStatusOfAnEmptyCluster says that nothing is watched rather than printing empty tables.
func TestStatusOfAnEmptyCluster(t *testing.T) {
	_, kubeconfig := newFixture(t)
	out := mustRun(t, kubeconfig, "status")
	for _, want := range []string{"no RemediationPolicy", "Open repairs: none"} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}
}

func ptrIntOrString(v intstr.IntOrString) *intstr.IntOrString { return &v }

// lineOf returns the first line that starts with prefix.
func lineOf(out, prefix string) string {
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, prefix) {
			return l
		}
	}
	return ""
}
