package lab

import (
	"context"
	"path"
	"strings"

	"github.com/cnimedic/cnimedic/test/nspawn"
)

// The lab's k3s-layout node EMULATES k3s's agent: no k3s (or RKE2) binary can be had on this machine (neither the Go
// module proxy nor Debian serves one), so the node is laid out as k3s lays an agent out, with the real parts every
// lab node runs: Debian's containerd and runc, the lab's kubelet, Debian's CNI plugins and a real systemd. What is
// k3s's own and is reproduced here (k3s's install.sh, pkg/agent/config and pkg/agent/containerd/config.go):
//   - one unit, k3s-agent.service, that runs containerd and kubelet together (no kubelet.service; Debian's
//     containerd.service is masked), Type=exec as install.sh makes an agent's unit, KillMode=process and
//     Delegate=yes: stopping the unit stops kubelet and containerd and leaves the containers' shims running;
//   - at every start, containerd's config.toml is rendered from config.toml.tmpl in the same directory (k3s executes
//     the template; one without template actions, as here, renders to itself), and containerd runs with k3s's
//     socket /run/k3s/containerd/containerd.sock, state /run/k3s/containerd and root agent/containerd;
//   - the CNI conf dir agent/etc/cni/net.d and the plugins in data/current/bin, current being a relative link to
//     the data dir the agent extracted at start (here: Debian's plugins, copied once, in place of k3s's bundle);
//   - the images in agent/images imported into that containerd at start, once per set of archives.
//
// What is not k3s: the supervisor is a bash script (k3sAgentScript), not k3s's binary; kubelet and containerd are
// its children, not kubelet in-process; no flannel, no server connection (kubelet has the lab's kubeconfig); no
// modprobe ExecStartPre (the node cannot load modules). The tests that use this node say so.

// LayoutK3sAgent is a NodeSpec.Layout: the node emulates a k3s agent's layout (see above). The empty layout is the
// lab's kubeadm-style node (kubelet.service and containerd.service with the distribution's paths).
const LayoutK3sAgent = "k3s-agent"

// Paths of the k3s-layout node, as k3s puts them.
const (
	// K3sUnit is the one unit of a k3s agent (install.sh: k3s-agent.service runs `k3s agent`).
	K3sUnit = "k3s-agent.service"
	// K3sDataDir is k3s's data dir (--data-dir's default for root).
	K3sDataDir = "/var/lib/rancher/k3s"
	// K3sContainerdDir holds containerd's generated config and the template it is generated from.
	K3sContainerdDir = K3sDataDir + "/agent/etc/containerd"
	// K3sContainerdConfig is containerd's config.toml, rendered at every start of K3sUnit.
	K3sContainerdConfig = K3sContainerdDir + "/config.toml"
	// K3sContainerdTemplate is the template config.toml is rendered from: for containerd 1.x (version 2 config, as
	// Debian's containerd 1.6 reads) config.toml.tmpl; config-v3.toml.tmpl is for containerd 2.
	K3sContainerdTemplate = K3sContainerdDir + "/config.toml.tmpl"
	// K3sSocket is containerd's socket under k3s (Containerd.State /run/k3s/containerd).
	K3sSocket = k3sState + "/containerd.sock"
	// K3sConfDir and K3sBinDir are k3s's CNI dirs (CNIConfDir, CNIBinDir).
	K3sConfDir = K3sDataDir + "/agent/etc/cni/net.d"
	K3sBinDir  = K3sDataDir + "/data/current/bin"

	k3sState = "/run/k3s/containerd"
	// k3sDataID is the data dir the agent "extracted"; k3s names it after its bundle's hash.
	k3sDataID     = "cnimedic-lab-debian-cni"
	k3sPluginDir  = K3sDataDir + "/data/" + k3sDataID + "/bin"
	k3sImagesDir  = K3sDataDir + "/agent/images"
	k3sAgentBin   = "/usr/local/lib/cnimedic-lab/k3s-agent-emulation"
	k3sImageStamp = k3sContainerdRoot + "/cnimedic-lab-images.json"
	// k3sContainerdRoot is containerd's root under k3s (Containerd.Root).
	k3sContainerdRoot = K3sDataDir + "/agent/containerd"
)

// IsK3s says whether the node emulates k3s's agent layout.
func (n NodeSpec) IsK3s() bool { return n.Layout == LayoutK3sAgent }

