package main

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/cli-runtime/pkg/printers"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
	"github.com/cnimedic/cnimedic/internal/policy"
	"github.com/cnimedic/cnimedic/internal/termsafe"
)

// StatusReport is what `kubectl cnimedic status` shows; -o json|yaml prints it as is.
type StatusReport struct {
	Policies []PolicySummary `json:"policies"`
	// OpenByPhase counts the remediations that have not ended, by phase.
	OpenByPhase map[v1alpha1.Phase]int `json:"openByPhase"`
	// HeldNodes is how many nodes cnimedic holds right now (Draining, Repairing, Verifying), across all policies.
	HeldNodes int `json:"heldNodes"`
	// Open are the remediations that have not ended, oldest first, each with what it waits for.
	Open []RepairSummary `json:"open"`
	// HeldOff are the nodes on which no new repair opens after one ended, and why (docs/operations.md, "Retry,
	// cooldown and hold-off"; detection publishes IncidentHeldOff when it holds a failure it sees).
	HeldOff []HeldOff `json:"heldOff"`
}

// PolicySummary is one policy as the operator sees it.
type PolicySummary struct {
	Name          string                `json:"name"`
	ApprovalMode  v1alpha1.ApprovalMode `json:"approvalMode"`
	MaxConcurrent string                `json:"maxConcurrent"`
	// MaxConcurrentNodes is maxConcurrent resolved against the covered nodes (a percentage becomes a count).
	MaxConcurrentNodes int                   `json:"maxConcurrentNodes"`
	Covered            int32                 `json:"covered"`
	Active             int32                 `json:"active"`
	Pending            int32                 `json:"pending"`
	Paused             bool                  `json:"paused"`
	DryRun             bool                  `json:"dryRun"`
	Conditions         []metav1.Condition    `json:"conditions,omitempty"`
	Storm              *v1alpha1.StormStatus `json:"storm,omitempty"`
}

// RepairSummary is one open remediation.
type RepairSummary struct {
	Name      string         `json:"name"`
	Node      string         `json:"node"`
	Signature string         `json:"signature"`
	Policy    string         `json:"policy"`
	Phase     v1alpha1.Phase `json:"phase"`
	Created   metav1.Time    `json:"created"`
	// PhaseSince is when it entered its phase.
	PhaseSince metav1.Time `json:"phaseSince"`
	Waiting    *Wait       `json:"waiting,omitempty"`
}

const statusExample = `  # Policies, open repairs and what each one waits for
  kubectl cnimedic status

  # The same as data
  kubectl cnimedic status -o yaml`

func newStatusCommand(c *cluster) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show policies, open repairs by phase and why each open repair waits",
		Long: "status lists each RemediationPolicy (approval mode, maxConcurrent, covered nodes, active and pending " +
			"repairs, conditions such as StormActive, Paused and SignaturesValid) and every NodeRemediation that has " +
			"not ended, with what it waits for: approval, a storm, a paused policy, the node's retry cooldown, a " +
			"concurrency slot, the drain, the executor or the verification.",
		Example: statusExample,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output, outputText, outputJSON, outputYAML); err != nil {
				return err
			}
			w, err := c.loadWorld(cmd.Context())
			if err != nil {
				return err
			}
			rep := buildStatus(w)
			if output != outputText {
				return printData(c.streams.Out, output, rep)
			}
			return writeStatus(c.streams.Out, rep, w.now)
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", outputText, "output format: json or yaml (default: text)")
	return cmd
}

// loadWorld reads every policy and every remediation.
func (c *cluster) loadWorld(ctx context.Context) (*world, error) {
	cl, err := c.client()
	if err != nil {
		return nil, err
	}
	pols := &v1alpha1.RemediationPolicyList{}
	if err := cl.List(ctx, pols); err != nil {
		return nil, fmt.Errorf("listing RemediationPolicies: %w", err)
	}
	nrs := &v1alpha1.NodeRemediationList{}
	if err := cl.List(ctx, nrs); err != nil {
		return nil, fmt.Errorf("listing NodeRemediations: %w", err)
	}
	w := &world{policies: map[string]*v1alpha1.RemediationPolicy{}, remediations: nrs.Items, now: c.now()}
	for i := range pols.Items {
		w.policies[pols.Items[i].Name] = &pols.Items[i]
	}
	return w, nil
}

func buildStatus(w *world) StatusReport {
	rep := StatusReport{OpenByPhase: map[v1alpha1.Phase]int{}, HeldNodes: w.heldNodes(), Policies: []PolicySummary{}, Open: []RepairSummary{}, HeldOff: w.heldOff()}
	names := make([]string, 0, len(w.policies))
	for name := range w.policies {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		p := w.policies[name]
		rep.Policies = append(rep.Policies, PolicySummary{
			Name: p.Name, ApprovalMode: p.Spec.Approval.Mode, MaxConcurrent: maxConcurrentString(p),
			MaxConcurrentNodes: policy.MaxConcurrent(p, int(p.Status.CoveredNodes)),
			Covered:            p.Status.CoveredNodes, Active: p.Status.ActiveRepairs, Pending: p.Status.PendingApprovals,
			Paused: p.Spec.Paused, DryRun: p.Spec.DryRun, Conditions: p.Status.Conditions, Storm: p.Status.Storm,
		})
	}
	for i := range w.remediations {
		nr := &w.remediations[i]
		if nr.Status.Phase.IsTerminal() {
			continue
		}
		rep.OpenByPhase[displayPhase(nr.Status.Phase)]++
		rep.Open = append(rep.Open, RepairSummary{
			Name: nr.Name, Node: nr.Spec.NodeName, Signature: nr.Spec.Signature, Policy: nr.Spec.PolicyName,
			Phase: displayPhase(nr.Status.Phase), Created: nr.CreationTimestamp, PhaseSince: metav1.NewTime(phaseStart(nr)),
			Waiting: w.waitOf(nr),
		})
	}
	sort.SliceStable(rep.Open, func(i, j int) bool {
		if !rep.Open[i].Created.Equal(&rep.Open[j].Created) {
			return rep.Open[i].Created.Before(&rep.Open[j].Created)
		}
		return rep.Open[i].Name < rep.Open[j].Name
	})
	return rep
}

