package node

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
	"github.com/cnimedic/cnimedic/remediator/host"
)

// tree is a host-root fixture under testdata, laid out as its README says and cites.
func tree(t *testing.T, name string) host.Root {
	t.Helper()
	dir, err := filepath.Abs(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "README.md")); err != nil {
		t.Fatalf("fixture %s has no README citing what it follows: %v", name, err)
	}
	return host.Root(dir)
}

// Each distribution's layout is named right, with the units a repair stops, the CRI socket, the runtime's config
// (and the template it is generated from), its drop-ins, the CNI dirs the runtime reads, and whether cnimedic can
// serve the node.
func TestEachLayoutIsNamedWithItsUnitsSocketConfigAndCNIDirs(t *testing.T) {
	k3sCfg := K3sDir + "/agent/etc/containerd/config.toml"
	rke2Cfg := RKE2Dir + "/agent/etc/containerd/config.toml"
	for _, tc := range []struct {
		tree string
		want v1alpha1.NodeLayout
	}{
		{"kubeadm", v1alpha1.NodeLayout{Kind: v1alpha1.LayoutKubeadm, Units: []string{"kubelet.service", "containerd.service"},
			CRISocket: KubeadmSocket, RuntimeConfig: "/etc/containerd/config.toml", ConfDir: "/etc/cni/net.d", BinDirs: []string{"/opt/cni/bin"}, Servable: true}},
		{"containerd-dropins", v1alpha1.NodeLayout{Kind: v1alpha1.LayoutKubeadm, Units: []string{"kubelet.service", "containerd.service"},
			CRISocket: KubeadmSocket, RuntimeConfig: "/etc/containerd/config.toml", RuntimeConfigImports: []string{"/etc/containerd/conf.d/50-cni.toml"},
			ConfDir: "/etc/cni/custom.d", BinDirs: []string{"/opt/cni/bin"}, Servable: true}},
		{"gke", v1alpha1.NodeLayout{Kind: v1alpha1.LayoutKubeadm, Units: []string{"kubelet.service", "containerd.service"},
			CRISocket: KubeadmSocket, RuntimeConfig: "/etc/containerd/config.toml", ConfDir: "/etc/cni/net.d", BinDirs: []string{"/home/kubernetes/bin"}, Servable: true}},
		{"k3s-server", v1alpha1.NodeLayout{Kind: v1alpha1.LayoutK3s, Role: "server", Units: []string{"k3s.service"}, CRISocket: RancherSocket,
			RuntimeConfig: k3sCfg, ConfDir: K3sDir + "/agent/etc/cni/net.d", BinDirs: []string{K3sDir + "/data/current/bin"}, Servable: true}},
		{"k3s-agent", v1alpha1.NodeLayout{Kind: v1alpha1.LayoutK3s, Role: "agent", Units: []string{"k3s-agent.service"}, CRISocket: RancherSocket,
			RuntimeConfig: k3sCfg, RuntimeConfigTemplate: K3sDir + "/agent/etc/containerd/config-v3.toml.tmpl",
			ConfDir: K3sDir + "/agent/etc/cni/net.d", BinDirs: []string{K3sDir + "/data/current/bin"}, Servable: true}},
		{"rke2-server", v1alpha1.NodeLayout{Kind: v1alpha1.LayoutRKE2, Role: "server", Units: []string{"rke2-server.service"}, CRISocket: RancherSocket,
			RuntimeConfig: rke2Cfg, ConfDir: "/etc/cni/net.d", BinDirs: []string{"/opt/cni/bin"}, Servable: true}},
		{"rke2-agent", v1alpha1.NodeLayout{Kind: v1alpha1.LayoutRKE2, Role: "agent", Units: []string{"rke2-agent.service"}, CRISocket: RancherSocket,
			RuntimeConfig: rke2Cfg, RuntimeConfigTemplate: RKE2Dir + "/agent/etc/containerd/config.toml.tmpl",
			ConfDir: "/etc/cni/net.d", BinDirs: []string{"/opt/cni/bin"}, Servable: true}},
		{"crio", v1alpha1.NodeLayout{Kind: v1alpha1.LayoutCRIO, Units: []string{"kubelet.service", "crio.service"}, CRISocket: "/var/run/crio/crio.sock",
			RuntimeConfig: CRIOConfig, RuntimeConfigImports: []string{"/etc/crio/crio.conf.d/10-plugins.conf"},
			ConfDir: "/etc/cni/net.d", BinDirs: []string{"/usr/libexec/cni"}, Servable: false}},
		{"microk8s", v1alpha1.NodeLayout{Kind: v1alpha1.LayoutMicroK8s,
			Units:     []string{"snap.microk8s.daemon-kubelite.service", "snap.microk8s.daemon-containerd.service"},
			CRISocket: MicroK8sSocket, RuntimeConfig: MicroK8sConfig, RuntimeConfigTemplate: MicroK8sTemplate,
			ConfDir: MicroK8sData + "/args/cni-network", BinDirs: []string{MicroK8sData + "/opt/cni/bin"}, Servable: false}},
		{"no-systemd", v1alpha1.NodeLayout{Kind: v1alpha1.LayoutKubeadm, CRISocket: KubeadmSocket, RuntimeConfig: "/etc/containerd/config.toml",
			ConfDir: "/etc/cni/net.d", BinDirs: []string{"/opt/cni/bin"}, Servable: false}},
	} {
		t.Run(tc.tree, func(t *testing.T) {
			got := Detect(tree(t, tc.tree)).Layout
			if !tc.want.Servable && got.Reason == "" {
				t.Errorf("an unservable layout must say why: %+v", got)
			}
			if tc.want.Servable && got.Reason != "" {
				t.Errorf("a servable layout with a reason %q", got.Reason)
			}
			got.Reason, got.HostPaths = "", nil
			if !equalLayout(got, tc.want) {
				t.Fatalf("layout\n got %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func equalLayout(a, b v1alpha1.NodeLayout) bool {
	return a.Kind == b.Kind && a.Role == b.Role && slices.Equal(a.Units, b.Units) && a.CRISocket == b.CRISocket &&
		a.RuntimeConfig == b.RuntimeConfig && a.RuntimeConfigTemplate == b.RuntimeConfigTemplate &&
		slices.Equal(a.RuntimeConfigImports, b.RuntimeConfigImports) && a.ConfDir == b.ConfDir &&
		slices.Equal(a.BinDirs, b.BinDirs) && a.Servable == b.Servable
}

// The host paths are the layout's own directories that exist on the node, never one it lacks: a k3s node's pods
// mount k3s's dirs, not /etc/containerd or /run/containerd.
func TestHostPathsAreTheLayoutsOwnDirectories(t *testing.T) {
	got := Detect(tree(t, "k3s-agent")).Layout.HostPaths
	want := []string{"/run/k3s/containerd", K3sDir + "/agent/etc/containerd", K3sDir + "/agent/etc/cni/net.d", K3sDir + "/data/current/bin", "/var/lib/cni"}
	if !slices.Equal(got, want) {
		t.Fatalf("host paths %v, want %v", got, want)
	}
}

// A node with the files of a layout but no CRI socket where any known layout puts it cannot be served, and says
// so; a node with nothing of any layout is unknown.
func TestNoCRISocketWhereAnyLayoutPutsItIsNotServable(t *testing.T) {
	root := t.TempDir()
	for _, p := range []string{"/run/systemd/system/.keep", "/etc/containerd/config.toml", "/etc/systemd/system/kubelet.service", "/etc/systemd/system/containerd.service"} {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(root, p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, p), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	l := Detect(host.Root(root)).Layout
	if l.Kind != v1alpha1.LayoutKubeadm || l.Servable || !strings.Contains(l.Reason, "no CRI socket") {
		t.Fatalf("a kubeadm node without its socket: %+v", l)
	}
	l = Detect(host.Root(t.TempDir())).Layout
	if l.Kind != v1alpha1.LayoutUnknown || l.Servable || l.Reason == "" {
		t.Fatalf("an empty node: %+v", l)
	}
}

// Flags override the node, and each contradiction is recorded: units that are not the layout's (kubelet.service
// on a k3s node, where k3s-agent.service runs both), and a containerd config the layout does not run. What the
// flags leave empty comes from the layout, read once.
func TestAFlagThatContradictsTheNodeIsUsedAndReported(t *testing.T) {
	s := Complete(Settings{Root: tree(t, "k3s-agent")})
	if !slices.Equal(s.Units, []string{"k3s-agent.service"}) || s.CRIEndpoint != RancherSocket || s.ConfDir != K3sDir+"/agent/etc/cni/net.d" ||
		s.Runtime == nil || s.Runtime.Path != K3sDir+"/agent/etc/containerd/config.toml" || len(s.Contradictions) != 0 || s.UnitsContradict {
		t.Fatalf("completed from the layout: %+v", s)
	}
	s = Complete(Settings{Root: tree(t, "k3s-agent"), Units: UnitList("kubelet", "containerd"), ContainerdConfig: "/etc/containerd/config.toml"})
	if !slices.Equal(s.Units, []string{"kubelet.service", "containerd.service"}) || s.ContainerdConfig != "/etc/containerd/config.toml" || !s.UnitsContradict || len(s.Contradictions) != 2 {
		t.Fatalf("flags used, contradictions recorded: units %v config %s contradictions %q", s.Units, s.ContainerdConfig, s.Contradictions)
	}
	if !strings.Contains(s.Layout.Reason, "k3s-agent.service runs both kubelet and the runtime") {
		t.Fatalf("the layout's reason does not say what the units contradict: %q", s.Layout.Reason)
	}
	if s := Complete(Settings{Root: tree(t, "k3s-server"), Units: UnitList("k3s", "k3s")}); !slices.Equal(s.Units, []string{"k3s.service"}) || s.UnitsContradict {
		t.Fatalf("k3s named for both units is the one unit: %v %q", s.Units, s.Contradictions)
	}
}

// A repair points the runtime back to k3s's own CNI dirs only while k3s writes them into the config it generates
// (it runs flannel); with --flannel-backend=none the generated config has no CNI table and the standard dirs are
// containerd's defaults, where a CNI provider such as Calico installs. RKE2 and kubeadm keep containerd's.
func TestTheStandardCNIDirsFollowWhetherK3sRunsFlannel(t *testing.T) {
	conf, bins := Complete(Settings{Root: tree(t, "k3s-server")}).StandardCNIDirs()
	if conf != K3sDir+"/agent/etc/cni/net.d" || !slices.Equal(bins, []string{K3sDir + "/data/current/bin"}) {
		t.Fatalf("k3s with flannel: %s %v", conf, bins)
	}
	root := t.TempDir()
	for p, c := range map[string]string{
		"/run/systemd/system/.keep":                  "",
		"/etc/systemd/system/k3s.service":            "",
		"/run/k3s/containerd/containerd.sock":        "",
		K3sDir + "/agent/etc/containerd/config.toml": "version = 3\n[plugins.'io.containerd.cri.v1.runtime']\n  enable_selinux = false\n",
	} {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(root, p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, p), []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	s := Complete(Settings{Root: host.Root(root)})
	if conf, bins := s.StandardCNIDirs(); s.Layout.Kind != v1alpha1.LayoutK3s || conf != "/etc/cni/net.d" || !slices.Equal(bins, []string{"/opt/cni/bin"}) {
		t.Fatalf("k3s without flannel: %s %s %v", s.Layout.Kind, conf, bins)
	}
	if conf, _ := Complete(Settings{Root: tree(t, "rke2-agent")}).StandardCNIDirs(); conf != "/etc/cni/net.d" {
		t.Fatalf("rke2: %s", conf)
	}
}
