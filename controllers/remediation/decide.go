package remediation

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
	"github.com/cnimedic/cnimedic/internal/planner"
	"github.com/cnimedic/cnimedic/internal/policy"
	"github.com/cnimedic/cnimedic/internal/signature"
)

// What runs is what was approved. The manager alone decides what will run on the node (the action, the plan, the
// executor image) and records it in the status together with the policy generation it was decided under and their
// digest (v1alpha1.RunDigest). An approval records the digest it was given on. Before the cordon and before the
// executor starts, the approval must still hold: recorded, given on the current digest, and the digest still that of
// the current policy generation and executor image. Anything else voids it (approvalHolds, mayAct).

// decision is the outcome of deciding what will run: nothing to escalate, or why not.
type decision struct {
	escalateReason, escalateMessage string
}

// decide records in the status what will run for the remediation under its policy as it is now: for the cause the
// node's diagnosis confirmed, once there is one, and never an action that leaves one of the node's error findings of
// that cause unrepaired (a finding whose Fix is another action: that one runs, or nothing does).
func (r *Reconciler) decide(s *scope) decision {
	nr, p := s.nr, s.policy
	st := &nr.Status
	// What the plan is built for: the hypothesis and its parameters, or the cause the node showed instead (the
	// message's parameters were about another failure).
	sig, params := v1alpha1.SignatureID(nr.Spec.Signature), nr.Spec.Parameters
	st.Action = actionOf(p, nr)
	if d := st.Diagnosis; d != nil && d.Confirmed != "" {
		// The node confirmed a cause: its action follows from what the node shows.
		st.Action = causeAction(p, v1alpha1.SignatureID(d.Confirmed))
		if d.Confirmed != nr.Spec.Signature {
			sig, params = v1alpha1.SignatureID(d.Confirmed), nil
		}
		params = nodeTargets(params, d)
	}
	st.Plan = nil
	st.PolicyGeneration = p.Generation
	st.ExecutorImage = r.executorImage(p)
	defer func() { st.Digest = runDigest(nr) }()

	if !r.imageAllowed(st.ExecutorImage) {
		return decision{ReasonExecutorImageNotAllowed, fmt.Sprintf("policy %s asks for executor image %q, which this installation does not allow (the manager's --executor-image and --allowed-executor-images): nothing runs on node %s",
			p.Name, st.ExecutorImage, nr.Spec.NodeName)}
	}
	if fix, f := fixTheNodeNeeds(st.Diagnosis, st.Action); fix != "" {
		if fix == v1alpha1.ActionEscalate {
			return decision{ReasonNoNodeRepair, fmt.Sprintf("node %s shows %q, which no node repair fixes: %s Nothing was changed on the node", nr.Spec.NodeName, f.Summary, f.Repair)}
		}
		if !policy.Allows(p, fix) || (fix == v1alpha1.ActionInstallReferencePlugins && p.Spec.Repair.InstallReferencePlugins != nil && !*p.Spec.Repair.InstallReferencePlugins) {
			return decision{ReasonPlanCannotSucceed, fmt.Sprintf("node %s shows %q, which only %s repairs (%s would leave it broken); policy %s does not allow %s: allow it in spec.allowedActions (and spec.repair.installReferencePlugins for InstallReferencePlugins), or repair the node by hand. Nothing was changed on the node",
				nr.Spec.NodeName, f.Summary, fix, st.Action, p.Name, fix)}
		}
		st.Action = fix
	}
	if !st.Action.IsNodeAction() {
		return decision{}
	}
	// The node's layout, as its diagnosis found it, says which units and files the plan works with.
	repair, _ := layoutRepair(p.Spec.Repair, layoutOf(nr))
	plan, err := planner.Build(planner.Request{Signature: sig, Action: st.Action, Params: params, Repair: repair})
	switch {
	case errors.Is(err, planner.ErrVendorPlugin):
		return decision{ReasonEscalated, fmt.Sprintf("%v: cnimedic never installs or replaces a network provider's own plugin; check the provider's DaemonSet on node %s", err, nr.Spec.NodeName)}
	case err != nil:
		return decision{ReasonPlanFailed, fmt.Sprintf("no repair plan for %s: %v", nr.Spec.Signature, err)}
	}
	st.Plan = &plan
	return decision{}
}

