package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
	"github.com/cnimedic/cnimedic/remediator/diagnose"
	"github.com/cnimedic/cnimedic/remediator/executor"
	"github.com/cnimedic/cnimedic/remediator/units"
)

func newDiagnose(flags *NodeFlags) *cobra.Command {
	var output, id, termination string
	cmd := &cobra.Command{
		Use:   "diagnose [--remediation-id ID --termination-message-path PATH]",
		Short: "Report the node's CNI configuration, plugins, runtime, IPAM, namespaces, links and units, and what is wrong (read-only)",
		Long: `diagnose reads the node and reports what is wrong, changing nothing.

With --termination-message-path (and --remediation-id), it also writes a summary and its error and warning
findings there as an executor result of that remediation (outcome NoChange), for the manager: the workflow's
Diagnosing phase decides on them, and a custom signature whose action is Diagnose records them. The full report still goes to stdout. A node with problems is
still a diagnosis that was done: the exit code is 0 whenever the report was written.

` + exitCodesHelp,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkFormat(output); err != nil {
				return err
			}
			// The same allowlist as plan and apply: a diagnosis reads only the node's CNI and runtime files, whatever
			// dirs a policy names (the pod mounts what the policy says, read-only; this refuses to read it).
			if err := flags.checkAllowlist(); err != nil {
				return err
			}
			r := diagnose.Run(cmd.Context(), flags.DiagnoseOptions())
			if termination != "" {
				res := v1alpha1.ExecutorResult{RemediationID: id, Outcome: v1alpha1.OutcomeNoChange, Message: diagnose.Summary(r),
					Findings: diagnose.Decisive(r), Layout: r.Layout}
				if err := os.WriteFile(termination, executor.TerminationMessage(res, executor.TerminationMessageLimit), 0o644); err != nil {
					return fmt.Errorf("termination message: %w", err)
				}
			}
			return writeOutput(cmd.OutOrStdout(), output, r, func(w io.Writer) error { return diagnose.WriteText(w, r) })
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "json", "json or text")
	cmd.Flags().StringVar(&id, "remediation-id", "", "with --termination-message-path: the NodeRemediation the summary belongs to")
	cmd.Flags().StringVar(&termination, "termination-message-path", "", "also write a summary of the findings, as an executor result, here (the pod's terminationMessagePath)")
	return cmd
}

// checkFormat refuses an --output the commands do not write, before they do any work.
func checkFormat(format string) error {
	if format != "json" && format != "text" {
		return badInput(fmt.Errorf("--output: unknown format %q (want json or text)", format))
	}
	return nil
}

// writeOutput writes v as indented JSON, or as text through text.
func writeOutput(w io.Writer, format string, v any, text func(io.Writer) error) error {
	switch format {
	case "json":
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	case "text":
		return text(w)
	default:
		return fmt.Errorf("unknown output format %q (want json or text)", format)
	}
}

// unitStates reads kubelet's and the runtime's unit states from systemd over D-Bus (remediator/units). A node
// without a reachable systemd gets each unit reported with the connection error, not a failed diagnosis.
var unitStates = func(dbusAddress string) diagnose.UnitStater {
	return func(ctx context.Context, names []string) []diagnose.UnitState {
		out := make([]diagnose.UnitState, len(names))
		for i, n := range names {
			out[i].Unit = n
		}
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		m, err := units.Connect(cctx, dbusAddress)
		if err != nil {
			for i := range out {
				out[i].Error = err.Error()
			}
			return out
		}
		defer m.Close()
		for i, n := range names {
			st, err := m.State(cctx, n)
			if err != nil {
				out[i].Error = err.Error()
				continue
			}
			out[i].ActiveState, out[i].SubState = st.ActiveState, st.SubState
		}
		return out
	}
}
