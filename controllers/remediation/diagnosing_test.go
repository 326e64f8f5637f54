package remediation

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/ptr"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
)

// The Diagnosing phase: an event is a hint, the node is the evidence (docs/security.md).

// TestTheNodesDiagnosisConfirmsBeforeAnyoneIsAskedToApprove: a repair is diagnosed on the node first, without an
// approval or a cordon, and the approver is asked only once the node confirmed it, with the findings recorded.
func TestTheNodesDiagnosisConfirmsBeforeAnyoneIsAskedToApprove(t *testing.T) {
	h := newHarness(t, "confirm")
	node := h.node("w1")
	p := h.policy("p", func(s *v1alpha1.RemediationPolicySpec) { s.Approval.Mode = v1alpha1.ApprovalManual })
	h.runKubelet(kubelet{outcome: succeeded})
	nr := h.remediation("nr", node.Name, p, v1alpha1.SignatureCNIVersionIncompatible)

	pending := h.waitPhase(nr.Name, v1alpha1.PhaseAwaitingApproval)
	if got := phases(pending); !slices.Equal(got, []v1alpha1.Phase{v1alpha1.PhaseDetected, v1alpha1.PhaseDiagnosing, v1alpha1.PhaseAwaitingApproval}) {
		t.Errorf("history %v", got)
	}
	d := pending.Status.Diagnosis
	if d == nil || d.Confirmed != string(v1alpha1.SignatureCNIVersionIncompatible) || len(d.Findings) != 1 {
		t.Fatalf("diagnosis %+v: want it recorded, confirming the signature", d)
	}
	if len(h.podsOf(nr.Name, componentDiagnosis)) != 1 {
		t.Error("want exactly one diagnosis pod")
	}
	h.assertUntouched(node.Name, nr.Name)
	// Approved, the repair goes on as before: the diagnosis pod is not the repair's executor.
	h.annotate(nr.Name, v1alpha1.AnnotationApprove, "true")
	h.waitPhase(nr.Name, v1alpha1.PhaseSucceeded)
	if len(h.executorPods(nr.Name)) != 1 {
		t.Error("want one executor pod for the repair")
	}
}

// TestANodeThatShowsNothingWrongEndsNotConfirmedAndUntouched: evidence the node does not bear out (forged events,
// or a failure that cleared) ends the remediation NotConfirmed under an Automatic policy: nothing cordoned, drained
// or run, and the end names what claimed the failure.
func TestANodeThatShowsNothingWrongEndsNotConfirmedAndUntouched(t *testing.T) {
	h := newHarness(t, "notconf")
	node := h.node("w1")
	p := h.policy("p", nil) // Automatic
	h.runKubelet(kubelet{outcome: succeeded, diagnosis: func(pod *corev1.Pod) *v1alpha1.ExecutorResult {
		return diagnosisFinding(pod, v1alpha1.Finding{Severity: v1alpha1.SeverityWarning, Summary: "containerd 1.6.2 has a teardown bug"})
	}})
	nr := h.remediation("nr", node.Name, p, v1alpha1.SignatureCNIVersionIncompatible, func(nr *v1alpha1.NodeRemediation) {
		nr.Spec.Evidence.Pods = []v1alpha1.PodReference{{Namespace: "tenant", Name: "bait"}}
	})
	done := h.waitPhase(nr.Name, v1alpha1.PhaseNotConfirmed)
	if done.Status.Reason != ReasonNotConfirmed || !strings.Contains(done.Status.Message, "tenant/bait") ||
		!strings.Contains(done.Status.Message, "nothing was changed on the node") {
		t.Errorf("reason %s: %q; want NotConfirmed naming the pods that claimed the failure", done.Status.Reason, done.Status.Message)
	}
	if done.Status.Approval != nil {
		t.Error("an unconfirmed failure was approved")
	}
	h.assertUntouched(node.Name, nr.Name)
}

