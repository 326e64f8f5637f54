package lab

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"path"
	"path/filepath"
	"strings"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/cnimedic/cnimedic/hack/ociimage"
	"github.com/cnimedic/cnimedic/test/nspawn"
)

// Paths inside a lab node.
const (
	nodeKubeletBin     = "/usr/local/bin/kubelet"
	nodeImagesDir      = "/opt/cnimedic-lab/images"
	nodeCACert         = "/etc/kubernetes/pki/ca.crt"
	nodeKubeconfig     = "/etc/kubernetes/kubelet.kubeconfig"
	nodeKubeletConfig  = "/var/lib/kubelet/config.yaml"
	nodeResolvConf     = "/etc/kubernetes/resolv.conf"
	nodeContainerdConf = "/etc/containerd/config.toml"
	// NodeConfList is the lab's network configuration on every node (bridge + host-local + portmap).
	NodeConfList = "/etc/cni/net.d/10-lab.conflist"
	// NodeCNIBinDir is where containerd looks for plugins: a link to Debian's /usr/lib/cni in the base rootfs.
	NodeCNIBinDir = "/opt/cni/bin"
	// NodePluginDir is the real directory behind NodeCNIBinDir, where plugin binaries are replaced.
	NodePluginDir = "/usr/lib/cni"
	// NodeIPAMDir is host-local's lease directory for the lab's network.
	NodeIPAMDir = "/var/lib/cni/networks/" + NetworkName
	// NetworkName is the conflist's network name.
	NetworkName = "lab"
	// PauseImage is containerd's sandbox_image on lab nodes, imported from bin/images at boot.
	PauseImage = "cnimedic.local/pause:dev"
	// HealthyCNIVersion is the conflist version of a healthy node: the highest Debian's plugins 1.1.1 support.
	HealthyCNIVersion = "1.0.0"

	kubeletUnit = "kubelet.service"
	imagesUnit  = "cnimedic-lab-images.service"
)

// NodeSpec is one worker node of the lab.
type NodeSpec struct {
	Name    string       `json:"name"`
	Address netip.Prefix `json:"address"` // on the lab bridge
	PodCIDR netip.Prefix `json:"podCIDR"` // this node's host-local range
	// StateDir is the node's nspawn state directory.
	StateDir string `json:"stateDir"`
	// Layout is how the node lays out its kubelet, runtime and CNI: empty for the lab's kubeadm-style node,
	// LayoutK3sAgent for one that emulates a k3s agent (k3s.go).
	Layout string `json:"layout,omitempty"`
}

// kubeletConfig is the part of kubelet.config.k8s.io/v1beta1 KubeletConfiguration the lab sets. It is a struct of
// our own rather than k8s.io/kubelet's type to keep that module (and its dependencies) out of go.mod.
type kubeletConfig struct {
	APIVersion                string            `json:"apiVersion"`
	Kind                      string            `json:"kind"`
	Authentication            kubeletAuthn      `json:"authentication"`
	Authorization             kubeletAuthz      `json:"authorization"`
	CgroupDriver              string            `json:"cgroupDriver"`
	FailCgroupV1              bool              `json:"failCgroupV1"`
	FailSwapOn                bool              `json:"failSwapOn"`
	ContainerRuntimeEndpoint  string            `json:"containerRuntimeEndpoint"`
	ClusterDomain             string            `json:"clusterDomain"`
	ClusterDNS                []string          `json:"clusterDNS"`
	ResolvConf                string            `json:"resolvConf"`
	SerializeImagePulls       bool              `json:"serializeImagePulls"`
	ImageGCHighThresholdPct   int32             `json:"imageGCHighThresholdPercent"`
	ImageGCLowThresholdPct    int32             `json:"imageGCLowThresholdPercent"`
	EvictionHard              map[string]string `json:"evictionHard"`
	NodeStatusUpdateFrequency string            `json:"nodeStatusUpdateFrequency"`
}

