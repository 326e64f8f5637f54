package remediation

import (
	"fmt"
	"path"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
	"github.com/cnimedic/cnimedic/internal/diagnosepod"
	"github.com/cnimedic/cnimedic/internal/policy"
)

// A node's layout (issue 14): kubeadm-style nodes, k3s, RKE2 and others keep their kubelet, runtime and CNI in
// different units and paths. The read-only diagnosis reports the node's layout (v1alpha1.NodeLayout), recorded in
// status.diagnosis.layout, and the manager follows it:
//   - preflight, before any cordon: a node whose layout cnimedic cannot serve, or one that does not run Linux, is
//     escalated, never cordoned, and gets no executor pod (a non-Linux node not even a diagnosis pod);
//   - the plan stops and starts the layout's units and edits the layout's runtime config (its template, where the
//     config is generated at every start);
//   - the executor pod mounts the layout's host paths and is told its units, CRI socket, config and CNI dirs.
// The policy's repair fields still override where they differ from the CRD's defaults (the kubeadm layout's): a
// default says nothing about the node, an explicit value is the operator's; one that contradicts the layout is
// reported in an event. Without a layout (a remediator older than issue 14) everything is as before.

// Event reasons of the node's layout (with the others in events.go).
const (
	// ReasonLayoutNotServable: the diagnosis found a layout cnimedic cannot repair; escalated before any cordon.
	ReasonLayoutNotServable = "LayoutNotServable"
	// ReasonNodeNotLinux: the node runs another OS; escalated before any pod.
	ReasonNodeNotLinux = "NodeNotLinux"
	// ReasonLayoutConflict: a policy setting contradicts the node's layout (the policy's value runs).
	ReasonLayoutConflict = "LayoutConflict"
)

// osLabel is the node label kubelet sets to its GOOS.
const osLabel = "kubernetes.io/os"

// notLinux says why the node cannot get cnimedic's Linux pods ("" when it may): its kubelet reports another OS. A
// node without the label is taken for Linux, as the scheduler's default node selector of Linux pods is absent too.
func notLinux(node *corev1.Node) string {
	if node == nil {
		return ""
	}
	if os, ok := node.Labels[osLabel]; ok && os != "linux" {
		return fmt.Sprintf("node %s runs %s (label %s=%s): cnimedic's diagnosis and executor are Linux pods and repair only Linux nodes; nothing was started or changed on the node",
			node.Name, os, osLabel, os)
	}
	return ""
}

// layoutOf is the node's layout as the remediation's diagnosis recorded it, or nil.
func layoutOf(nr *v1alpha1.NodeRemediation) *v1alpha1.NodeLayout {
	if d := nr.Status.Diagnosis; d != nil {
		return d.Layout
	}
	return nil
}

// preflight says why the remediation must not act on its node ("" when it may): the node runs another OS than
// Linux, or its diagnosed layout is one cnimedic cannot serve. It is asked after the diagnosis and again right
// before the cordon and the executor (mayAct), so nothing is ever cordoned on such a node.
func preflight(s *scope) (reason, message string) {
	if why := notLinux(s.node); why != "" {
		return ReasonNodeNotLinux, why
	}
	l := layoutOf(s.nr)
	if l == nil {
		return "", ""
	}
	if !l.Servable {
		why := l.Reason
		if why == "" {
			why = "the diagnosis gave no reason"
		}
		return ReasonLayoutNotServable, fmt.Sprintf("node %s has a %s layout cnimedic cannot repair: %s; nothing was changed on the node",
			s.nr.Spec.NodeName, layoutName(l), why)
	}
	if err := checkHostPaths(l.HostPaths); err != nil {
		return ReasonLayoutNotServable, fmt.Sprintf("the diagnosis of node %s reported a layout whose executor pod cnimedic will not start: %v; nothing was changed on the node",
			s.nr.Spec.NodeName, err)
	}
	return "", ""
}

func layoutName(l *v1alpha1.NodeLayout) string {
	if l.Role != "" {
		return fmt.Sprintf("%s (%s)", l.Kind, l.Role)
	}
	return string(l.Kind)
}

// checkHostPaths refuses host paths the executor pod must not mount, whatever a diagnosis reports: a path that is not
// absolute and clean, the host's root or a top-level directory (the executor pod mounts directories of the layout,
// not whole trees), and the kernel's and devices' filesystems.
func checkHostPaths(paths []string) error {
	for _, p := range paths {
		switch {
		case !path.IsAbs(p) || path.Clean(p) != p:
			return fmt.Errorf("host path %q is not an absolute, clean path", p)
		case strings.Count(p, "/") < 2:
			return fmt.Errorf("host path %s is the host's root or a top-level directory", p)
		case slices.ContainsFunc([]string{"/proc/", "/sys/", "/dev/"}, func(prefix string) bool { return strings.HasPrefix(p, prefix) }):
			return fmt.Errorf("host path %s is under /proc, /sys or /dev", p)
		}
	}
	return nil
}

// nodeSettings are where the executor finds the node's parts: the remediator's flags and the host paths its pod
// mounts.
type nodeSettings struct {
	kubeletUnit, runtimeUnit string
	// containerdConfig is the runtime's config as it runs (--containerd-config).
	containerdConfig string
	// criSocket, confDir and binDirs are passed only when a layout gave them and they are not the remediator's
	// defaults.
	criSocket string
	confDir   string
	binDirs   []string
	// hostPaths are the host directories the pod mounts besides its state dir and the D-Bus socket's.
	hostPaths []string
}

// The remediator's defaults (cmd/remediator NodeFlags).
const (
	defaultCRISocket = "/run/containerd/containerd.sock"
	// containerdSocketDir is what the executor pod mounted before layouts: containerd's socket dir.
	containerdSocketDir = "/run/containerd"
)