// ConfListPath is the lab's conflist on the node: in the conf dir its runtime loads.
func (n NodeSpec) ConfListPath() string {
	if n.IsK3s() {
		return path.Join(K3sConfDir, path.Base(NodeConfList))
	}
	return NodeConfList
}

// ConfDir is the CNI conf dir the node's runtime loads when healthy.
func (n NodeSpec) ConfDir() string { return path.Dir(n.ConfListPath()) }

// PluginDir is the real directory of the node's CNI plugins, where plugin binaries are replaced.
func (n NodeSpec) PluginDir() string {
	if n.IsK3s() {
		return k3sPluginDir
	}
	return NodePluginDir
}

// RuntimeConfigSource is the containerd configuration a person edits on the node: config.toml on the kubeadm
// layout, the template it is rendered from on k3s's.
func (n NodeSpec) RuntimeConfigSource() string {
	if n.IsK3s() {
		return K3sContainerdTemplate
	}
	return nodeContainerdConf
}

// RuntimeUnits are the units that run the node's containerd (restarted when its config or binary changes).
func (n NodeSpec) RuntimeUnits() []string {
	if n.IsK3s() {
		return []string{K3sUnit}
	}
	return []string{"containerd.service"}
}

// Units are every unit that runs the node's kubelet and runtime, in start order.
func (n NodeSpec) Units() []string {
	if n.IsK3s() {
		return []string{K3sUnit}
	}
	return []string{"containerd.service", kubeletUnit}
}

// CRISocket is the node's containerd socket.
func (n NodeSpec) CRISocket() string {
	if n.IsK3s() {
		return K3sSocket
	}
	return "/run/containerd/containerd.sock"
}

// ContainerdConfigFor is the containerd config a healthy node of this layout has where a person edits it
// (RuntimeConfigSource): the lab's config, and on k3s the same settings at k3s's paths, as k3s's own template
// (pkg/agent/templates) writes them for containerd 1.x.
func ContainerdConfigFor(n NodeSpec) []byte {
	if !n.IsK3s() {
		return ContainerdConfig()
	}
	return containerdConfig("# Written by cnimedic's e2e/lab: the template k3s-agent.service renders config.toml from at every start\n"+
		"# (the lab's node EMULATES k3s's layout; see e2e/lab/k3s.go). Edit this file, not config.toml.\n",
		"\n[plugins.\"io.containerd.internal.v1.opt\"]\n  path = \""+K3sDataDir+"/agent/containerd\"\n",
		K3sBinDir, K3sConfDir)
}

// k3sAgentUnit is k3s-agent.service as k3s's install.sh writes it for an agent (Type=exec, KillMode=process,
// Delegate=yes, Restart=always, RestartSec=5s), its ExecStart the emulation's supervisor with kubelet's flags.
func (l *Lab) k3sAgentUnit(n NodeSpec) []byte {
	return unit{
		Description: "k3s agent layout, EMULATED by cnimedic's lab with containerd and kubelet (node " + n.Name + ")",
		After:       []string{"network.target", "cnimedic-cgroup-rw.service"},
		Service: [][2]string{
			{"Type", "exec"},
			{"KillMode", "process"},
			{"Delegate", "yes"},
			{"TimeoutStartSec", "0"},
			{"Restart", "always"},
			{"RestartSec", "5s"},
			{"ExecStart", execLine(k3sAgentBin,
				"--config="+nodeKubeletConfig,
				"--kubeconfig="+nodeKubeconfig,
				"--node-ip="+n.Address.Addr().String(),
				"--hostname-override="+n.Name,
				"--v=1")},
		},
		WantedBy: "multi-user.target",
	}.render()
}

