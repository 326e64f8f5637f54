// Command remediator is cnimedic's node-side executor: it diagnoses a node's CNI and runtime (diagnose), previews
// what a repair plan would change (plan) and carries plans out (apply). The same flags say where the node's parts
// are, so that the executor pod (the host mounted at --host-root) and the tests (a directory) work alike.
package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/cnimedic/cnimedic/remediator/diagnose"
	"github.com/cnimedic/cnimedic/remediator/host"
	"github.com/cnimedic/cnimedic/remediator/ipam"
	"github.com/cnimedic/cnimedic/remediator/netstate"
	"github.com/cnimedic/cnimedic/remediator/node"
	"github.com/cnimedic/cnimedic/remediator/runtimecfg"
	"github.com/cnimedic/cnimedic/remediator/step"
)

// NodeFlags are the node's settings as the flags give them (one parse, straight into node.Settings), and the
// units and bus the flags name. Env completes them once per run from the node itself (node.Complete).
type NodeFlags struct {
	node.Settings
	KubeletUnit string
	RuntimeUnit string
	DBusAddress string

	complete *node.Settings
}

// Register adds the flags to a command.
func (f *NodeFlags) Register(fs *pflag.FlagSet) {
	s := &f.Settings
	fs.StringVar((*string)(&s.Root), "host-root", "/", "directory where the host's root filesystem is visible (the executor pod mounts it)")
	fs.StringVar(&s.ConfDir, "conf-dir", "", "CNI conf dir (host path); empty: the one the runtime reads (containerd's conf_dir, drop-ins merged), default "+runtimecfg.DefaultConfDir)
	fs.StringSliceVar(&s.BinDirs, "bin-dir", nil, "CNI plugin dirs, searched in order (host paths); empty: the runtime's (containerd's bin_dir), default "+runtimecfg.DefaultBinDir)
	fs.StringVar(&s.ContainerdConfig, "containerd-config", "", "containerd's config.toml (host path); empty: the detected layout's (kubeadm's "+runtimecfg.DefaultPath+")")
	fs.StringVar(&s.CRIEndpoint, "cri-socket", "", "the runtime's CRI socket, also containerd's API socket (host path); empty: the detected layout's (kubeadm's "+node.KubeadmSocket+")")
	fs.StringVar(&s.IPAMDataDir, "ipam-dir", ipam.DefaultDataDir, "host-local IPAM data dir (host path)")
	fs.StringVar(&s.NetnsDir, "netns-dir", netstate.DefaultNetnsDir, "named network namespaces dir (host path)")
	fs.StringVar(&s.FlannelSubnetEnv, "flannel-subnet-env", "/run/flannel/subnet.env", "flannel's subnet.env, which says what address cni0 must carry (host path)")
	fs.StringVar(&f.KubeletUnit, "kubelet-unit", "", "kubelet's systemd unit; empty: the detected layout's (kubeadm's "+node.KubeletUnit+"; k3s and RKE2 run kubelet and the runtime in one unit)")
	fs.StringVar(&f.RuntimeUnit, "runtime-unit", "", "the container runtime's systemd unit; empty: the detected layout's (kubeadm's "+node.RuntimeUnit+")")
	fs.StringVar(&s.BundleDir, "bundle-dir", "/opt/cnimedic/cni-bundle", "bundled reference plugins with their SHA256SUMS (a path in the remediator's own filesystem)")
	fs.StringVar(&f.DBusAddress, "dbus-address", "", "systemd's D-Bus address; empty: $DBUS_SYSTEM_BUS_ADDRESS or the system bus")
	fs.StringVar(&s.ProcDir, "proc-dir", "/proc", "/proc of the host's PID namespace, scanned for processes inside network namespaces")
	fs.StringVar(&s.NetNS, "link-netns", "", "network namespace (a path) whose links are read and deleted; empty: this process's (the host's, with hostNetwork)")
	fs.StringSliceVar(&s.Links, "link", nil, "links to report (default cni0, flannel.1, flannel-v6.1)")
}

// Root is the host root.
func (f *NodeFlags) Root() host.Root { return f.Settings.Root }

// given is the settings as the flags give them, with the units they name (nothing read from the node).
func (f *NodeFlags) given() node.Settings {
	s := f.Settings
	s.Units = node.UnitList(f.KubeletUnit, f.RuntimeUnit)
	return s
}

// Env is the node's settings for this run: the flags, completed once from the node (its layout, and the runtime's
// configuration read once, drop-ins merged).
func (f *NodeFlags) Env() step.Env {
	if f.complete == nil {
		s := node.Complete(f.given())
		f.complete = &s
	}
	return *f.complete
}

// DiagnoseOptions are the diagnosis' view of the node.
func (f *NodeFlags) DiagnoseOptions() diagnose.Options {
	return diagnose.Options{Settings: f.Env(), UnitStates: unitStates(f.DBusAddress)}
}

// subcommands builds the commands besides diagnose and plan; the executor half adds apply in its own file's
// init(), so that the two halves of the remediator do not edit one file.
var subcommands []func(*NodeFlags) *cobra.Command

func newRoot() *cobra.Command {
	flags := &NodeFlags{}
	root := &cobra.Command{
		Use:           "remediator",
		Short:         "cnimedic's node executor: diagnose, plan and repair a node's CNI and container runtime",
		Long:          "cnimedic's node executor: diagnose, plan and repair a node's CNI and container runtime.\n\n" + exitCodesHelp,
		SilenceUsage:  true,
		SilenceErrors: true,
		// Runs after the flags parsed and before any command's work: what fails before it is bad input.
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			started(cmd)
			return flags.check()
		},
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return badInput(err) })
	flags.Register(root.PersistentFlags())
	root.AddCommand(newDiagnose(flags), newPlan(flags))
	for _, c := range subcommands {
		root.AddCommand(c(flags))
	}
	return root
}

// check refuses flags that name what is not there: a --host-root that is not a directory would otherwise be
// reported as a node with nothing installed.
func (f *NodeFlags) check() error {
	st, err := os.Stat(string(f.Settings.Root))
	if err != nil {
		return badInput(fmt.Errorf("--host-root: %w", err))
	}
	if !st.IsDir() {
		return badInput(fmt.Errorf("--host-root: %s is not a directory", f.Settings.Root))
	}
	return nil
}

func main() {
	os.Exit(run(os.Args[1:], os.Stderr))
}
