// Command remediator is cnimedic's node-side executor: it diagnoses a node's CNI and runtime (diagnose), previews
// what a repair plan would change (plan) and carries plans out (apply). The same flags say where the node's parts
// are, so that the executor pod (the host mounted at --host-root) and the tests (a directory) work alike.
package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/cnimedic/cnimedic/internal/planner"
	"github.com/cnimedic/cnimedic/remediator/cri"
	"github.com/cnimedic/cnimedic/remediator/diagnose"
	"github.com/cnimedic/cnimedic/remediator/host"
	"github.com/cnimedic/cnimedic/remediator/ipam"
	"github.com/cnimedic/cnimedic/remediator/netstate"
	"github.com/cnimedic/cnimedic/remediator/runtimecfg"
	"github.com/cnimedic/cnimedic/remediator/step"
)

// NodeFlags say where the node's parts are. Paths are host paths, seen through HostRoot.
type NodeFlags struct {
	HostRoot         string
	ConfDir          string
	BinDirs          []string
	ContainerdConfig string
	CRISocket        string
	IPAMDir          string
	NetnsDir         string
	FlannelSubnetEnv string
	KubeletUnit      string
	RuntimeUnit      string
	BundleDir        string
	DBusAddress      string
	ProcDir          string
	LinkNetNS        string
	Links            []string
}

// Register adds the flags to a command.
func (f *NodeFlags) Register(fs *pflag.FlagSet) {
	fs.StringVar(&f.HostRoot, "host-root", "/", "directory where the host's root filesystem is visible (the executor pod mounts it)")
	fs.StringVar(&f.ConfDir, "conf-dir", "", "CNI conf dir (host path); empty: containerd's conf_dir from its config.toml, default "+runtimecfg.DefaultConfDir)
	fs.StringSliceVar(&f.BinDirs, "bin-dir", nil, "CNI plugin dirs, searched in order (host paths); empty: containerd's bin_dir, default "+runtimecfg.DefaultBinDir)
	fs.StringVar(&f.ContainerdConfig, "containerd-config", runtimecfg.DefaultPath, "containerd's config.toml (host path)")
	fs.StringVar(&f.CRISocket, "cri-socket", cri.DefaultEndpoint, "the runtime's CRI socket, also containerd's API socket (host path)")
	fs.StringVar(&f.IPAMDir, "ipam-dir", ipam.DefaultDataDir, "host-local IPAM data dir (host path)")
	fs.StringVar(&f.NetnsDir, "netns-dir", netstate.DefaultNetnsDir, "named network namespaces dir (host path)")
	fs.StringVar(&f.FlannelSubnetEnv, "flannel-subnet-env", "/run/flannel/subnet.env", "flannel's subnet.env, which says what address cni0 must carry (host path)")
	fs.StringVar(&f.KubeletUnit, "kubelet-unit", planner.DefaultKubeletUnit, "kubelet's systemd unit")
	fs.StringVar(&f.RuntimeUnit, "runtime-unit", planner.DefaultRuntimeUnit, "the container runtime's systemd unit")
	fs.StringVar(&f.BundleDir, "bundle-dir", "/opt/cnimedic/cni-bundle", "bundled reference plugins with their SHA256SUMS (a path in the remediator's own filesystem)")
	fs.StringVar(&f.DBusAddress, "dbus-address", "", "systemd's D-Bus address; empty: $DBUS_SYSTEM_BUS_ADDRESS or the system bus")
	fs.StringVar(&f.ProcDir, "proc-dir", "/proc", "/proc of the host's PID namespace, scanned for processes inside network namespaces")
	fs.StringVar(&f.LinkNetNS, "link-netns", "", "network namespace (a path) whose links are read and deleted; empty: this process's (the host's, with hostNetwork)")
	fs.StringSliceVar(&f.Links, "link", nil, "links to report (default cni0, flannel.1, flannel-v6.1)")
}

// Root is the host root.
func (f *NodeFlags) Root() host.Root { return host.Root(f.HostRoot) }

// Settings reads containerd's CNI settings and fills in the conf and bin dirs the flags leave empty.
func (f *NodeFlags) settings() (confDir string, binDirs []string) {
	s := runtimecfg.Read(f.Root(), f.ContainerdConfig).Settings
	confDir, binDirs = f.ConfDir, f.BinDirs
	if confDir == "" {
		confDir = s.ConfDir
	}
	if len(binDirs) == 0 {
		binDirs = s.BinDirs
	}
	return confDir, binDirs
}

// Env is the resolvers' view of the node.
func (f *NodeFlags) Env() step.Env {
	confDir, binDirs := f.settings()
	return step.Env{
		Root:             f.Root(),
		ConfDir:          confDir,
		BinDirs:          binDirs,
		ContainerdConfig: f.ContainerdConfig,
		IPAMDataDir:      f.IPAMDir,
		NetnsDir:         f.NetnsDir,
		FlannelSubnetEnv: f.FlannelSubnetEnv,
		BundleDir:        f.BundleDir,
		CRIEndpoint:      f.CRISocket,
		NetNS:            f.LinkNetNS,
		ProcDir:          f.ProcDir,
	}
}

// DiagnoseOptions are the diagnosis' view of the node.
func (f *NodeFlags) DiagnoseOptions() diagnose.Options {
	return diagnose.Options{
		Root:             f.Root(),
		ContainerdConfig: f.ContainerdConfig,
		ConfDir:          f.ConfDir,
		BinDirs:          f.BinDirs,
		CRIEndpoint:      f.CRISocket,
		IPAMDataDir:      f.IPAMDir,
		NetnsDir:         f.NetnsDir,
		FlannelSubnetEnv: f.FlannelSubnetEnv,
		Links:            f.Links,
		LinkNetNS:        f.LinkNetNS,
		ProcDir:          f.ProcDir,
		Units:            []string{f.KubeletUnit, f.RuntimeUnit},
		UnitStates:       unitStates(f.DBusAddress),
	}
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
	st, err := os.Stat(f.HostRoot)
	if err != nil {
		return badInput(fmt.Errorf("--host-root: %w", err))
	}
	if !st.IsDir() {
		return badInput(fmt.Errorf("--host-root: %s is not a directory", f.HostRoot))
	}
	return nil
}

func main() {
	os.Exit(run(os.Args[1:], os.Stderr))
}
