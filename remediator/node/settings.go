// Package node is the node's settings as one value: where the node keeps its CNI files, runtime, sockets and
// units, parsed once from the remediator's flags, completed once per run from the node itself (its layout and
// its runtime's configuration, read once) and handed down to the diagnosis, the resolvers, the executor and the
// host-side run. Paths are host paths, seen through Root.
package node

import (
	"io/fs"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
	"github.com/cnimedic/cnimedic/remediator/host"
	"github.com/cnimedic/cnimedic/remediator/runtimecfg"
)

// Settings say where the node's parts are. The JSON names are the host-side run's settings file (run.json), so
// that the pod hands the run the same value it parsed.
type Settings struct {
	// Root is where this process sees the host's root filesystem (not carried to the host-side run, whose root is
	// its own).
	Root host.Root `json:"-"`
	// ConfDir is the CNI conf dir the runtime reads (containerd's conf_dir).
	ConfDir string `json:"confDir"`
	// BinDirs are the CNI plugin search path (containerd's bin_dir, possibly several).
	BinDirs []string `json:"binDirs"`
	// ContainerdConfig is containerd's config.toml as it runs (the layout's RuntimeConfig).
	ContainerdConfig string `json:"containerdConfig"`
	// IPAMDataDir is host-local's data dir (/var/lib/cni/networks).
	IPAMDataDir string `json:"ipamDataDir"`
	// NetnsDir is where named network namespaces are bind-mounted (/var/run/netns).
	NetnsDir string `json:"netnsDir"`
	// FlannelSubnetEnv is flanneld's subnet.env (host path; /run/flannel/subnet.env when empty): while it exists,
	// flannel's VXLAN device flannel.1 is the node's own, which DeleteLink may delete.
	FlannelSubnetEnv string `json:"flannelSubnetEnv,omitempty"`
	// BundleDir is the directory of the bundled reference plugins and their sha256 manifest (a path inside the
	// executor's own image, or the host-side run's staged copy).
	BundleDir string `json:"bundleDir,omitempty"`
	// CRIEndpoint is the runtime's CRI socket (host path).
	CRIEndpoint string `json:"criEndpoint"`
	// CNISpecCeiling is the highest CNI spec version the runtime's own libcni implements (1.0.0 for containerd 1.6
	// and 1.7, 1.1.0 for 2.x; see diagnose.RuntimeSpecCeiling). SetCNIVersion never picks a version above it when
	// it chooses one itself. Empty: no limit. Read it while the runtime is still up (it is stopped during repairs).
	CNISpecCeiling string `json:"cniSpecCeiling,omitempty"`
	// ProcDir is the /proc scanned for processes still inside a network namespace before RemoveStaleNetns calls
	// it stale (the executor runs in the host's PID namespace); empty skips that check.
	ProcDir string `json:"procDir,omitempty"`
	// CNICacheDir is libcni's cache of results (cnicache.DefaultDir when empty; runtimes use libcni's default,
	// so only tests set it).
	CNICacheDir string `json:"cniCacheDir,omitempty"`
	// NetNS is the network namespace (a path in this process's view) whose links are read and deleted; empty is
	// this process's own, which in the executor pod (hostNetwork) is the host's. Tests point it elsewhere.
	NetNS string `json:"-"`
	// Links are the links the diagnosis reports (netstate.DefaultLinks when empty).
	Links []string `json:"-"`
	// Units are the kubelet's and the runtime's systemd units in the order a repair stops them (one unit where
	// both run inside it: k3s, RKE2).
	Units []string `json:"-"`
	// Layout is the node's layout as Detect found it (nil: not detected, such as in the apply pod, which does not
	// mount the host's files; the host-side run detects it there).
	Layout *v1alpha1.NodeLayout `json:"layout,omitempty"`
	// Contradictions say where a flag (the policy's value) contradicts what the node shows; the flag's value is the
	// one used, and the diagnosis reports each as a finding.
	Contradictions []string `json:"-"`
	// UnitsContradict is set when the units given are not the layout's: plan and apply refuse to stop units the
	// node does not run its kubelet and runtime in.
	UnitsContradict bool `json:"-"`
	// Runtime is the runtime's configuration as read once for this run, drop-ins merged (nil: not read).
	Runtime *runtimecfg.Config `json:"-"`
	// Backups lists earlier copies of a host file that the executor kept (its journals), newest first.
	// RestoreConfList restores the newest one that loads. Nil: no backups are known.
	Backups func(hostPath string) ([]BackupCopy, error) `json:"-"`
}

// BackupCopy is an earlier copy of a file, as the executor kept it.
type BackupCopy struct {
	// Source says where the copy comes from (such as the journal and record), for the result's message.
	Source  string
	Content []byte
	Mode    fs.FileMode
}

// Local is where this process sees the host path p (host.Root.Local).
func (s Settings) Local(p string) string { return s.Root.Local(p) }