// settingsFor is where the executor of this remediation finds the node's parts: the layout its diagnosis recorded,
// under the policy's overrides; without a layout, the policy's settings and containerd's socket dir, as before.
func settingsFor(nr *v1alpha1.NodeRemediation, p *v1alpha1.RemediationPolicy) nodeSettings {
	repair := p.Spec.Repair
	l := layoutOf(nr)
	if l == nil {
		return nodeSettings{kubeletUnit: repair.Units.Kubelet, runtimeUnit: repair.Units.Runtime, containerdConfig: repair.Containerd.ConfigPath,
			hostPaths: []string{containerdSocketDir}}
	}
	eff, _ := layoutRepair(repair, l)
	set := nodeSettings{kubeletUnit: eff.Units.Kubelet, runtimeUnit: eff.Units.Runtime, containerdConfig: repair.Containerd.ConfigPath,
		hostPaths: l.HostPaths}
	if isDefault(repair.Containerd.ConfigPath, policy.DefaultSpec().Repair.Containerd.ConfigPath) && l.RuntimeConfig != "" {
		// The config as it runs: the remediator reads containerd's CNI settings from it. A plan edits the template
		// (eff's ConfigPath) where there is one.
		set.containerdConfig = l.RuntimeConfig
	}
	if l.CRISocket != defaultCRISocket {
		set.criSocket = l.CRISocket
	}
	// A plan that rewrites the runtime's CNI settings must let the remediator read them back from the config it
	// rewrote: the dirs are not pinned then.
	if !rewritesRuntimeCNIConfig(nr.Status.Plan) {
		if eff.Containerd.ConfDir != "" && eff.Containerd.ConfDir != diagnosepod.DefaultConfDir {
			set.confDir = eff.Containerd.ConfDir
		}
		bins := l.BinDirs
		if !isDefault(repair.Containerd.BinDir, policy.DefaultSpec().Repair.Containerd.BinDir) {
			bins = []string{repair.Containerd.BinDir}
		}
		if !slices.Equal(bins, []string{diagnosepod.DefaultBinDir}) {
			set.binDirs = bins
		}
	}
	return set
}

func rewritesRuntimeCNIConfig(plan *v1alpha1.Plan) bool {
	return plan != nil && slices.ContainsFunc(plan.Steps, func(s v1alpha1.PlanStep) bool { return s.Type == v1alpha1.StepRepairRuntimeCNIConfig })
}

// isDefault: a policy field left to the CRD's default (or empty) says nothing about the node.
func isDefault(v, def string) bool { return v == "" || v == def }

// layoutRepair is the policy's repair settings with the node's layout filled in where the policy keeps the CRD's
// defaults: the layout's units (kubelet's first, the runtime's last; the same one where one unit runs both), its
// runtime config (the template it is generated from, where there is one: an edit of the generated file is lost at
// the next start), its standard conf dir and first standard bin dir. The policy's own values win; each one that contradicts the layout
// is returned as a conflict.
func layoutRepair(repair v1alpha1.RepairSpec, l *v1alpha1.NodeLayout) (v1alpha1.RepairSpec, []string) {
	if l == nil {
		return repair, nil
	}
	def := policy.DefaultSpec().Repair
	var conflicts []string
	pick := func(field string, own *string, dflt string, node string, alsoNode ...string) {
		switch {
		case node == "" || *own == node || slices.Contains(alsoNode, *own):
		case isDefault(*own, dflt):
			*own = node
		default:
			conflicts = append(conflicts, fmt.Sprintf("spec.repair.%s is %s where the node's layout has %s", field, *own, node))
		}
	}
	var kubelet, runtime string
	if n := len(l.Units); n > 0 {
		kubelet, runtime = l.Units[0], l.Units[n-1]
	}
	pick("units.kubelet", &repair.Units.Kubelet, def.Units.Kubelet, kubelet)
	pick("units.runtime", &repair.Units.Runtime, def.Units.Runtime, runtime)
	config := l.RuntimeConfig
	if l.RuntimeConfigTemplate != "" {
		config = l.RuntimeConfigTemplate
	}
	pick("containerd.configPath", &repair.Containerd.ConfigPath, def.Containerd.ConfigPath, config)
	// The dirs a repair of the runtime's CNI settings writes are the layout's standard ones: ConfDir and BinDirs are
	// what the runtime reads now, which may be the very value that is broken.
	pick("containerd.confDir", &repair.Containerd.ConfDir, def.Containerd.ConfDir, l.StandardConfDir)
	if len(l.StandardBinDirs) > 0 {
		pick("containerd.binDir", &repair.Containerd.BinDir, def.Containerd.BinDir, l.StandardBinDirs[0], l.StandardBinDirs[1:]...)
	}
	return repair, conflicts
}

// reportLayout records in one event what contradicts the node's layout: each policy setting the manager finds at
// odds with it (the policy's value is what runs), and what the diagnosis itself found (a servable layout's Reason).
// One event: the API server's event series would fold a second one of the same reason into the first.
func reportLayout(s *scope, l *v1alpha1.NodeLayout) {
	if l == nil {
		return
	}
	_, conflicts := layoutRepair(s.policy.Spec.Repair, l)
	if l.Reason != "" {
		conflicts = append(conflicts, "the diagnosis says: "+l.Reason)
	}
	if len(conflicts) > 0 {
		s.event(warning, ReasonLayoutConflict, actionDiagnose, fmt.Sprintf("policy %s contradicts the %s layout the diagnosis found on node %s: %s; the policy's values are what a repair uses",
			s.policy.Name, layoutName(l), s.nr.Spec.NodeName, strings.Join(conflicts, "; ")), strings.Join(conflicts, ";"))
	}
}
