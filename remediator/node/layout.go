package node

import (
	"fmt"
	"os"
	"path"
	"slices"
	"sort"
	"strings"

	"github.com/pelletier/go-toml/v2"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
	"github.com/cnimedic/cnimedic/remediator/host"
	"github.com/cnimedic/cnimedic/remediator/runtimecfg"
)

// Where each layout keeps its parts, as each project's own source and documentation put them (the READMEs of
// remediator/node/testdata cite them, one tree per layout).
const (
	// SystemdMarker exists while systemd is the init system (sd_booted(3)).
	SystemdMarker = "/run/systemd/system"

	KubeadmSocket = "/run/containerd/containerd.sock"
	KubeadmConfig = runtimecfg.DefaultPath
	KubeletUnit   = "kubelet.service"
	RuntimeUnit   = "containerd.service"

	// RancherSocket is the containerd socket k3s and RKE2 both run (k3s: pkg/agent/config, Containerd.State
	// /run/k3s/containerd; RKE2: pkg/executor/staticpod/spw.go ContainerdSock).
	RancherSocket = "/run/k3s/containerd/containerd.sock"
	K3sDir        = "/var/lib/rancher/k3s"
	RKE2Dir       = "/var/lib/rancher/rke2"

	CRIOConfig    = "/etc/crio/crio.conf"
	CRIODropInDir = "/etc/crio/crio.conf.d"
	CRIOUnit      = "crio.service"

	MicroK8sData     = "/var/snap/microk8s/current"
	MicroK8sSocket   = "/var/snap/microk8s/common/run/containerd.sock"
	MicroK8sConfig   = MicroK8sData + "/args/containerd.toml"
	MicroK8sTemplate = MicroK8sData + "/args/containerd-template.toml"
)

// CRISockets are the places the known layouts put their CRI socket; a node with none of them has no runtime
// cnimedic knows how to reach.
var CRISockets = []string{KubeadmSocket, RancherSocket, "/run/crio/crio.sock", "/var/run/crio/crio.sock", MicroK8sSocket}

// UnitDirs are where systemd unit files are installed: by the administrator and installers such as k3s's
// install.sh and RKE2's (/etc/systemd/system), tarball installs (/usr/local/lib/systemd/system) and packages
// (/usr/lib/systemd/system, /lib/systemd/system). /run/systemd/system holds runtime units.
var UnitDirs = []string{"/etc/systemd/system", "/run/systemd/system", "/usr/local/lib/systemd/system", "/usr/lib/systemd/system", "/lib/systemd/system"}

// ReadPaths are the host paths Detect reads: a pod that detects the layout must see them (read-only).
var ReadPaths = append([]string{SystemdMarker, "/etc/containerd", "/run/containerd", "/run/k3s/containerd",
	K3sDir + "/agent/etc", K3sDir + "/server", RKE2Dir + "/agent/etc", RKE2Dir + "/server", "/etc/crio", "/run/crio",
	"/var/snap/microk8s/current/args", "/var/snap/microk8s/common/run"}, UnitDirs...)

// rancher is what k3s and RKE2 share: one unit per role that runs kubelet and containerd, and a containerd config
// generated at every start from a template in the same directory.
type rancher struct {
	kind         v1alpha1.LayoutKind
	dir          string
	server       string // the server role's unit
	agent        string // the agent role's unit
	defaultConf  string // the CNI dirs the generated config names (used when it has not been generated yet)
	defaultBins  []string
	templateDocs string
}

var (
	// k3s: units from install.sh (k3s.service for "k3s server", k3s-agent.service for "k3s agent"); CNI conf dir
	// agent/etc/cni/net.d and the bin dir holding the bundled plugins, data/current/bin (pkg/agent/config,
	// CNIConfDir and CNIBinDir); templates config-v3.toml.tmpl, then config.toml.tmpl (pkg/agent/containerd/config.go).
	k3s = rancher{kind: v1alpha1.LayoutK3s, dir: K3sDir, server: "k3s.service", agent: "k3s-agent.service",
		defaultConf: K3sDir + "/agent/etc/cni/net.d", defaultBins: []string{K3sDir + "/data/current/bin"},
		templateDocs: "https://docs.k3s.io/advanced#configuring-containerd"}
	// RKE2: units rke2-server.service and rke2-agent.service (bundle/lib/systemd/system); RKE2 runs no flannel
	// of its own (pkg/cli/defaults/defaults.go), so containerd keeps its default CNI dirs, where the CNI charts
	// install (bundle/bin/rke2-uninstall.sh removes /etc/cni and /opt/cni/bin).
	rke2 = rancher{kind: v1alpha1.LayoutRKE2, dir: RKE2Dir, server: "rke2-server.service", agent: "rke2-agent.service",
		defaultConf: runtimecfg.DefaultConfDir, defaultBins: []string{runtimecfg.DefaultBinDir},
		templateDocs: "https://docs.rke2.io/advanced#configuring-containerd"}
)

