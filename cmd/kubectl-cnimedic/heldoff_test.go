package main

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
)

// TestStatusSaysWhyNewFailuresAreHeldOff: issue 17 item 4 found "Open repairs: none" and no word of why a new
// failure on a node opened nothing. status lists each node on which detection holds new repairs off, and why.
func TestStatusSaysWhyNewFailuresAreHeldOff(t *testing.T) {
	f, kubeconfig := newFixture(t)
	f.policy("manual", nil) // retry.cooldown 30m by default
	f.remediation("w1-rolledback", "w1", "manual", v1alpha1.PhaseRolledBack, 10*time.Minute, nil)
	f.remediation("w2-capped", "w2", "manual", v1alpha1.PhaseEscalated, 2*time.Hour, func(nr *v1alpha1.NodeRemediation) {
		nr.Status.Reason = "RetryLimitReached"
	})
	f.remediation("w3-escalated", "w3", "manual", v1alpha1.PhaseEscalated, time.Minute, func(nr *v1alpha1.NodeRemediation) {
		nr.Spec.Signature = string(v1alpha1.SignaturePluginBinaryMissing)
		nr.Status.Reason = "Escalated"
	})
	f.remediation("w6-unconfirmed", "w6", "manual", v1alpha1.PhaseNotConfirmed, time.Minute, nil)
	f.remediation("w4-long-ago", "w4", "manual", v1alpha1.PhaseRolledBack, time.Hour, nil)
	f.remediation("w5-repaired", "w5", "manual", v1alpha1.PhaseSucceeded, time.Minute, nil)

	out := mustRun(t, kubeconfig, "status")
	t.Log("\n" + out)
	if !strings.Contains(out, "Open repairs: none") || !strings.Contains(out, "Held off: 4") {
		t.Errorf("status does not list 4 nodes held off:\n%s", out)
	}
	for node, want := range map[string]string{
		"w1 ": "w1-rolledback ended RolledBack less than retry.cooldown (30m0s) ago: nothing new opens on the node until",
		"w2 ": "nothing new opens on the node until a person deletes w2-capped",
		"w3 ": "cni-plugin-binary-missing is not escalated again while its failure persists (other failures open their own)",
		"w6 ": "cni-version-incompatible was not confirmed by the node's diagnosis: not opened again while the same failure persists",
	} {
		if line := lineOf(out, node); !strings.Contains(line, want) {
			t.Errorf("the line of %s should say %q, got %q", node, want, line)
		}
	}
	for _, gone := range []string{"w4-long-ago", "w5-repaired"} {
		if strings.Contains(out, gone) {
			t.Errorf("%s holds nothing (past its cooldown, or a success):\n%s", gone, out)
		}
	}

	var rep StatusReport
	if err := json.Unmarshal([]byte(mustRun(t, kubeconfig, "status", "-o", "json")), &rep); err != nil {
		t.Fatal(err)
	}
	if len(rep.HeldOff) != 4 || rep.HeldOff[3].Kind != HoldNotConfirmed || rep.HeldOff[0].Kind != HoldCooldown || rep.HeldOff[0].Until == nil ||
		rep.HeldOff[1].Kind != HoldRetryLimit || rep.HeldOff[2].Kind != HoldEscalated || rep.HeldOff[2].Signature != string(v1alpha1.SignaturePluginBinaryMissing) {
		t.Errorf("heldOff %+v", rep.HeldOff)
	}
}