// TestAnotherRepairableCauseOnTheNodeReaimsTheRemediation: the events said "cni plugin not initialized", the node
// shows a conflist without cniVersion (and the runtime's network not ready, which follows from it): the remediation
// keeps its hypothesis and repairs the most specific cause the node shows.
func TestAnotherRepairableCauseOnTheNodeReaimsTheRemediation(t *testing.T) {
	h := newHarness(t, "reaim")
	node := h.node("w1")
	p := h.policy("p", func(s *v1alpha1.RemediationPolicySpec) { s.Approval.Mode = v1alpha1.ApprovalManual })
	h.runKubelet(kubelet{diagnosis: func(pod *corev1.Pod) *v1alpha1.ExecutorResult {
		return diagnosisFinding(pod,
			v1alpha1.Finding{Severity: v1alpha1.SeverityWarning, Signature: v1alpha1.SignatureCNINotInitialized, Summary: "10-lab.conflist has mode 0600"},
			// The consequence the events named is there too; the more specific cause is what is repaired.
			v1alpha1.Finding{Severity: v1alpha1.SeverityError, Signature: v1alpha1.SignatureCNINotInitialized, Summary: "The runtime reports its network not ready"},
			v1alpha1.Finding{Severity: v1alpha1.SeverityError, Signature: v1alpha1.SignatureCNIVersionMissing, Summary: "10-lab.conflist has no cniVersion", Path: "/etc/cni/net.d/10-lab.conflist"})
	}})
	nr := h.remediation("nr", node.Name, p, v1alpha1.SignatureCNINotInitialized)
	pending := h.waitPhase(nr.Name, v1alpha1.PhaseAwaitingApproval)
	if pending.Spec.Signature != string(v1alpha1.SignatureCNINotInitialized) || pending.Status.Diagnosis.Confirmed != string(v1alpha1.SignatureCNIVersionMissing) {
		t.Errorf("hypothesis %s, confirmed %s: want both kept", pending.Spec.Signature, pending.Status.Diagnosis.Confirmed)
	}
	if pending.Status.Action != v1alpha1.ActionSetCNIVersion || pending.Status.Plan == nil ||
		!slices.ContainsFunc(pending.Status.Plan.Steps, func(s v1alpha1.PlanStep) bool { return s.Type == v1alpha1.StepSetCNIVersion }) {
		t.Errorf("action %s plan %+v: want the repair of what the node shows", pending.Status.Action, pending.Status.Plan)
	}
	h.assertUntouched(node.Name, nr.Name)
}

// TestAFailureNoNodeRepairFixesEscalatesWithTheFindings: the node shows errors, none of a cause cnimedic repairs
// on a node: a person gets the findings, and the node is never cordoned.
func TestAFailureNoNodeRepairFixesEscalatesWithTheFindings(t *testing.T) {
	h := newHarness(t, "norepair")
	node := h.node("w1")
	p := h.policy("p", nil)
	h.runKubelet(kubelet{outcome: succeeded, diagnosis: func(pod *corev1.Pod) *v1alpha1.ExecutorResult {
		return diagnosisFinding(pod, v1alpha1.Finding{Severity: v1alpha1.SeverityError, Summary: "flanneld has not written /run/flannel/subnet.env"})
	}})
	nr := h.remediation("nr", node.Name, p, v1alpha1.SignatureCNIVersionIncompatible)
	done := h.waitPhase(nr.Name, v1alpha1.PhaseEscalated)
	if done.Status.Reason != ReasonNoNodeRepair || !strings.Contains(done.Status.Message, "subnet.env") {
		t.Errorf("reason %s: %q", done.Status.Reason, done.Status.Message)
	}
	h.assertUntouched(node.Name, nr.Name)
}