// TemplateNames are the templates k3s and RKE2 render containerd's config.toml from, in the order they look for
// them (k3s pkg/agent/containerd/config.go, templateGenerations: the version 3 template first).
var TemplateNames = []string{"config-v3.toml.tmpl", "config.toml.tmpl"}

// Detected is the node's layout and its runtime's configuration, read once.
type Detected struct {
	Layout v1alpha1.NodeLayout
	// Runtime is containerd's configuration, drop-ins merged (nil for a layout whose runtime is not containerd).
	Runtime *runtimecfg.Config
}

// Detect finds how the node at root lays out its kubelet, runtime and CNI, reading files only.
func Detect(root host.Root) Detected {
	systemd := isDir(root, SystemdMarker)
	var d Detected
	switch {
	case isDir(root, path.Dir(MicroK8sData)):
		d = microk8s(root)
	case hasUnit(root, k3s.server) || hasUnit(root, k3s.agent) || isDir(root, K3sDir+"/agent"):
		d = k3s.detect(root)
	case hasUnit(root, rke2.server) || hasUnit(root, rke2.agent) || isDir(root, RKE2Dir+"/agent"):
		d = rke2.detect(root)
	case isCRIO(root):
		d = crio(root)
	case hasUnit(root, RuntimeUnit) || exists(root, KubeadmConfig) || exists(root, KubeadmSocket):
		d = kubeadm(root)
	default:
		d.Layout = v1alpha1.NodeLayout{Kind: v1alpha1.LayoutUnknown, Reason: "no kubelet or container runtime layout cnimedic knows is installed (no k3s, RKE2, MicroK8s, CRI-O or containerd files)"}
	}
	l := &d.Layout
	switch {
	case l.Kind == v1alpha1.LayoutUnknown:
	case !slices.ContainsFunc(CRISockets, func(s string) bool { return exists(root, s) }):
		l.Servable = false
		l.Reason = joinReason(l.Reason, fmt.Sprintf("no CRI socket where any known layout puts it (%s): the runtime is not running or the node is laid out in a way cnimedic does not know", strings.Join(CRISockets, ", ")))
	case !systemd:
		l.Servable = false
		l.Reason = joinReason(l.Reason, "no systemd on this node ("+SystemdMarker+" is absent): cnimedic's repairs run as a transient systemd unit and stop and start the runtime's units")
	}
	if !systemd {
		l.Units = nil
	}
	l.HostPaths = hostPaths(root, *l)
	return d
}

func (r rancher) detect(root host.Root) Detected {
	l := v1alpha1.NodeLayout{Kind: r.kind, CRISocket: RancherSocket, Servable: true}
	server, agent := hasUnit(root, r.server), hasUnit(root, r.agent)
	switch {
	case server && agent:
		l.Role, l.Units = "server", []string{r.server}
		// Both installed: the running one is the one whose unit is enabled; the server's data dir tells.
		if !isDir(root, r.dir+"/server") {
			l.Role, l.Units = "agent", []string{r.agent}
		}
	case server:
		l.Role, l.Units = "server", []string{r.server}
	case agent:
		l.Role, l.Units = "agent", []string{r.agent}
	case isDir(root, r.dir+"/server"):
		l.Role = "server"
		l.Servable = false
		l.Reason = fmt.Sprintf("%s's files are here but neither %s nor %s is installed: the unit that runs kubelet and containerd is unknown", r.kind, r.server, r.agent)
	default:
		l.Role = "agent"
		l.Servable = false
		l.Reason = fmt.Sprintf("%s's files are here but neither %s nor %s is installed: the unit that runs kubelet and containerd is unknown", r.kind, r.server, r.agent)
	}
	etc := r.dir + "/agent/etc/containerd"
	l.RuntimeConfig = etc + "/config.toml"
	for _, t := range TemplateNames {
		if exists(root, etc+"/"+t) {
			l.RuntimeConfigTemplate = etc + "/" + t
			break
		}
	}
	rt := runtimecfg.Read(root, l.RuntimeConfig)
	setCNI(&l, rt)
	if !rt.Exists {
		// Not generated yet (the unit has not started since install): the dirs the unit will write into it.
		l.ConfDir, l.BinDirs = r.defaultConf, r.defaultBins
	}
	return Detected{Layout: l, Runtime: &rt}
}