type kubeletAuthn struct {
	Anonymous struct {
		Enabled bool `json:"enabled"`
	} `json:"anonymous"`
	Webhook struct {
		Enabled bool `json:"enabled"`
	} `json:"webhook"`
	X509 struct {
		ClientCAFile string `json:"clientCAFile"`
	} `json:"x509"`
}

type kubeletAuthz struct {
	Mode string `json:"mode"`
}

func (l *Lab) kubeletConfigYAML(n NodeSpec) ([]byte, error) {
	c := kubeletConfig{
		APIVersion: "kubelet.config.k8s.io/v1beta1",
		Kind:       "KubeletConfiguration",
		// The measured recipe (docs/lab.md): kubelet 1.37 refuses cgroup v1 unless told
		// not to, the node's containerd uses cgroupfs, and the VM may have swap.
		CgroupDriver:             "cgroupfs",
		FailCgroupV1:             false,
		FailSwapOn:               false,
		ContainerRuntimeEndpoint: "unix://" + n.CRISocket(),
		// No DNS runs in the lab; a clusterDNS keeps kubelet from a MissingClusterDNS warning on every pod.
		ClusterDomain:       "cluster.local",
		ClusterDNS:          []string{"10.96.0.10"},
		ResolvConf:          nodeResolvConf,
		SerializeImagePulls: false,
		// The images are imported, never pulled: garbage-collecting one (the pause image!) would break the node.
		ImageGCHighThresholdPct: 100,
		ImageGCLowThresholdPct:  99,
		// The host's disk is shared with builds; the defaults (10 % free) could evict lab pods on a full CI disk.
		EvictionHard:              map[string]string{"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%", "nodefs.inodesFree": "1%"},
		NodeStatusUpdateFrequency: "5s",
	}
	// The API server reaches kubelets with a client certificate signed by the lab CA (kubectl logs and exec);
	// nothing else may talk to them.
	c.Authentication.X509.ClientCAFile = nodeCACert
	c.Authorization.Mode = "AlwaysAllow"
	return yaml.Marshal(c)
}

// unit is a systemd unit file, written from typed sections (values never come from a shell).
type unit struct {
	Description string
	Wants       []string
	After       []string
	Service     [][2]string // key, value, in order (ExecStart may repeat)
	WantedBy    string
}

func (u unit) render() []byte {
	var b strings.Builder
	b.WriteString("# Written by cnimedic's e2e/lab.\n[Unit]\n")
	fmt.Fprintf(&b, "Description=%s\n", u.Description)
	if len(u.Wants) > 0 {
		fmt.Fprintf(&b, "Wants=%s\n", strings.Join(u.Wants, " "))
	}
	if len(u.After) > 0 {
		fmt.Fprintf(&b, "After=%s\n", strings.Join(u.After, " "))
	}
	b.WriteString("\n[Service]\n")
	for _, kv := range u.Service {
		fmt.Fprintf(&b, "%s=%s\n", kv[0], kv[1])
	}
	if u.WantedBy != "" {
		fmt.Fprintf(&b, "\n[Install]\nWantedBy=%s\n", u.WantedBy)
	}
	return []byte(b.String())
}

// execLine renders argv for an Exec*= line. systemd splits it like a shell would and expands % specifiers and $;
// the lab's arguments are flags and paths from its own configuration, checked here to need no quoting.
func execLine(argv ...string) string {
	for _, a := range argv {
		if a == "" || strings.ContainsAny(a, " \t\n\"'\\%$;") {
			panic(fmt.Sprintf("lab: %q cannot go on a systemd Exec line unquoted", a))
		}
	}
	return strings.Join(argv, " ")
}

