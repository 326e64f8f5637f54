package main

import (
	"fmt"
	"io"
	"sort"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/printers"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
	"github.com/cnimedic/cnimedic/internal/termsafe"
)

const historyExample = `  # Every incident cnimedic recorded on a node, oldest first
  kubectl cnimedic history worker-1

  # The objects themselves
  kubectl cnimedic history worker-1 -o yaml`

func newHistoryCommand(c *cluster) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:     "history NODE",
		Short:   "List every NodeRemediation of a node, oldest first",
		Long:    "history lists the NodeRemediations labelled " + v1alpha1.LabelNode + "=NODE: each incident cnimedic recorded on the node, with how it ended and how long it took.",
		Example: historyExample,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output, outputText, outputWide, outputJSON, outputYAML, outputName); err != nil {
				return err
			}
			cl, err := c.client()
			if err != nil {
				return err
			}
			list := &v1alpha1.NodeRemediationList{}
			if err := cl.List(cmd.Context(), list, client.MatchingLabels{v1alpha1.LabelNode: args[0]}); err != nil {
				return fmt.Errorf("listing the NodeRemediations of node %s: %w", args[0], err)
			}
			items := list.Items
			sort.SliceStable(items, func(i, j int) bool {
				if !items[i].CreationTimestamp.Equal(&items[j].CreationTimestamp) {
					return items[i].CreationTimestamp.Before(&items[j].CreationTimestamp)
				}
				return items[i].Name < items[j].Name
			})
			switch output {
			case outputJSON, outputYAML:
				// The list as kubectl get would print it, so that it can be fed to other tools.
				list.Items = items
				list.APIVersion, list.Kind = v1alpha1.GroupVersion.String(), "NodeRemediationList"
				for i := range list.Items {
					list.Items[i].APIVersion, list.Items[i].Kind = v1alpha1.GroupVersion.String(), "NodeRemediation"
					list.Items[i].ManagedFields = nil
				}
				return printData(c.streams.Out, output, list)
			case outputName:
				for _, nr := range items {
					fmt.Fprintf(c.streams.Out, "noderemediation.cnimedic.io/%s\n", nr.Name)
				}
				return nil
			}
			if len(items) == 0 {
				fmt.Fprintf(c.streams.ErrOut, "No NodeRemediation for node %s.\n", args[0])
				return nil
			}
			return writeHistory(c.streams.Out, items, c.now(), output == outputWide)
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", outputText, "output format: wide, json, yaml or name (default: a table)")
	return cmd
}

func writeHistory(out io.Writer, items []v1alpha1.NodeRemediation, now time.Time, wide bool) error {
	// Status messages come from the cluster: a terminal escape in one is shown, not obeyed.
	out = termsafe.NewWriter(out)
	tw := printers.GetNewTabWriter(out)
	header := "NAME\tSIGNATURE\tACTION\tPHASE\tREASON\tCREATED\tTOOK"
	if wide {
		header += "\tPOLICY\tATTEMPTS\tAPPROVAL\tMESSAGE"
	}
	fmt.Fprintln(tw, header)
	for _, nr := range items {
		took := "-"
		if st, ct := nr.Status.StartTime, nr.Status.CompletionTime; ct != nil {
			from := nr.CreationTimestamp.Time
			if st != nil {
				from = st.Time
			}
			took = ct.Sub(from).Round(time.Second).String()
		} else if !nr.Status.Phase.IsTerminal() {
			took = "open"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s", nr.Name, nr.Spec.Signature, orNone(string(nr.Status.Action)),
			displayPhase(nr.Status.Phase), orNone(nr.Status.Reason), nr.CreationTimestamp.UTC().Format(time.RFC3339)+" ("+age(now, nr.CreationTimestamp.Time)+")", took)
		if wide {
			approval := "-"
			if a := nr.Status.Approval; a != nil {
				approval = fmt.Sprintf("%s (%s)", a.Decision, a.Source)
			}
			fmt.Fprintf(tw, "\t%s\t%d\t%s\t%s", nr.Spec.PolicyName, nr.Status.Attempt, approval, nr.Status.Message)
		}
		fmt.Fprintln(tw)
	}
	return tw.Flush()
}