func kubeadm(root host.Root) Detected {
	l := v1alpha1.NodeLayout{Kind: v1alpha1.LayoutKubeadm, CRISocket: KubeadmSocket, RuntimeConfig: KubeadmConfig, Servable: true}
	if hasUnit(root, KubeletUnit) && hasUnit(root, RuntimeUnit) {
		l.Units = []string{KubeletUnit, RuntimeUnit}
	}
	rt := runtimecfg.Read(root, KubeadmConfig)
	setCNI(&l, rt)
	return Detected{Layout: l, Runtime: &rt}
}

func setCNI(l *v1alpha1.NodeLayout, rt runtimecfg.Config) {
	l.ConfDir = rt.Settings.ConfDir
	l.BinDirs = slices.Clone(rt.Settings.BinDirs)
	l.RuntimeConfigImports = slices.Clone(rt.DropIns)
}

// microk8s: the snap's containerd runs with --config ${SNAP_DATA}/args/containerd.toml and --address
// ${SNAP_COMMON}/run/containerd.sock (microk8s-resources/default-args/containerd), its config rendered from
// args/containerd-template.toml, whose CNI dirs are ${SNAP_DATA}/args/cni-network and ${SNAP_DATA}/opt/cni/bin.
func microk8s(root host.Root) Detected {
	l := v1alpha1.NodeLayout{Kind: v1alpha1.LayoutMicroK8s, CRISocket: MicroK8sSocket, RuntimeConfig: MicroK8sConfig,
		Units:  []string{"snap.microk8s.daemon-kubelite.service", "snap.microk8s.daemon-containerd.service"},
		Reason: "MicroK8s runs kubelet and containerd as snap services from a read-only snap whose files the snap manages; cnimedic reports what it reads and repairs nothing"}
	if exists(root, MicroK8sTemplate) {
		l.RuntimeConfigTemplate = MicroK8sTemplate
	}
	rt := runtimecfg.Read(root, MicroK8sConfig)
	setCNI(&l, rt)
	snap := strings.NewReplacer("${SNAP_DATA}", MicroK8sData, "${SNAP_COMMON}", "/var/snap/microk8s/common", "${SNAP}", "/snap/microk8s/current")
	l.ConfDir = snap.Replace(l.ConfDir)
	for i := range l.BinDirs {
		l.BinDirs[i] = snap.Replace(l.BinDirs[i])
	}
	return Detected{Layout: l, Runtime: &rt}
}

func isCRIO(root host.Root) bool {
	if exists(root, "/run/crio/crio.sock") || exists(root, "/var/run/crio/crio.sock") {
		return true
	}
	containerd := hasUnit(root, RuntimeUnit) || exists(root, KubeadmSocket)
	return !containerd && (hasUnit(root, CRIOUnit) || exists(root, CRIOConfig))
}