// TestARewriteIsNotChosenWhenTheLoopbackPluginCannotServeIt is the first seed as an independently built cluster had
// it (issue 17): every reference plugin at v0.9.1, loopback included. Rewriting the conflist's cniVersion cannot
// help (containerd asks loopback for 1.0.0), so the plan upgrades the plugins when the policy allows it, and
// otherwise the remediation escalates saying what the policy would have to allow, before any cordon.
func TestARewriteIsNotChosenWhenTheLoopbackPluginCannotServeIt(t *testing.T) {
	loopback := func(pod *corev1.Pod) *v1alpha1.ExecutorResult {
		return diagnosisFinding(pod,
			v1alpha1.Finding{Severity: v1alpha1.SeverityError, Signature: v1alpha1.SignatureCNIVersionIncompatible, Summary: "bridge supports up to 0.4.0, the conflist asks for 1.0.0"},
			v1alpha1.Finding{Severity: v1alpha1.SeverityError, Signature: v1alpha1.SignatureCNIVersionIncompatible, Fix: v1alpha1.ActionInstallReferencePlugins,
				Summary: "The loopback plugin /opt/cni/bin/loopback supports only 0.1.0, 0.2.0, 0.3.0, 0.3.1, 0.4.0, but containerd 1.6.20~ds1 configures the loopback interface with CNI 1.0.0"})
	}
	for _, tc := range []struct {
		name     string
		policy   func(*v1alpha1.RemediationPolicySpec)
		wantPlan bool
	}{
		{"the default policy upgrades the plugins", func(s *v1alpha1.RemediationPolicySpec) { s.Approval.Mode = v1alpha1.ApprovalManual }, true},
		{"a policy that forbids installing plugins escalates", func(s *v1alpha1.RemediationPolicySpec) {
			s.Repair.InstallReferencePlugins = ptr.To(false)
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, fmt.Sprintf("loopback-%v", tc.wantPlan))
			node := h.node("w1")
			p := h.policy("p", tc.policy)
			h.runKubelet(kubelet{outcome: succeeded, diagnosis: loopback})
			nr := h.remediation("nr", node.Name, p, v1alpha1.SignatureCNIVersionIncompatible)
			if !tc.wantPlan {
				done := h.waitPhase(nr.Name, v1alpha1.PhaseEscalated)
				if done.Status.Reason != ReasonPlanCannotSucceed || !strings.Contains(done.Status.Message, "InstallReferencePlugins") {
					t.Errorf("reason %s: %q", done.Status.Reason, done.Status.Message)
				}
				h.assertUntouched(node.Name, nr.Name)
				return
			}
			pending := h.waitPhase(nr.Name, v1alpha1.PhaseAwaitingApproval)
			if pending.Status.Action != v1alpha1.ActionInstallReferencePlugins || pending.Status.Plan == nil ||
				slices.ContainsFunc(pending.Status.Plan.Steps, func(s v1alpha1.PlanStep) bool { return s.Type == v1alpha1.StepSetCNIVersion }) {
				t.Errorf("action %s plan %+v: a rewrite cannot repair this node", pending.Status.Action, pending.Status.Plan)
			}
		})
	}
}

// TestDiagnosesAreCappedClusterWide: a flood of remediations (a storm that slipped through, or forged evidence)
// never runs more than the cap of diagnosis pods at once.
func TestDiagnosesAreCappedClusterWide(t *testing.T) {
	h := newHarness(t, "cap")
	p := h.policy("p", nil)
	h.runKubelet(kubelet{diagnosis: func(*corev1.Pod) *v1alpha1.ExecutorResult { return nil }}) // they never end
	var names []string
	for i := range defaultMaxDiagnoses + 3 {
		node := h.node(fmt.Sprintf("w%d", i))
		names = append(names, h.remediation(fmt.Sprintf("nr%d", i), node.Name, p, v1alpha1.SignatureCNIVersionIncompatible).Name)
	}
	count := func() int {
		n := 0
		for _, name := range names {
			n += len(h.podsOf(name, componentDiagnosis))
		}
		return n
	}
	h.eventually(func() error {
		if n := count(); n < defaultMaxDiagnoses {
			return fmt.Errorf("%d diagnosis pods so far", n)
		}
		return nil
	}, "the cap's worth of diagnoses start")
	time.Sleep(500 * time.Millisecond) // several poll intervals
	if n := count(); n != defaultMaxDiagnoses {
		t.Errorf("%d diagnosis pods run at once, want at most %d", n, defaultMaxDiagnoses)
	}
}

