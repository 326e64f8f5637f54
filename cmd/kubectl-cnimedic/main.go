// Command kubectl-cnimedic is cnimedic's kubectl plugin: installed on the PATH, it runs as `kubectl cnimedic`.
// Each subcommand lives in its own file and registers itself in newRootCommand.
package main

import (
	"os"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/cnimedic/cnimedic/internal/termsafe"
)

func main() {
	streams := genericiooptions.IOStreams{In: os.Stdin, Out: os.Stdout, ErrOut: os.Stderr}
	if err := newRootCommand(streams).Execute(); err != nil {
		// cobra has printed the error; kubectl plugins report failure through the exit status.
		os.Exit(1)
	}
}

// newRootCommand builds the command tree on the given streams, so that tests can drive it.
func newRootCommand(streams genericiooptions.IOStreams) *cobra.Command {
	root := &cobra.Command{
		Use:   "kubectl-cnimedic",
		Short: "Inspect and drive cnimedic, the operator that repairs nodes whose pod networking is broken",
		Annotations: map[string]string{
			// Help and usage then read "kubectl cnimedic ...", the way users invoke a plugin.
			cobra.CommandDisplayNameAnnotation: "kubectl cnimedic",
		},
		// A wrong flag deserves the usage; a failing command deserves only its error.
		SilenceUsage: true,
	}
	// Everything on stderr is for a person (progress, warnings, errors that may quote the cluster's objects): a
	// terminal escape in it is shown, never obeyed. Text outputs on stdout do the same (termsafe.NewWriter).
	streams.ErrOut = termsafe.NewWriter(streams.ErrOut)
	root.SetIn(streams.In)
	root.SetOut(streams.Out)
	root.SetErr(streams.ErrOut)
	root.AddCommand(newClassifyCommand(streams))
	addClusterCommands(root, streams)
	return root
}