// nodeTargets are the parameters a plan is built from once the node confirmed the cause: the file, the plugins and
// the link a repair works on are the node's, never the message's. The conflist is the one the confirmed finding names
// (the node's diagnosis reads the file the runtime loads), else none (the node picks the loaded one); the plugins
// are left to the node (it installs those the loaded chain uses that are missing or too old); the link is the one
// the node shows stale, else none. A message naming another file was refused on the node only after the drain; one
// naming another link or plugin could narrow the repair away from what the node shows.
func nodeTargets(params map[string]string, d *v1alpha1.Diagnosis) map[string]string {
	out := make(map[string]string, len(params))
	for k, v := range params {
		switch k {
		case v1alpha1.ParamConfigFile, v1alpha1.ParamPlugin, v1alpha1.ParamPluginType, v1alpha1.ParamBridge, v1alpha1.ParamLink, v1alpha1.ParamAddress:
		default:
			out[k] = v
		}
	}
	for _, f := range d.Findings {
		if f.Severity != v1alpha1.SeverityError || string(f.Signature) != d.Confirmed || f.Path == "" {
			continue
		}
		key := ""
		switch {
		case isConfList(f.Path):
			key = v1alpha1.ParamConfigFile
		case f.Signature == v1alpha1.SignatureStaleState && !strings.Contains(f.Path, "/"):
			key = v1alpha1.ParamBridge // the diagnosis' stale link finding names the link
		}
		if _, taken := out[key]; key != "" && !taken {
			out[key] = f.Path
		}
	}
	return out
}

// isConfList says whether a finding's path is a network configuration file (a CNI conf dir's .conf, .conflist or
// .json), not a directory, a plugin or containerd's config.
func isConfList(path string) bool {
	switch filepath.Ext(path) {
	case ".conf", ".conflist", ".json":
		return true
	}
	return false
}

// actionOf is the action for the remediation's signature, decided once: a custom signature's own, else the
// catalog's for what the evidence carried (its alternative when the policy allows it), refined by the policy's
// repair settings.
func actionOf(p *v1alpha1.RemediationPolicy, nr *v1alpha1.NodeRemediation) v1alpha1.RepairAction {
	if c, ok := customSignature(p, nr.Spec.Signature); ok {
		return c.Action
	}
	id := v1alpha1.SignatureID(nr.Spec.Signature)
	def, ok := signature.Lookup(id)
	if !ok {
		return v1alpha1.ActionEscalate
	}
	if a := def.ActionFor(nr.Spec.Parameters, p.Spec.AllowedActions); a != def.Action {
		return a
	}
	return planner.ActionFor(id, p.Spec.Repair)
}

// causeAction is the action for a cause the node's own diagnosis showed: the catalog's (its alternative when the
// policy allows it) under the policy's repair settings. The message-based refinements of actionOf (a plugin or an
// IPAM type named in the evidence) do not apply: the diagnosis reports a cause only where the node's own files show
// one cnimedic repairs, and marks the others with Fix Escalate.
func causeAction(p *v1alpha1.RemediationPolicy, sig v1alpha1.SignatureID) v1alpha1.RepairAction {
	if c, ok := customSignature(p, string(sig)); ok {
		return c.Action
	}
	if def, ok := signature.Lookup(sig); ok && def.Alternative != "" && slices.Contains(p.Spec.AllowedActions, def.Alternative) {
		return def.Alternative
	}
	return planner.ActionFor(sig, p.Spec.Repair)
}

