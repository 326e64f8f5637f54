package main

import (
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
)

// The subcommands that talk to a cluster share kubectl's connection flags (cli-runtime's ConfigFlags:
// --kubeconfig, --context, -n and the rest), so `kubectl cnimedic` reaches the same cluster as `kubectl` does with
// the same flags.

// cluster is what a subcommand needs to reach the cluster.
type cluster struct {
	flags   *genericclioptions.ConfigFlags
	streams genericiooptions.IOStreams
	// now is the clock ages and waits are computed against; tests pin it.
	now func() time.Time
}

var pluginScheme = runtime.NewScheme()

func init() {
	utilruntime.Must(clientgoscheme.AddToScheme(pluginScheme))
	utilruntime.Must(v1alpha1.AddToScheme(pluginScheme))
}

// addClusterCommands registers the subcommands that read or change cnimedic's objects in a cluster.
func addClusterCommands(root *cobra.Command, streams genericiooptions.IOStreams) {
	c := &cluster{flags: genericclioptions.NewConfigFlags(true), streams: streams, now: time.Now}
	c.flags.AddFlags(root.PersistentFlags())
	root.AddCommand(
		newStatusCommand(c),
		newApproveCommand(c),
		newRejectCommand(c),
		newDescribeCommand(c),
		newHistoryCommand(c),
		newDiagnoseCommand(c),
	)
}

func (c *cluster) client() (client.Client, error) {
	cfg, err := c.flags.ToRESTConfig()
	if err != nil {
		return nil, err
	}
	return client.New(cfg, client.Options{Scheme: pluginScheme})
}

func (c *cluster) clientset() (kubernetes.Interface, error) {
	cfg, err := c.flags.ToRESTConfig()
	if err != nil {
		return nil, err
	}
	return kubernetes.NewForConfig(cfg)
}

// explicitNamespace is the namespace given with -n, or "" when the user gave none (cnimedic's objects are
// cluster-scoped; only diagnose runs a pod, and it defaults to cnimedic's own namespace, not the context's).
func (c *cluster) explicitNamespace() string {
	if c.flags.Namespace == nil {
		return ""
	}
	return *c.flags.Namespace
}

// Output formats shared by the subcommands.
const (
	outputText = ""
	outputWide = "wide"
	outputJSON = "json"
	outputYAML = "yaml"
	outputName = "name"
)

// printData writes v as JSON or YAML, the machine-readable forms of -o.
func printData(w io.Writer, format string, v any) error {
	switch format {
	case outputJSON:
		enc := json.NewEncoder(w)
		enc.SetIndent("", "    ")
		return enc.Encode(v)
	case outputYAML:
		b, err := yaml.Marshal(v)
		if err != nil {
			return err
		}
		_, err = w.Write(b)
		return err
	}
	return fmt.Errorf("unknown output format %q", format)
}

// checkOutput refuses an -o value the command does not know before it contacts the cluster.
func checkOutput(format string, allowed ...string) error {
	for _, a := range allowed {
		if format == a {
			return nil
		}
	}
	return fmt.Errorf("unknown output format %q: allowed are %q", format, allowed)
}
