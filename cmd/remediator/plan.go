package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
	"github.com/cnimedic/cnimedic/internal/planner"
	"github.com/cnimedic/cnimedic/remediator/cri"
	"github.com/cnimedic/cnimedic/remediator/diagnose"
	"github.com/cnimedic/cnimedic/remediator/executor"
	"github.com/cnimedic/cnimedic/remediator/resolve"
	"github.com/cnimedic/cnimedic/remediator/step"
)

func newPlan(flags *NodeFlags) *cobra.Command {
	var output, signature, action, params, repair, planFile, termination string
	cmd := &cobra.Command{
		Use:   "plan (--signature ID [--params JSON] [--policy-repair JSON] | --plan FILE [--termination-message-path PATH])",
		Short: "Print the repair plan for a failure signature and, resolved against this node, what each step would change (changes nothing)",
		Long: `plan previews a repair on this node and changes nothing. With --signature it builds the plan as the manager
would; with --plan it previews a given plan (the manager's dry run hands the executor pod its plan this way) and,
with --termination-message-path, also reports the preview as an executor result (outcome NoChange, the changes it
would make with their diffs) in the pod's termination message. A plan that apply would refuse is refused here too, before anything is read.

` + exitCodesHelp,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkFormat(output); err != nil {
				return err
			}
			if planFile != "" {
				var plan v1alpha1.Plan
				err := flags.checkAllowlist()
				if err == nil {
					err = flags.checkRepairable()
				}
				if err == nil {
					plan, _, err = readPlan(planFile, cmd.InOrStdin(), flags.nodeUnits())
				}
				if err != nil {
					if termination != "" {
						res := v1alpha1.ExecutorResult{Outcome: v1alpha1.OutcomeFailed, Message: "nothing was changed on the node: " + err.Error()}
						_ = os.WriteFile(termination, executor.TerminationMessage(res, executor.TerminationMessageLimit), 0o644)
					}
					return err
				}
				env := flags.Env()
				env.CNISpecCeiling = specCeiling(cmd, flags)
				p := resolve.Preview(cmd.Context(), env, plan)
				if termination != "" {
					if err := os.WriteFile(termination, executor.TerminationMessage(previewResult(p), executor.TerminationMessageLimit), 0o644); err != nil {
						return fmt.Errorf("termination message: %w", err)
					}
				}
				return writeOutput(cmd.OutOrStdout(), output, p, func(w io.Writer) error { return resolve.WritePreviewText(w, p) })
			}
			req, err := planRequest(signature, action, params, repair, flags.Env())
			if err != nil {
				return badInput(err)
			}
			if err := flags.checkRepairable(); err != nil {
				return err
			}
			plan, err := planner.Build(req)
			if err != nil {
				return badInput(fmt.Errorf("--signature %s: %w", signature, err))
			}
			env := flags.Env()
			env.CNISpecCeiling = specCeiling(cmd, flags)
			p := resolve.Preview(cmd.Context(), env, plan)
			return writeOutput(cmd.OutOrStdout(), output, p, func(w io.Writer) error { return resolve.WritePreviewText(w, p) })
		},
	}
	cmd.Flags().StringVar(&signature, "signature", "", "failure signature id, such as cni-version-incompatible")
	cmd.Flags().StringVar(&action, "action", "", "repair action overriding the signature's own (as a custom signature maps one)")
	cmd.Flags().StringVar(&params, "params", "", `parameters from the evidence, as JSON, such as {"configFile":"10-net.conflist"}`)
	cmd.Flags().StringVar(&repair, "policy-repair", "", "the policy's spec.repair, as JSON")
	cmd.Flags().StringVarP(&output, "output", "o", "json", "json or text")
	cmd.Flags().StringVar(&planFile, "plan", "", `preview this plan (a v1alpha1.Plan as JSON; "-" reads stdin) instead of building one`)
	cmd.Flags().StringVar(&termination, "termination-message-path", "", "with --plan: also write the preview as an executor result here (the pod's terminationMessagePath)")
	cmd.MarkFlagsMutuallyExclusive("signature", "plan")
	return cmd
}