// customSignature is the policy's own signature of that name, if it has one: the one lookup the workflow makes.
func customSignature(p *v1alpha1.RemediationPolicy, name string) (v1alpha1.CustomSignature, bool) {
	i := slices.IndexFunc(p.Spec.CustomSignatures, func(c v1alpha1.CustomSignature) bool { return c.Name == name })
	if i < 0 {
		return v1alpha1.CustomSignature{}, false
	}
	return p.Spec.CustomSignatures[i], true
}

// executorImage is the image executor pods of the policy run: the policy's own, or the installation's.
func (r *Reconciler) executorImage(p *v1alpha1.RemediationPolicy) string {
	if p.Spec.Executor.Image != "" {
		return p.Spec.Executor.Image
	}
	return r.Config.ExecutorImage
}

// imageAllowed: the installation's executor image, and the ones it lists as allowed, are the only images a policy
// may pick. The executor runs as root with the host's D-Bus socket: which image runs is the installation's choice.
func (r *Reconciler) imageAllowed(image string) bool {
	return image == r.Config.ExecutorImage || slices.Contains(r.Config.AllowedExecutorImages, image)
}

// fixTheNodeNeeds is the action an error finding of the confirmed cause needs when the chosen one cannot repair it.
func fixTheNodeNeeds(d *v1alpha1.Diagnosis, chosen v1alpha1.RepairAction) (v1alpha1.RepairAction, v1alpha1.Finding) {
	if d == nil || d.Confirmed == "" || !chosen.IsNodeAction() {
		return "", v1alpha1.Finding{}
	}
	for _, f := range d.Findings {
		if f.Severity == v1alpha1.SeverityError && string(f.Signature) == d.Confirmed && f.Fix != "" && f.Fix != chosen {
			return f.Fix, f
		}
	}
	return "", v1alpha1.Finding{}
}

func runDigest(nr *v1alpha1.NodeRemediation) string {
	st := nr.Status
	return v1alpha1.RunDigest(nr.Spec.NodeName, nr.Spec.PolicyName, st.PolicyGeneration, st.Action, st.ExecutorImage, st.Plan)
}

// approvalHolds says whether the remediation may act on the node: an approval is recorded, it was given on the
// digest of what is recorded to run, and that is still what the policy and the installation would run. The reason
// says what changed.
func (r *Reconciler) approvalHolds(s *scope) (bool, string) {
	nr, p := s.nr, s.policy
	st := nr.Status
	switch {
	case st.Approval == nil || st.Approval.Decision != v1alpha1.DecisionApproved:
		return false, "no approval is recorded"
	case st.Approval.Digest == "" || st.Approval.Digest != st.Digest:
		return false, fmt.Sprintf("what will run changed after the approval (digest %s, approved %s)", short(st.Digest), short(st.Approval.Digest))
	case st.Digest != runDigest(nr):
		return false, "the recorded action, plan or executor image do not match the recorded digest"
	case st.PolicyGeneration != p.Generation:
		return false, fmt.Sprintf("policy %s changed after the approval (generation %d, approved under %d)", p.Name, p.Generation, st.PolicyGeneration)
	case st.ExecutorImage != r.executorImage(p):
		return false, fmt.Sprintf("the executor image changed after the approval (%s, approved %s)", r.executorImage(p), st.ExecutorImage)
	}
	return true, ""
}

func short(digest string) string {
	d := strings.TrimPrefix(digest, "sha256:")
	if len(d) > 12 {
		d = d[:12]
	}
	if d == "" {
		return "none"
	}
	return d
}

