package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
	"github.com/cnimedic/cnimedic/internal/classify"
)

const classifyExample = `  # What would cnimedic make of the cluster's events?
  kubectl get events -A -o json | kubectl cnimedic classify

  # Messages saved one per line, or JSON Lines with reason and message
  kubectl cnimedic classify -f messages.txt
  kubectl cnimedic classify -f events.jsonl -o jsonl

  # As a given policy would see them (its signatures, custom signatures and allowed actions)
  kubectl cnimedic classify -f events.json --policy policy.yaml`

func newClassifyCommand(streams genericiooptions.IOStreams) *cobra.Command {
	var (
		file       string
		output     string
		policyFile string
		allowed    []string
	)
	cmd := &cobra.Command{
		Use:   "classify [-f FILE]",
		Short: "Name the failure signature of pod sandbox errors, without a cluster",
		Long: "classify reads a Kubernetes EventList (kubectl get events -o json), JSON Lines with reason and " +
			"message fields, or plain messages one per line (the format is detected), and names each message's " +
			"failure signature with the detection controller's matcher. With events it also says, per node, " +
			"what cnimedic would do. It does not contact any cluster.",
		Example: classifyExample,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			opts := classify.Options{Output: output}
			for _, a := range allowed {
				opts.AllowedActions = append(opts.AllowedActions, v1alpha1.RepairAction(strings.TrimSpace(a)))
			}
			if policyFile != "" {
				spec, err := classify.LoadPolicy(policyFile)
				if err != nil {
					return err
				}
				opts.Policy = spec
			}
			in := streams.In
			if file != "" && file != "-" {
				f, err := os.Open(file)
				if err != nil {
					return err
				}
				defer f.Close()
				in = f
			}
			return classify.Run(in, streams.Out, streams.ErrOut, opts)
		},
	}
	flags := cmd.Flags()
	flags.StringVarP(&file, "filename", "f", "-", "file to read; - reads standard input")
	flags.StringVarP(&output, "output", "o", classify.OutputTable, fmt.Sprintf("output format: %s or %s (one JSON object per input message, in input order)", classify.OutputTable, classify.OutputJSONL))
	flags.StringVar(&policyFile, "policy", "", "RemediationPolicy manifest whose signatures and allowed actions to apply")
	flags.StringSliceVar(&allowed, "allowed-actions", nil, "actions the policy allows (default: the policy's, else every action but RestartCNIAgentPod)")
	return cmd
}