// k3sAgentScript is the supervisor k3s-agent.service runs: what k3s's agent does at start, with the real parts.
// Its arguments are kubelet's.
func k3sAgentScript() []byte {
	vars := strings.NewReplacer(
		"@DATA@", K3sDataDir, "@ID@", k3sDataID, "@ETC@", K3sContainerdDir, "@STATE@", k3sState, "@SOCK@", K3sSocket,
		"@ROOT@", k3sContainerdRoot, "@IMAGES@", k3sImagesDir, "@STAMP@", k3sImageStamp, "@KUBELET@", nodeKubeletBin,
	)
	return []byte(vars.Replace(`#!/bin/bash
# Written by cnimedic's e2e/lab. This EMULATES k3s's agent (e2e/lab/k3s.go): the layout and start-up of
# "k3s agent", with Debian's containerd and the lab's kubelet as children instead of k3s's binary.
set -u

# The data dir: k3s extracts its bundle into data/<hash> once and points data/current at it (a relative link).
if [ ! -d @DATA@/data/@ID@/bin ]; then
  rm -rf @DATA@/data/@ID@.tmp
  mkdir -p @DATA@/data/@ID@.tmp/bin || exit 1
  cp -a /usr/lib/cni/. @DATA@/data/@ID@.tmp/bin/ || exit 1
  mv @DATA@/data/@ID@.tmp @DATA@/data/@ID@ || exit 1
fi
ln -sfn @ID@ @DATA@/data/current || exit 1

# containerd's config, rendered from the template at every start (k3s: config-v3.toml.tmpl, else config.toml.tmpl;
# a template without template actions renders to itself).
tmpl=
for t in @ETC@/config-v3.toml.tmpl @ETC@/config.toml.tmpl; do
  if [ -f "$t" ]; then tmpl=$t; break; fi
done
if [ -z "$tmpl" ]; then
  echo "k3s-agent emulation: no config.toml.tmpl in @ETC@ (the lab always writes one)" >&2
  exit 1
fi
cp "$tmpl" @ETC@/.config.toml.tmp && mv @ETC@/.config.toml.tmp @ETC@/config.toml || exit 1

kpid=
cpid=
# Like k3s under KillMode=process: a stop signals this process only, which ends kubelet and containerd; the
# containers' shims are left running.
trap 'kill -TERM $kpid $cpid 2>/dev/null; wait; exit 0' TERM INT

mkdir -p @STATE@
/usr/bin/containerd --config @ETC@/config.toml --address @SOCK@ --state @STATE@ --root @ROOT@ &
cpid=$!
until /usr/bin/ctr --address @SOCK@ version >/dev/null 2>&1; do
  kill -0 $cpid 2>/dev/null || { echo "k3s-agent emulation: containerd exited" >&2; wait $cpid; exit 1; }
  sleep 0.2
done

# The images in agent/images, imported into this containerd (k3s imports them at start; once per set here).
if ! cmp -s @IMAGES@/images.json @STAMP@; then
  for f in @IMAGES@/*.tar; do
    /usr/bin/ctr --address @SOCK@ --namespace=k8s.io images import "$f" || { kill -TERM $cpid; wait; exit 1; }
  done
  cp @IMAGES@/images.json @STAMP@
fi

# k3s starts kubelet once containerd's CRI answers (pkg/agent/cri, WaitForService). ctr cannot ask the CRI, so a
# kubelet that fails in its first seconds while containerd runs (its CRI "not initialized yet") is started again.
tries=0
while :; do
  @KUBELET@ "$@" &
  kpid=$!
  started=$SECONDS
  # Either one ending ends the agent, as it does k3s: systemd restarts the unit (Restart=always).
  wait -n $cpid $kpid
  if kill -0 $cpid 2>/dev/null && ! kill -0 $kpid 2>/dev/null && [ $((SECONDS - started)) -lt 10 ] && [ $tries -lt 10 ]; then
    tries=$((tries + 1))
    echo "k3s-agent emulation: kubelet exited at start, containerd's CRI not ready yet: starting it again" >&2
    sleep 1
    continue
  fi
  break
done
kill -TERM $kpid $cpid 2>/dev/null
wait
exit 1
`))
}

// maskedUnit is an empty unit file: systemd reads it as masked (systemd.unit(5)). The k3s-layout node masks
// Debian's containerd.service with it, which the base root filesystem enables.
var maskedUnit = []byte{}

// k3sBootFiles are the k3s-layout node's files besides the ones every node gets.
func (l *Lab) k3sBootFiles(n NodeSpec) []nspawn.File {
	return []nspawn.File{
		{Path: K3sContainerdTemplate, Data: ContainerdConfigFor(n)},
		{Path: n.ConfListPath(), Data: HealthyConfList(n).marshal()},
		{Path: "/etc/systemd/system/containerd.service", Data: maskedUnit},
		{Path: "/etc/systemd/system/" + K3sUnit, Data: l.k3sAgentUnit(n)},
		{Path: k3sAgentBin, Data: k3sAgentScript(), Mode: 0o755},
	}
}

// RestartUnits restarts units of a node through its systemd, as a person's `systemctl restart` does, and waits for
// each job.
func (l *Lab) RestartUnits(ctx context.Context, nodeName string, units ...string) error {
	node, _, err := l.Node(nodeName)
	if err != nil {
		return err
	}
	return restartUnits(ctx, node, units...)
}