func (l *Lab) kubeletUnit(n NodeSpec) []byte {
	return unit{
		Description: "kubelet (cnimedic lab node " + n.Name + ")",
		// Wants, not Requires: stopping containerd (as the executor does) must not stop kubelet through a
		// dependency; the executor stops and starts each unit itself.
		Wants: []string{"containerd.service", imagesUnit},
		After: []string{"containerd.service", imagesUnit, "cnimedic-cgroup-rw.service"},
		Service: [][2]string{
			{"ExecStart", execLine(nodeKubeletBin,
				"--config="+nodeKubeletConfig,
				"--kubeconfig="+nodeKubeconfig,
				"--node-ip="+n.Address.Addr().String(),
				"--hostname-override="+n.Name,
				"--v=1")},
			// A crash restarts it; a stop through systemd (the executor's) does not.
			{"Restart", "always"},
			{"RestartSec", "1"},
		},
		WantedBy: "multi-user.target",
	}.render()
}

// imagesUnitFile imports the lab's images into containerd's k8s.io namespace at boot. kubelet waits for it, so the
// first sandbox finds the pause image.
func (l *Lab) imagesUnitFile(idx ociimage.Index) []byte {
	u := unit{
		Description: "import the cnimedic lab images into containerd",
		Wants:       []string{"containerd.service"},
		After:       []string{"containerd.service"},
		Service: [][2]string{
			{"Type", "oneshot"},
			{"RemainAfterExit", "yes"},
		},
		WantedBy: "multi-user.target",
	}
	for _, img := range idx.Images {
		u.Service = append(u.Service, [2]string{"ExecStart", execLine("/usr/bin/ctr", "--namespace=k8s.io", "images", "import", path.Join(nodeImagesDir, img.File))})
	}
	return u.render()
}

// ContainerdConfig is containerd's config.toml on a healthy lab node: the base rootfs's (hack/node-rootfs.sh), with
// the lab's pause image as sandbox_image. Faults edit this file; Reset writes it back.
func ContainerdConfig() []byte {
	return containerdConfig("# Written by cnimedic's e2e/lab (the base of hack/node-rootfs.sh with the lab's pause image).\n",
		"", NodeCNIBinDir, "/etc/cni/net.d")
}

// containerdConfig is a lab node's containerd config (version 2): a header, extra plugin tables, the CRI settings
// every node shares, and its CNI dirs.
func containerdConfig(header, extra, binDir, confDir string) []byte {
	return []byte(header + `version = 2
` + extra + `
[plugins."io.containerd.grpc.v1.cri"]
  restrict_oom_score_adj = true
  sandbox_image = "` + PauseImage + `"

  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"

    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
      SystemdCgroup = false

  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "` + binDir + `"
    conf_dir = "` + confDir + `"
`)
}

// ConfList is a node's network configuration, as typed data: bridge + host-local on the node's own pod range,
// and portmap, as in the seed runbook's example.
type ConfList struct {
	CNIVersion string       `json:"cniVersion,omitempty"`
	Name       string       `json:"name"`
	Plugins    []PluginConf `json:"plugins"`
}

// PluginConf is one plugin of a ConfList.
type PluginConf struct {
	Type         string          `json:"type"`
	Bridge       string          `json:"bridge,omitempty"`
	IsGateway    bool            `json:"isGateway,omitempty"`
	IPMasq       bool            `json:"ipMasq,omitempty"`
	IPAM         *IPAMConf       `json:"ipam,omitempty"`
	Capabilities map[string]bool `json:"capabilities,omitempty"`
	// Delegate is flannel's: the plugin it hands the bridge setup to.
	Delegate map[string]any `json:"delegate,omitempty"`
}

// IPAMConf is host-local's configuration.
type IPAMConf struct {
	Type   string         `json:"type"`
	Ranges [][]IPAMRange  `json:"ranges,omitempty"`
	Routes []IPAMRouteDst `json:"routes,omitempty"`
}

// IPAMRange is one host-local range.
type IPAMRange struct {
	Subnet string `json:"subnet"`
}

// IPAMRouteDst is a route host-local hands out.
type IPAMRouteDst struct {
	Dst string `json:"dst"`
}