// TestOneNodeIsNotDiagnosedBackToBack: a node's diagnoses are at least DiagnosisInterval apart, whatever opens the
// remediations.
func TestOneNodeIsNotDiagnosedBackToBack(t *testing.T) {
	h := newHarness(t, "backtoback")
	h.diagnosisInterval = time.Minute
	h.restart()
	node := h.node("w1")
	p := h.policy("p", nil)
	h.runKubelet(kubelet{diagnosis: func(pod *corev1.Pod) *v1alpha1.ExecutorResult { return diagnosisFinding(pod) }})
	first := h.remediation("first", node.Name, p, v1alpha1.SignatureCNIVersionIncompatible)
	h.waitPhase(first.Name, v1alpha1.PhaseNotConfirmed)

	second := h.remediation("second", node.Name, p, v1alpha1.SignatureCNIVersionIncompatible)
	h.waitPhase(second.Name, v1alpha1.PhaseDiagnosing)
	time.Sleep(500 * time.Millisecond) // several poll intervals
	if n := len(h.podsOf(second.Name, componentDiagnosis)); n != 0 {
		t.Fatalf("node diagnosed again at once (%d pods)", n)
	}
	h.clock.Step(61 * time.Second)
	h.waitPhase(second.Name, v1alpha1.PhaseNotConfirmed)
}

// TestAConfDirEmptiedOfEveryNetworkEscalatesWithoutADrain (issue 17): with no network configuration where
// containerd would be pointed, no node repair helps; the remediation escalates at once, nothing drained, instead
// of draining, changing nothing and rolling back three times.
func TestAConfDirEmptiedOfEveryNetworkEscalatesWithoutADrain(t *testing.T) {
	h := newHarness(t, "emptyconf")
	node := h.node("w1")
	p := h.policy("p", nil) // Automatic
	h.runKubelet(kubelet{outcome: succeeded, diagnosis: func(pod *corev1.Pod) *v1alpha1.ExecutorResult {
		return diagnosisFinding(pod,
			v1alpha1.Finding{Severity: v1alpha1.SeverityError, Signature: v1alpha1.SignatureCNINotInitialized, Fix: v1alpha1.ActionEscalate,
				Summary: "No network configuration in /etc/cni/net.d, the directory containerd reads (conf_dir)",
				Repair:  "Check that the CNI provider's DaemonSet runs on this node."},
			v1alpha1.Finding{Severity: v1alpha1.SeverityError, Signature: v1alpha1.SignatureCNINotInitialized, Summary: "The runtime reports its network not ready"})
	}})
	nr := h.remediation("nr", node.Name, p, v1alpha1.SignatureCNINotInitialized)
	done := h.waitPhase(nr.Name, v1alpha1.PhaseEscalated)
	if done.Status.Reason != ReasonNoNodeRepair || !strings.Contains(done.Status.Message, "No network configuration") {
		t.Errorf("reason %s: %q", done.Status.Reason, done.Status.Message)
	}
	h.assertUntouched(node.Name, nr.Name)
}

// TestAnUnclassifiedCNIFailureIsRepairedThroughTheCauseTheNodeShows: a CNI failure whose wording no signature names
// (the cni-unclassified family) is diagnosed on the node and repaired as the cause the node shows, or escalated with
// the findings when no node repair fixes what it shows.
func TestAnUnclassifiedCNIFailureIsRepairedThroughTheCauseTheNodeShows(t *testing.T) {
	for _, tc := range []struct {
		name    string
		finding v1alpha1.Finding
		want    v1alpha1.Phase
	}{
		{"a repairable cause", v1alpha1.Finding{Severity: v1alpha1.SeverityError, Signature: v1alpha1.SignatureCNIVersionMissing, Summary: "10-lab.conflist has no cniVersion"}, v1alpha1.PhaseSucceeded},
		{"no node repair", v1alpha1.Finding{Severity: v1alpha1.SeverityError, Summary: "the CNI daemon's socket does not answer"}, v1alpha1.PhaseEscalated},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, fmt.Sprintf("family-%v", tc.want == v1alpha1.PhaseSucceeded))
			node := h.node("w1")
			p := h.policy("p", nil)
			h.runKubelet(kubelet{outcome: succeeded, diagnosis: func(pod *corev1.Pod) *v1alpha1.ExecutorResult { return diagnosisFinding(pod, tc.finding) }})
			nr := h.remediation("nr", node.Name, p, v1alpha1.SignatureCNIUnclassified, func(nr *v1alpha1.NodeRemediation) { nr.Spec.Parameters = nil })
			done := h.waitPhase(nr.Name, tc.want)
			if tc.want == v1alpha1.PhaseSucceeded {
				if done.Status.Diagnosis.Confirmed != string(v1alpha1.SignatureCNIVersionMissing) || done.Status.Action != v1alpha1.ActionSetCNIVersion {
					t.Errorf("confirmed %s action %s: want the repair of what the node shows", done.Status.Diagnosis.Confirmed, done.Status.Action)
				}
				return
			}
			if done.Status.Reason != ReasonNoNodeRepair || !strings.Contains(done.Status.Message, "socket does not answer") {
				t.Errorf("reason %s: %q", done.Status.Reason, done.Status.Message)
			}
			h.assertUntouched(node.Name, nr.Name)
		})
	}
}