// planRequest checks the flags that build a plan: a known signature (or an --action for a custom one), JSON
// that decodes, and enum values the RemediationPolicy CRD would accept.
//
// What the policy's spec.repair leaves unset comes from the node's layout before the CRD's defaults: its units
// (one unit for both on k3s and RKE2), its containerd config and its standard CNI dirs.
func planRequest(signature, action, params, repair string, env step.Env) (planner.Request, error) {
	req := planner.Request{Signature: v1alpha1.SignatureID(signature), Action: v1alpha1.RepairAction(action)}
	if signature == "" {
		return req, fmt.Errorf("give --signature or --plan")
	}
	if action == "" && !slices.Contains(v1alpha1.BuiltinSignatures, req.Signature) {
		return req, fmt.Errorf("--signature: unknown signature %q (a custom signature needs --action)", signature)
	}
	if params != "" {
		if err := json.Unmarshal([]byte(params), &req.Params); err != nil {
			return req, fmt.Errorf("--params: want a JSON object of strings: %w", err)
		}
	}
	if repair != "" {
		dec := json.NewDecoder(strings.NewReader(repair))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&req.Repair); err != nil {
			return req, fmt.Errorf("--policy-repair: want a RemediationPolicy spec.repair as JSON: %w", err)
		}
	}
	switch s := req.Repair.VersionStrategy; s {
	case "", v1alpha1.VersionRepairRewriteConfig, v1alpha1.VersionRepairUpgradePlugins:
	default:
		return req, fmt.Errorf("--policy-repair: versionStrategy %q: want %s or %s", s, v1alpha1.VersionRepairRewriteConfig, v1alpha1.VersionRepairUpgradePlugins)
	}
	layoutDefaults(&req.Repair, env)
	req.Repair = planner.Defaulted(req.Repair)
	return req, nil
}

// previewResult reports a preview as the executor's typed result: nothing changed, and what would.
func previewResult(p resolve.PlanPreview) v1alpha1.ExecutorResult {
	res := v1alpha1.ExecutorResult{Outcome: v1alpha1.OutcomeNoChange, Message: "preview only: nothing was changed"}
	failed := 0
	for _, s := range p.Steps {
		msg := s.Message
		if s.Error != "" {
			msg = "would fail: " + s.Error
			failed++
		}
		res.Steps = append(res.Steps, v1alpha1.StepResult{Type: s.Type, Outcome: v1alpha1.StepSkipped, Message: msg})
		for _, c := range s.Changes {
			diff := c.Diff
			if diff == "" {
				diff = c.Binary
			}
			switch {
			case diff != "":
			case c.Remove:
				diff = "remove " + c.Path
			case c.OldMode != c.Mode:
				diff = fmt.Sprintf("chmod %#o -> %#o", c.OldMode, c.Mode)
			}
			res.Changes = append(res.Changes, v1alpha1.FileChange{Path: c.Path, Diff: diff, Why: c.Why})
		}
	}
	if failed > 0 {
		res.Message = fmt.Sprintf("preview only: nothing was changed; %d step(s) would fail as the node is now", failed)
	}
	return res
}

// specCeiling asks containerd its version, while it is up, to cap the cniVersion a repair may choose.
func specCeiling(cmd *cobra.Command, flags *NodeFlags) string {
	c, err := cri.Dial(flags.Root().Path(flags.Env().CRIEndpoint))
	if err != nil {
		return ""
	}
	defer c.Close()
	v, _, err := c.ContainerdVersion(cmd.Context())
	if err != nil {
		return ""
	}
	return diagnose.RuntimeSpecCeiling(v)
}

// layoutDefaults fills what a repair spec leaves unset from the node's settings: the units, containerd's config
// and, for RepairRuntimeCNIConfig, the layout's standard CNI dirs.
func layoutDefaults(r *v1alpha1.RepairSpec, env step.Env) {
	switch len(env.Units) {
	case 1:
		if r.Units.Kubelet == "" && r.Units.Runtime == "" {
			r.Units.Kubelet, r.Units.Runtime = env.Units[0], env.Units[0]
		}
	case 2:
		if r.Units.Kubelet == "" {
			r.Units.Kubelet = env.Units[0]
		}
		if r.Units.Runtime == "" {
			r.Units.Runtime = env.Units[1]
		}
	}
	if r.Containerd.ConfigPath == "" {
		r.Containerd.ConfigPath = env.ContainerdConfig
	}
	if env.Layout != nil {
		conf, bins := env.StandardCNIDirs()
		if r.Containerd.ConfDir == "" {
			r.Containerd.ConfDir = conf
		}
		if r.Containerd.BinDir == "" {
			r.Containerd.BinDir = bins[0]
		}
	}
}