// HealthyConfList is the conflist of a healthy node.
func HealthyConfList(n NodeSpec) ConfList {
	return ConfList{
		CNIVersion: HealthyCNIVersion,
		Name:       NetworkName,
		Plugins: []PluginConf{
			{
				Type: "bridge", Bridge: "cni0", IsGateway: true,
				IPAM: &IPAMConf{Type: "host-local", Ranges: [][]IPAMRange{{{Subnet: n.PodCIDR.String()}}}, Routes: []IPAMRouteDst{{Dst: "0.0.0.0/0"}}},
			},
			{Type: "portmap", Capabilities: map[string]bool{"portMappings": true}},
		},
	}
}

func (c ConfList) marshal() []byte {
	data, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		panic(err) // only plain types
	}
	return append(data, '\n')
}

// bootOptions are the nspawn options of a lab node.
func (l *Lab) bootOptions(n NodeSpec, idx ociimage.Index, pki nodePKI) (nspawn.Options, error) {
	kcfg, err := l.kubeletConfigYAML(n)
	if err != nil {
		return nspawn.Options{}, err
	}
	opts := nspawn.Options{
		Name:     n.Name,
		BaseRoot: l.cfg.NodeRootfs,
		StateDir: n.StateDir,
		Binds: []nspawn.Bind{
			{HostPath: l.cfg.binary("kubelet"), NodePath: nodeKubeletBin, ReadOnly: true},
		},
		Files: []nspawn.File{
			{Path: nodeCACert, Data: pki.CA},
			{Path: nodeKubeconfig, Data: pki.Kubeconfig, Mode: 0o600},
			{Path: nodeKubeletConfig, Data: kcfg},
			{Path: nodeResolvConf, Data: []byte("# The lab runs no DNS; kubelet needs a resolv.conf to build pods' own.\nnameserver 10.96.0.10\nsearch cluster.local\n")},
		},
		Network:     &nspawn.Network{Bridge: l.cfg.Bridge, Address: n.Address, Gateway: l.cfg.HostAddr.Addr()},
		BootTimeout: 2 * time.Minute,
	}
	if n.IsK3s() {
		// k3s imports the archives in agent/images at start; its one unit runs containerd and kubelet.
		// containerd's overlayfs snapshotter cannot stack on the node's own overlay root: its root is the plain
		// directory of the node's state dir that test/nspawn binds at /var/lib/containerd for the same reason
		// (test/nspawn/state.go, containerdDir; made before nspawn runs), unused there on this node.
		opts.Binds = append(opts.Binds,
			nspawn.Bind{HostPath: l.cfg.Images, NodePath: k3sImagesDir, ReadOnly: true},
			nspawn.Bind{HostPath: filepath.Join(n.StateDir, "containerd"), NodePath: k3sContainerdRoot})
		opts.Files = append(opts.Files, l.k3sBootFiles(n)...)
		opts.EnableUnits = []string{K3sUnit}
		return opts, nil
	}
	opts.Binds = append(opts.Binds, nspawn.Bind{HostPath: l.cfg.Images, NodePath: nodeImagesDir, ReadOnly: true})
	opts.Files = append(opts.Files,
		nspawn.File{Path: nodeContainerdConf, Data: ContainerdConfig()},
		nspawn.File{Path: NodeConfList, Data: HealthyConfList(n).marshal()},
		nspawn.File{Path: "/etc/systemd/system/" + kubeletUnit, Data: l.kubeletUnit(n)},
		nspawn.File{Path: "/etc/systemd/system/" + imagesUnit, Data: l.imagesUnitFile(idx)},
	)
	opts.EnableUnits = []string{imagesUnit, kubeletUnit}
	return opts, nil
}

// nodePKI is what a node gets of the lab's PKI.
type nodePKI struct {
	CA         []byte
	Kubeconfig []byte
}