// TestACauseTheNodeConfirmsIsRepairedWhateverTheMessageLeftOut: the lab's IPAM seed was escalated by the first
// e2e run of Diagnosing because the cause the node confirmed was judged with none of the message's parameters (no
// IPAM type, so Escalate). A cause the node's own diagnosis shows is repaired by its catalog action.
func TestACauseTheNodeConfirmsIsRepairedWhateverTheMessageLeftOut(t *testing.T) {
	h := newHarness(t, "ipamconfirm")
	node := h.node("w1")
	p := h.policy("p", func(s *v1alpha1.RemediationPolicySpec) { s.Approval.Mode = v1alpha1.ApprovalManual })
	h.runKubelet(kubelet{diagnosis: func(pod *corev1.Pod) *v1alpha1.ExecutorResult {
		return diagnosisFinding(pod, v1alpha1.Finding{Severity: v1alpha1.SeverityError, Signature: v1alpha1.SignatureIPAMExhausted,
			Summary: `Network "lab" has no free address`, Path: "/var/lib/cni/networks/lab"})
	}})
	nr := h.remediation("nr", node.Name, p, v1alpha1.SignatureIPAMExhausted, func(nr *v1alpha1.NodeRemediation) {
		nr.Spec.Parameters = map[string]string{"ipam": "host-local", "range": "10.244.1.1-10.244.1.254"}
	})
	pending := h.waitPhase(nr.Name, v1alpha1.PhaseAwaitingApproval)
	if pending.Status.Action != v1alpha1.ActionReclaimIPAM || pending.Status.Plan == nil {
		t.Errorf("action %s plan %+v: the node confirmed a host-local network out of addresses", pending.Status.Action, pending.Status.Plan)
	}
}

// TestTheFileARepairEditsIsTheOneTheNodeShowsNotTheMessages (issue 12): a message naming another conflist is a hint;
// once the node confirmed the cause, the plan edits the file the node's finding names (the one the runtime loads),
// and with no file named it leaves the choice to the node, which picks the loaded one.
func TestTheFileARepairEditsIsTheOneTheNodeShowsNotTheMessages(t *testing.T) {
	for _, tc := range []struct {
		name, path, want string
	}{
		{"the finding names the loaded file", "/etc/cni/net.d/10-lab.conflist", "10-lab.conflist"},
		{"the finding names no file", "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, fmt.Sprintf("nodefile-%v", tc.want != ""))
			node := h.node("w1")
			p := h.policy("p", func(s *v1alpha1.RemediationPolicySpec) { s.Approval.Mode = v1alpha1.ApprovalManual })
			h.runKubelet(kubelet{diagnosis: func(pod *corev1.Pod) *v1alpha1.ExecutorResult {
				return diagnosisFinding(pod, v1alpha1.Finding{Severity: v1alpha1.SeverityError, Signature: v1alpha1.SignatureCNIVersionMissing,
					Summary: "the loaded conflist has no cniVersion", Path: tc.path})
			}})
			nr := h.remediation("nr", node.Name, p, v1alpha1.SignatureCNIVersionMissing, func(nr *v1alpha1.NodeRemediation) {
				nr.Spec.Parameters = map[string]string{v1alpha1.ParamConfigFile: "/etc/cni/net.d/99-tenant.conflist"}
			})
			pending := h.waitPhase(nr.Name, v1alpha1.PhaseAwaitingApproval)
			i := slices.IndexFunc(pending.Status.Plan.Steps, func(s v1alpha1.PlanStep) bool { return s.Type == v1alpha1.StepSetCNIVersion })
			if i < 0 {
				t.Fatalf("plan %+v has no SetCNIVersion", pending.Status.Plan)
			}
			if got := pending.Status.Plan.Steps[i].ConfList; got != tc.want {
				t.Errorf("the plan edits %q, want %q: the message's 99-tenant.conflist is never the target once the node confirmed", got, tc.want)
			}
		})
	}
}

