package main

import (
	"encoding/json"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/cnimedic/cnimedic/remediator/diagnose"
)

func newDiagnose(flags *NodeFlags) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "diagnose",
		Short: "Report the node's CNI configuration, plugins, runtime, IPAM, namespaces, links and units, and what is wrong (read-only)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			r := diagnose.Run(cmd.Context(), flags.DiagnoseOptions())
			return writeOutput(cmd.OutOrStdout(), output, r, func(w io.Writer) error { return diagnose.WriteText(w, r) })
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "json", "json or text")
	return cmd
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

// unitStates reads kubelet's and the runtime's unit states. It is the hook for the executor half's
// remediator/units package (systemd over D-Bus); until that is wired in, diagnose reports the units as not read.
var unitStates = func(dbusAddress string) diagnose.UnitStater { return nil }
