package main

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
)

// TestHistoryListsTheRemediationsOfOneNode finds a node's remediations by the cnimedic.io/node label, oldest first,
// and leaves other nodes' out.
func TestHistoryListsTheRemediationsOfOneNode(t *testing.T) {
	f, kubeconfig := newFixture(t)
	f.policy("manual", nil)
	// Created one after another: creation timestamps have a resolution of a second, so the order is by name
	// within one second, and the names are chosen in creation order.
	f.remediation("h1-first", "hnode", "manual", v1alpha1.PhaseRolledBack, 50*time.Minute, func(nr *v1alpha1.NodeRemediation) {
		nr.Status.StartTime = ptrTime(f.ago(55 * time.Minute))
	})
	f.remediation("h2-second", "hnode", "manual", v1alpha1.PhaseSucceeded, 10*time.Minute, func(nr *v1alpha1.NodeRemediation) {
		nr.Status.StartTime = ptrTime(f.ago(12 * time.Minute))
		nr.Status.Approval = &v1alpha1.ApprovalRecord{Decision: v1alpha1.DecisionApproved, Mode: v1alpha1.ApprovalManual,
			Source: "annotation cnimedic.io/approve", Time: f.ago(13 * time.Minute)}
	})
	f.remediation("h3-open", "hnode", "manual", v1alpha1.PhaseAwaitingApproval, time.Minute, nil)
	f.remediation("other-node", "elsewhere", "manual", v1alpha1.PhaseSucceeded, time.Minute, nil)

	out := mustRun(t, kubeconfig, "history", "hnode")
	t.Log("\n" + out)
	first, second, open := strings.Index(out, "h1-first"), strings.Index(out, "h2-second"), strings.Index(out, "h3-open")
	if first < 0 || second < first || open < second {
		t.Errorf("history must list the node's three remediations oldest first:\n%s", out)
	}
	if strings.Contains(out, "other-node") {
		t.Errorf("history lists another node's remediation:\n%s", out)
	}
	for _, want := range []string{"RolledBack", "5m0s", "2m0s", "open"} {
		if !strings.Contains(out, want) {
			t.Errorf("history lacks %q", want)
		}
	}
	if wide := mustRun(t, kubeconfig, "history", "hnode", "-o", "wide"); !strings.Contains(wide, "Approved (annotation cnimedic.io/approve)") {
		t.Errorf("-o wide lacks the approval:\n%s", wide)
	}
	if names := mustRun(t, kubeconfig, "history", "hnode", "-o", "name"); names !=
		"noderemediation.cnimedic.io/h1-first\nnoderemediation.cnimedic.io/h2-second\nnoderemediation.cnimedic.io/h3-open\n" {
		t.Errorf("-o name printed %q", names)
	}
	var list v1alpha1.NodeRemediationList
	if err := json.Unmarshal([]byte(mustRun(t, kubeconfig, "history", "hnode", "-o", "json")), &list); err != nil {
		t.Fatal(err)
	}
	if list.Kind != "NodeRemediationList" || len(list.Items) != 3 || list.Items[0].Kind != "NodeRemediation" {
		t.Errorf("-o json: kind %q with %d items", list.Kind, len(list.Items))
	}
	_, stderr, err := run(t, kubeconfig, "history", "nowhere")
	if err != nil || !strings.Contains(stderr, "No NodeRemediation for node nowhere") {
		t.Errorf("history of a node without remediations: %v %q", err, stderr)
	}
}