// TestAMessageNeitherNarrowsThePluginsNorPicksTheLinkOnceTheNodeConfirmed (issue 12): flannel's real message
// `plugin type="flannel" ... failed to find plugin "bridge"` names flannel as the failing plugin type; once the node
// confirmed a reference plugin missing, the plan installs what the node's loaded chain lacks (it is not escalated as
// a vendor plugin, nor narrowed to one plugin). A link a message names is not deleted: the one the node shows stale is.
func TestAMessageNeitherNarrowsThePluginsNorPicksTheLinkOnceTheNodeConfirmed(t *testing.T) {
	for _, tc := range []struct {
		name    string
		sig     v1alpha1.SignatureID
		params  map[string]string
		finding v1alpha1.Finding
		step    v1alpha1.StepType
		check   func(v1alpha1.PlanStep) string
	}{
		{"plugins", v1alpha1.SignaturePluginBinaryMissing, map[string]string{v1alpha1.ParamPluginType: "flannel", v1alpha1.ParamPlugin: "bridge"},
			v1alpha1.Finding{Severity: v1alpha1.SeverityError, Signature: v1alpha1.SignaturePluginBinaryMissing, Summary: "host-local of the loaded chain is missing"},
			v1alpha1.StepInstallReferencePlugins, func(s v1alpha1.PlanStep) string {
				if len(s.Plugins) != 0 {
					return fmt.Sprintf("plugins %v: the node chooses them", s.Plugins)
				}
				return ""
			}},
		{"link", v1alpha1.SignatureStaleState, map[string]string{v1alpha1.ParamBridge: "storage0", v1alpha1.ParamAddress: "10.244.1.1/24"},
			v1alpha1.Finding{Severity: v1alpha1.SeverityError, Signature: v1alpha1.SignatureStaleState, Path: "cni0", Summary: "Link cni0 carries 10.9.9.1/24 but should carry 10.244.1.1/24"},
			v1alpha1.StepDeleteLink, func(s v1alpha1.PlanStep) string {
				if s.Link != "cni0" {
					return fmt.Sprintf("link %q: want the one the node shows stale, cni0", s.Link)
				}
				return ""
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, "nodetarget-"+tc.name)
			node := h.node("w1")
			p := h.policy("p", func(s *v1alpha1.RemediationPolicySpec) { s.Approval.Mode = v1alpha1.ApprovalManual })
			h.runKubelet(kubelet{diagnosis: func(pod *corev1.Pod) *v1alpha1.ExecutorResult { return diagnosisFinding(pod, tc.finding) }})
			nr := h.remediation("nr", node.Name, p, tc.sig, func(nr *v1alpha1.NodeRemediation) { nr.Spec.Parameters = tc.params })
			pending := h.waitPhase(nr.Name, v1alpha1.PhaseAwaitingApproval)
			i := slices.IndexFunc(pending.Status.Plan.Steps, func(s v1alpha1.PlanStep) bool { return s.Type == tc.step })
			if i < 0 {
				t.Fatalf("plan %+v has no %s", pending.Status.Plan, tc.step)
			}
			if msg := tc.check(pending.Status.Plan.Steps[i]); msg != "" {
				t.Error(msg)
			}
		})
	}
}