// covered says whether the remediation's policy covers its node as the policy is now: its selector or node names,
// and control-plane nodes only by name. A remediation the policy does not cover never touches the node.
func covered(s *scope) (bool, string) {
	if s.node == nil {
		return false, fmt.Sprintf("node %s does not exist", s.nr.Spec.NodeName)
	}
	sel, err := policy.NewSelector(s.policy)
	if err != nil {
		return false, fmt.Sprintf("policy %s's node selector is invalid: %v", s.policy.Name, err)
	}
	if sel.Covers(s.node) {
		return true, ""
	}
	msg := fmt.Sprintf("policy %s does not cover node %s", s.policy.Name, s.nr.Spec.NodeName)
	if policy.IsControlPlane(s.node) {
		msg += " (a control-plane node is covered only when a policy names it in spec.nodeNames)"
	}
	return false, msg
}

// mayAct is asked right before the cordon and right before the executor starts. The policy must still cover the
// node, else the remediation ends Rejected; the node must still pass the preflight (Linux, a layout cnimedic serves),
// else it ends Escalated; the approval must still hold, else it is voided: the node is released,
// what will run is decided again under the policy as it is now, and the remediation waits for a new approval.
// Either way nothing is done to the node.
func (r *Reconciler) mayAct(ctx context.Context, s *scope) (bool, error) {
	if ok, why := covered(s); !ok {
		if err := r.release(ctx, s, true); err != nil {
			return false, fmt.Errorf("releasing node %s of %s, which its policy no longer covers: %w", s.nr.Spec.NodeName, s.nr.Name, err)
		}
		s.transition(v1alpha1.PhaseRejected, ReasonNotCovered, why+": nothing was changed on the node")
		return false, nil
	}
	if reason, msg := preflight(s); reason != "" {
		if err := r.release(ctx, s, true); err != nil {
			return false, fmt.Errorf("releasing node %s of %s, whose layout cnimedic cannot serve: %w", s.nr.Spec.NodeName, s.nr.Name, err)
		}
		s.transition(v1alpha1.PhaseEscalated, reason, msg)
		return false, nil
	}
	ok, why := r.approvalHolds(s)
	if ok {
		return true, nil
	}
	if err := r.release(ctx, s, true); err != nil {
		return false, fmt.Errorf("releasing node %s of %s, whose approval is void: %w", s.nr.Spec.NodeName, s.nr.Name, err)
	}
	// The approval annotation approved what was shown then; it must be given again for what will run now.
	if err := r.patchMeta(ctx, s, func(nr *v1alpha1.NodeRemediation) { delete(nr.Annotations, v1alpha1.AnnotationApprove) }); err != nil {
		return false, fmt.Errorf("removing the void approval annotation of %s: %w", s.nr.Name, err)
	}
	st := &s.nr.Status
	st.Approval, st.Drain = nil, nil
	s.setCondition(v1alpha1.RemediationApproved, metav1.ConditionFalse, ReasonApprovalVoided, why)
	if d := r.decide(s); d.escalateReason != "" {
		s.transition(v1alpha1.PhaseEscalated, d.escalateReason, d.escalateMessage)
		return false, nil
	}
	s.transition(v1alpha1.PhaseAwaitingApproval, ReasonApprovalVoided, fmt.Sprintf("the approval is void: %s; nothing was changed on the node. %s", why, approvalInstructions(s.nr)))
	return false, nil
}

// annotationApproves says whether the approve annotation approves what is recorded to run: "true" approves the
// current digest; a digest (what `kubectl cnimedic approve` writes, from the plan the approver was shown) approves
// only that one.
func annotationApproves(nr *v1alpha1.NodeRemediation) (bool, string) {
	v, ok := nr.Annotations[v1alpha1.AnnotationApprove]
	switch {
	case !ok:
		return false, ""
	case v == "true", v == nr.Status.Digest:
		return true, ""
	case strings.HasPrefix(v, "sha256:"):
		return false, fmt.Sprintf("the approval annotation approves digest %s, but what will run now is %s: approve again after looking at the plan", short(v), short(nr.Status.Digest))
	}
	return false, fmt.Sprintf("the approval annotation %s=%q is neither \"true\" nor a digest", v1alpha1.AnnotationApprove, v)
}