// crio: CRI-O's socket /var/run/crio/crio.sock, its config /etc/crio/crio.conf with drop-ins in
// /etc/crio/crio.conf.d read in lexical order, the later overriding; the CNI dirs are [crio.network] network_dir
// and plugin_dirs (cri-o docs/crio.conf.5.md).
func crio(root host.Root) Detected {
	l := v1alpha1.NodeLayout{Kind: v1alpha1.LayoutCRIO, RuntimeConfig: CRIOConfig,
		ConfDir: "/etc/cni/net.d", BinDirs: []string{"/opt/cni/bin"},
		Reason: "CRI-O is the runtime: cnimedic's repairs edit containerd's configuration and speak to containerd; it reports what it reads and repairs nothing"}
	for _, s := range []string{"/run/crio/crio.sock", "/var/run/crio/crio.sock"} {
		if exists(root, s) {
			l.CRISocket = s
			break
		}
	}
	if l.CRISocket == "" {
		l.CRISocket = "/var/run/crio/crio.sock"
	}
	if hasUnit(root, KubeletUnit) && hasUnit(root, CRIOUnit) {
		l.Units = []string{KubeletUnit, CRIOUnit}
	}
	files := []string{CRIOConfig}
	if ents, err := os.ReadDir(root.Local(CRIODropInDir)); err == nil {
		var names []string
		for _, e := range ents {
			if !e.IsDir() && strings.HasSuffix(e.Name(), ".conf") {
				names = append(names, e.Name())
			}
		}
		sort.Strings(names)
		for _, n := range names {
			l.RuntimeConfigImports = append(l.RuntimeConfigImports, CRIODropInDir+"/"+n)
		}
		files = append(files, l.RuntimeConfigImports...)
	}
	for _, f := range files {
		raw, err := host.ReadFile(root.Local(f), host.MaxContainerdConfig)
		if err != nil {
			continue
		}
		var doc struct {
			Crio struct {
				Network struct {
					NetworkDir string   `toml:"network_dir"`
					PluginDirs []string `toml:"plugin_dirs"`
				} `toml:"network"`
			} `toml:"crio"`
		}
		if toml.Unmarshal(raw, &doc) != nil {
			continue
		}
		if d := doc.Crio.Network.NetworkDir; d != "" {
			l.ConfDir = path.Clean(d)
		}
		if ds := doc.Crio.Network.PluginDirs; len(ds) > 0 {
			l.BinDirs = nil
			for _, d := range ds {
				l.BinDirs = append(l.BinDirs, path.Clean(d))
			}
		}
	}
	return Detected{Layout: l}
}

// hostPaths are the directories of the layout that exist on the node, each once.
func hostPaths(root host.Root, l v1alpha1.NodeLayout) []string {
	var out []string
	add := func(p string) {
		if p != "" && p != "/" && isDir(root, p) && !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	if l.CRISocket != "" {
		add(path.Dir(l.CRISocket))
	}
	if l.RuntimeConfig != "" {
		add(path.Dir(l.RuntimeConfig))
	}
	if l.RuntimeConfigTemplate != "" {
		add(path.Dir(l.RuntimeConfigTemplate))
	}
	for _, f := range l.RuntimeConfigImports {
		add(path.Dir(f))
	}
	add(l.ConfDir)
	for _, b := range l.BinDirs {
		add(b)
	}
	add("/var/lib/cni")
	return out
}

func hasUnit(root host.Root, unit string) bool {
	return slices.ContainsFunc(UnitDirs, func(d string) bool { return exists(root, d+"/"+unit) })
}

func exists(root host.Root, p string) bool {
	_, err := os.Stat(root.Local(p))
	return err == nil
}

func isDir(root host.Root, p string) bool {
	st, err := os.Stat(root.Local(p))
	return err == nil && st.IsDir()
}

func joinReason(a, b string) string {
	if a == "" {
		return b
	}
	return a + "; " + b
}

// StandardCNIDirs are the CNI dirs the node's runtime reads when nothing changed them: what a repair of the
// runtime's CNI settings points it back to when a policy names none. k3s writes its own dirs into the config it
// generates only while it runs flannel (with --flannel-backend=none the generated config has no CNI table, and a
// CNI provider such as Calico installs into containerd's defaults); RKE2 keeps containerd's defaults, as do
// kubeadm and the distributions.
func (s Settings) StandardCNIDirs() (confDir string, binDirs []string) {
	if s.Layout != nil && s.Layout.Kind == v1alpha1.LayoutK3s {
		rt := s.Runtime
		if rt == nil || !rt.Exists || slices.Contains(rt.Explicit, "conf_dir") || slices.Contains(rt.Explicit, "bin_dir") || slices.Contains(rt.Explicit, "bin_dirs") {
			return k3s.defaultConf, slices.Clone(k3s.defaultBins)
		}
	}
	return runtimecfg.DefaultConfDir, []string{runtimecfg.DefaultBinDir}
}
