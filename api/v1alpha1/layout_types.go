package v1alpha1

// LayoutKind names how a node lays out its kubelet, container runtime and CNI: which units run them, where the CRI
// socket, the runtime's config and the CNI directories are.
// +kubebuilder:validation:Enum=kubeadm;k3s;rke2;crio;microk8s;unknown
type LayoutKind string

const (
	// LayoutKubeadm is kubelet and containerd as separate systemd units with the distribution's paths
	// (/etc/containerd/config.toml, /run/containerd/containerd.sock), as kubeadm and most managed node images run them.
	LayoutKubeadm LayoutKind = "kubeadm"
	// LayoutK3s is k3s: kubelet and containerd inside one unit (k3s or k3s-agent), containerd's config generated at
	// every start from a template under /var/lib/rancher/k3s/agent/etc/containerd/.
	LayoutK3s LayoutKind = "k3s"
	// LayoutRKE2 is RKE2: like k3s, under /var/lib/rancher/rke2 and the units rke2-server or rke2-agent.
	LayoutRKE2 LayoutKind = "rke2"
	// LayoutCRIO is CRI-O as the runtime: recognised, not repaired.
	LayoutCRIO LayoutKind = "crio"
	// LayoutMicroK8s is MicroK8s (snap): recognised, not repaired.
	LayoutMicroK8s LayoutKind = "microk8s"
	// LayoutUnknown is a node whose runtime no known layout describes.
	LayoutUnknown LayoutKind = "unknown"
)

// NodeLayout is where a node keeps its kubelet, runtime and CNI, as the read-only diagnosis found them on the node.
// Paths are host paths.
type NodeLayout struct {
	// Kind of layout.
	Kind LayoutKind `json:"kind"`
	// Role is server or agent for k3s and RKE2.
	// +optional
	Role string `json:"role,omitempty"`
	// Units are the systemd units a repair stops (in this order) and starts (in reverse): kubelet's, then the
	// runtime's; one unit when both run inside it (k3s, RKE2).
	// +optional
	// +listType=atomic
	Units []string `json:"units,omitempty"`
	// CRISocket is the runtime's CRI socket.
	// +optional
	CRISocket string `json:"criSocket,omitempty"`
	// RuntimeConfig is the runtime's config file as it runs.
	// +optional
	RuntimeConfig string `json:"runtimeConfig,omitempty"`
	// RuntimeConfigTemplate is the file RuntimeConfig is generated from at every start of its unit (k3s, RKE2): a
	// lasting repair edits it, never RuntimeConfig.
	// +optional
	RuntimeConfigTemplate string `json:"runtimeConfigTemplate,omitempty"`
	// RuntimeConfigImports are the drop-in files the runtime merges over RuntimeConfig, in the order it merges them.
	// +optional
	// +listType=atomic
	RuntimeConfigImports []string `json:"runtimeConfigImports,omitempty"`
	// ConfDir is the CNI configuration directory the runtime loads.
	// +optional
	ConfDir string `json:"confDir,omitempty"`
	// BinDirs are the CNI plugin directories the runtime searches, in order.
	// +optional
	// +listType=atomic
	BinDirs []string `json:"binDirs,omitempty"`
	// StandardConfDir and StandardBinDirs are the CNI dirs the runtime reads when nothing changed them, which a
	// repair of the runtime's CNI settings points it back to: containerd's defaults, or the distribution's own where
	// it writes them into the config it generates (k3s with its flannel). ConfDir and BinDirs are what it reads now,
	// which may be the broken value.
	// +optional
	StandardConfDir string `json:"standardConfDir,omitempty"`
	// +optional
	// +listType=atomic
	StandardBinDirs []string `json:"standardBinDirs,omitempty"`
	// HostPaths are the host directories the executor pod mounts on this node besides the host root: the ones the
	// layout has, never one it lacks.
	// +optional
	// +listType=atomic
	HostPaths []string `json:"hostPaths,omitempty"`
	// Servable says whether cnimedic can repair this node; when false, Reason says why and a remediation escalates
	// without cordoning the node.
	Servable bool `json:"servable"`
	// Reason says why the layout cannot be served, or what in it contradicts the policy.
	// +optional
	Reason string `json:"reason,omitempty"`
}
