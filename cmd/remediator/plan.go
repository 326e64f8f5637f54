package main

import (
	"encoding/json"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
	"github.com/cnimedic/cnimedic/remediator/cri"
	"github.com/cnimedic/cnimedic/remediator/diagnose"
	"github.com/cnimedic/cnimedic/remediator/planner"
	"github.com/cnimedic/cnimedic/remediator/resolve"
)

func newPlan(flags *NodeFlags) *cobra.Command {
	var output, signature, action, params, repair string
	cmd := &cobra.Command{
		Use:   "plan --signature ID [--params JSON] [--policy-repair JSON]",
		Short: "Print the repair plan for a failure signature and, resolved against this node, what each step would change (changes nothing)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			req := planner.Request{Signature: v1alpha1.SignatureID(signature), Action: v1alpha1.RepairAction(action)}
			if params != "" {
				if err := json.Unmarshal([]byte(params), &req.Params); err != nil {
					return fmt.Errorf("--params: want a JSON object of strings: %w", err)
				}
			}
			if repair != "" {
				if err := json.Unmarshal([]byte(repair), &req.Repair); err != nil {
					return fmt.Errorf("--policy-repair: want a RemediationPolicy spec.repair as JSON: %w", err)
				}
			}
			req.Repair = planner.Defaulted(req.Repair)
			plan, err := planner.Build(req)
			if err != nil {
				return err
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
	_ = cmd.MarkFlagRequired("signature")
	return cmd
}

// specCeiling asks containerd its version, while it is up, to cap the cniVersion a repair may choose.
func specCeiling(cmd *cobra.Command, flags *NodeFlags) string {
	c, err := cri.Dial(flags.Root().Path(flags.CRISocket))
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