// displayPhase names the phase of a remediation the controller has not seen yet.
func displayPhase(p v1alpha1.Phase) v1alpha1.Phase {
	if p == "" {
		return "New"
	}
	return p
}

// openPhases is the workflow's order of the phases before an end.
var openPhases = []v1alpha1.Phase{"New", v1alpha1.PhaseDetected, v1alpha1.PhaseDiagnosing, v1alpha1.PhaseAwaitingApproval, v1alpha1.PhaseApproved,
	v1alpha1.PhaseDraining, v1alpha1.PhaseRepairing, v1alpha1.PhaseVerifying, v1alpha1.PhaseRollingBack}

func writeStatus(out io.Writer, rep StatusReport, now time.Time) error {
	// Condition messages come from the cluster: a terminal escape in one is shown, not obeyed.
	out = termsafe.NewWriter(out)
	tw := printers.GetNewTabWriter(out)
	fmt.Fprintln(tw, "POLICY\tAPPROVAL\tMAXCONCURRENT\tCOVERED\tACTIVE\tPENDING\tCONDITIONS")
	for _, p := range rep.Policies {
		mc := p.MaxConcurrent
		if mc != fmt.Sprint(p.MaxConcurrentNodes) {
			mc = fmt.Sprintf("%s (%d nodes)", p.MaxConcurrent, p.MaxConcurrentNodes)
		}
		mode := string(p.ApprovalMode)
		if p.DryRun {
			mode += " (dry run)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%d\t%s\n", p.Name, mode, mc, p.Covered, p.Active, p.Pending, conditionList(p.Conditions))
	}
	if len(rep.Policies) == 0 {
		fmt.Fprintln(tw, "(no RemediationPolicy: cnimedic watches no node)")
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	// The conditions that need attention, in words.
	for _, p := range rep.Policies {
		for _, cnd := range p.Conditions {
			if notable(cnd) {
				fmt.Fprintf(out, "  %s: %s=%s (%s): %s\n", p.Name, cnd.Type, cnd.Status, cnd.Reason, cnd.Message)
			}
		}
		if s := p.Storm; s != nil {
			fmt.Fprintf(out, "  %s: storm of %s on %d nodes since %s, last grew %s ago\n", p.Name, s.Signature, s.Nodes,
				s.Since.UTC().Format(time.RFC3339), age(now, s.LastSeen.Time))
		}
	}

	fmt.Fprintln(out)
	counts := make([]string, 0, len(openPhases))
	for _, ph := range openPhases {
		if n := rep.OpenByPhase[ph]; n > 0 {
			counts = append(counts, fmt.Sprintf("%s %d", ph, n))
		}
	}
	if len(rep.Open) == 0 {
		fmt.Fprintf(out, "Open repairs: none (nodes held: %d)\n", rep.HeldNodes)
		return writeHeldOff(out, rep.HeldOff)
	}
	fmt.Fprintf(out, "Open repairs: %s (nodes held: %d)\n", strings.Join(counts, ", "), rep.HeldNodes)
	tw = printers.GetNewTabWriter(out)
	fmt.Fprintln(tw, "NAME\tNODE\tSIGNATURE\tPOLICY\tPHASE\tIN PHASE\tWAITING FOR")
	for _, r := range rep.Open {
		waiting := "-"
		if r.Waiting != nil {
			waiting = fmt.Sprintf("%s: %s", r.Waiting.Kind, r.Waiting.Detail)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Name, r.Node, r.Signature, r.Policy, r.Phase, age(now, r.PhaseSince.Time), waiting)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	return writeHeldOff(out, rep.HeldOff)
}

// writeHeldOff lists the nodes on which no new repair opens, and why.
func writeHeldOff(out io.Writer, held []HeldOff) error {
	if len(held) == 0 {
		return nil
	}
	fmt.Fprintf(out, "\nHeld off: %d (no new repair opens for these, see docs/operations.md, Retry, cooldown and hold-off)\n", len(held))
	tw := printers.GetNewTabWriter(out)
	fmt.Fprintln(tw, "NODE\tHELD BY\tKIND\tWHY")
	for _, h := range held {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", h.Node, h.By, h.Kind, h.Detail)
	}
	return tw.Flush()
}

// conditionList renders conditions compactly: the type when True, Type=Status otherwise.
func conditionList(conds []metav1.Condition) string {
	if len(conds) == 0 {
		return "<none>"
	}
	parts := make([]string, 0, len(conds))
	for _, cnd := range conds {
		if cnd.Status == metav1.ConditionTrue {
			parts = append(parts, cnd.Type)
		} else {
			parts = append(parts, fmt.Sprintf("%s=%s", cnd.Type, cnd.Status))
		}
	}
	return strings.Join(parts, ",")
}

// notable reports whether a policy condition means something is held or wrong.
func notable(cnd metav1.Condition) bool {
	switch cnd.Type {
	case v1alpha1.PolicyStormActive, v1alpha1.PolicyPaused:
		return cnd.Status == metav1.ConditionTrue
	case v1alpha1.PolicyReady, v1alpha1.PolicySignaturesValid:
		return cnd.Status != metav1.ConditionTrue
	}
	return false
}
