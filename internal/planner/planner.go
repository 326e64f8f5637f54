// Package planner turns a failure signature, the parameters its evidence carried and the policy's repair settings
// into the executor's typed plan. It follows the runbooks' order (stop kubelet, stop the runtime, repair, start
// the runtime, start kubelet, verify) and adapts it to what each repair needs: reclaiming IPAM or removing stale
// network namespaces asks the runtime which sandboxes live, so the runtime stays up and only kubelet stops.
//
// It does no node I/O: the manager builds plans with it, and the remediator previews them.
package planner

import (
	"errors"
	"fmt"
	"path/filepath"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
	"github.com/cnimedic/cnimedic/internal/signature"
)

// Default unit names, as the policy's defaults spell them.
const (
	DefaultKubeletUnit = "kubelet.service"
	DefaultRuntimeUnit = "containerd.service"
)

// ErrNoNodeRepair: the signature or action is not repaired on the node (a cluster-level cause, an agent pod to
// restart, or a diagnosis only); the manager escalates or acts itself.
var ErrNoNodeRepair = errors.New("no node repair for this signature")

// ErrVendorPlugin: the missing plugin belongs to a network provider; cnimedic never installs it.
var ErrVendorPlugin = errors.New("the missing plugin is a vendor plugin: escalate to its DaemonSet")

// Request is what a plan is built from.
type Request struct {
	Signature v1alpha1.SignatureID
	// Action overrides the signature's own action (a custom signature maps its pattern to one); empty uses
	// ActionFor.
	Action v1alpha1.RepairAction
	// Params are the named values the signature's evidence carried.
	Params map[string]string
	// Repair is the policy's repair settings.
	Repair v1alpha1.RepairSpec
}

// ActionFor is the repair action of a built-in signature under the policy's repair settings: the catalog's
// (internal/signature, where each signature's action is decided once), except that a policy may repair an
// incompatible version by upgrading the plugins instead of rewriting the configuration. A signature the catalog does
// not know is escalated.
func ActionFor(sig v1alpha1.SignatureID, repair v1alpha1.RepairSpec) v1alpha1.RepairAction {
	def, ok := signature.Lookup(sig)
	if !ok {
		return v1alpha1.ActionEscalate
	}
	if sig == v1alpha1.SignatureCNIVersionIncompatible && repair.VersionStrategy == v1alpha1.VersionRepairUpgradePlugins {
		return v1alpha1.ActionInstallReferencePlugins
	}
	return def.Action
}

// Build returns the plan for a request.
func Build(r Request) (v1alpha1.Plan, error) {
	action := r.Action
	if action == "" {
		action = ActionFor(r.Signature, r.Repair)
	}
	kubelet := firstNonEmpty(r.Repair.Units.Kubelet, DefaultKubeletUnit)
	runtime := firstNonEmpty(r.Repair.Units.Runtime, DefaultRuntimeUnit)
	installAllowed := r.Repair.InstallReferencePlugins == nil || *r.Repair.InstallReferencePlugins

	var repair []v1alpha1.PlanStep
	stopRuntime := true
	switch action {
	case v1alpha1.ActionSetCNIVersion:
		repair = []v1alpha1.PlanStep{{Type: v1alpha1.StepSetCNIVersion, ConfList: confList(r.Params), CNIVersion: r.Repair.CNIVersion}}
	case v1alpha1.ActionInstallReferencePlugins:
		if !installAllowed {
			return v1alpha1.Plan{}, fmt.Errorf("the policy does not allow installing reference plugins (repair.installReferencePlugins is false)")
		}
		var list []string
		if p := firstNonEmpty(r.Params[v1alpha1.ParamPlugin], r.Params[v1alpha1.ParamPluginType]); p != "" && r.Signature == v1alpha1.SignaturePluginBinaryMissing {
			if !signature.IsReferencePlugin(p) {
				return v1alpha1.Plan{}, fmt.Errorf("%w (%s)", ErrVendorPlugin, p)
			}
			// A hint too: the node installs it only when its loaded conflist uses it (or it is loopback) and it is
			// missing or too old (remediator/resolve, InstallReferencePlugins).
			list = []string{p}
		}
		repair = []v1alpha1.PlanStep{{Type: v1alpha1.StepInstallReferencePlugins, Plugins: list}}
	case v1alpha1.ActionRepairRuntimeCNIConfig:
		spec := r.Repair.Containerd
		repair = []v1alpha1.PlanStep{
			{Type: v1alpha1.StepFixConfFileModes},
			{Type: v1alpha1.StepRepairRuntimeCNIConfig, Runtime: &spec},
		}
	case v1alpha1.ActionRestoreConfig:
		repair = []v1alpha1.PlanStep{{Type: v1alpha1.StepRestoreConfList, ConfList: confList(r.Params)}}
	case v1alpha1.ActionReclaimIPAM:
		// The data dir of a host-local network is named after the network, which the evidence rarely names right
		// ("no IP addresses available in network: cni0" names the bridge): reclaim every network. Only leases of
		// sandboxes that no longer exist are freed, whatever the network.
		repair = []v1alpha1.PlanStep{{Type: v1alpha1.StepReclaimIPAM}, {Type: v1alpha1.StepRemoveStaleNetns}}
		stopRuntime = false
	case v1alpha1.ActionCleanStaleNetwork:
		if link := staleLink(r.Params); link != "" {
			repair = append(repair, v1alpha1.PlanStep{Type: v1alpha1.StepDeleteLink, Link: link})
		}
		repair = append(repair, v1alpha1.PlanStep{Type: v1alpha1.StepRemoveStaleNetns}, staleResults(r.Params))
		stopRuntime = false
	default:
		return v1alpha1.Plan{}, fmt.Errorf("%w: %s (action %s)", ErrNoNodeRepair, r.Signature, action)
	}

	// Where one unit runs both kubelet and the runtime (k3s, RKE2), stopping kubelet stops the runtime: the unit is
	// stopped and started once. A repair that needs the runtime up (it frees what no live sandbox holds, and only
	// the runtime knows which sandboxes live) cannot stop that unit at all: it runs with kubelet and the runtime up,
	// and never frees a lease written in the last moments (remediator/resolve, ReclaimIPAM).
	if runtime == kubelet {
		if !stopRuntime {
			return v1alpha1.Plan{Steps: append(repair, v1alpha1.PlanStep{Type: v1alpha1.StepVerifyNode})}, nil
		}
		stopRuntime = false
	}
	steps := []v1alpha1.PlanStep{{Type: v1alpha1.StepStopUnit, Unit: kubelet}}
	if stopRuntime {
		steps = append(steps, v1alpha1.PlanStep{Type: v1alpha1.StepStopUnit, Unit: runtime})
	}
	steps = append(steps, repair...)
	if stopRuntime {
		steps = append(steps, v1alpha1.PlanStep{Type: v1alpha1.StepStartUnit, Unit: runtime})
	}
	steps = append(steps,
		v1alpha1.PlanStep{Type: v1alpha1.StepStartUnit, Unit: kubelet},
		v1alpha1.PlanStep{Type: v1alpha1.StepVerifyNode},
	)
	return v1alpha1.Plan{Steps: steps}, nil
}

// confList is the file name of the configuration the evidence named, or "" (the runtime's default network). It is
// a hint that narrows, never widens: on the node the step works only on the file the runtime loads, and a name that
// is not that file is refused before anything is stopped (remediator/resolve, target).
func confList(p map[string]string) string {
	f := p[v1alpha1.ParamConfigFile]
	if f == "" {
		return ""
	}
	return filepath.Base(f)
}

// staleLink is the link the evidence names: the bridge of "failed to set bridge addr", or "cni0" when only the
// stale address is known (the message "already has an IP address different from" comes from the bridge plugin,
// whose default bridge is cni0).
func staleLink(p map[string]string) string {
	if l := p[v1alpha1.ParamBridge]; l != "" {
		return l
	}
	if p[v1alpha1.ParamAddress] != "" {
		return "cni0"
	}
	return ""
}

// staleResults is the RemoveStaleCNIResults step: always the results of sandboxes that are gone, and, when the
// evidence is a cached result the runtime cannot convert ("no converter for CNI result version A to B"), the
// results of version A on that network.
func staleResults(p map[string]string) v1alpha1.PlanStep {
	st := v1alpha1.PlanStep{Type: v1alpha1.StepRemoveStaleCNIResults}
	if p[v1alpha1.ParamResultVersion] != "" && p[v1alpha1.ParamNetwork] != "" {
		st.Network, st.ResultVersion = p[v1alpha1.ParamNetwork], p[v1alpha1.ParamResultVersion]
	}
	return st
}

func firstNonEmpty(v ...string) string {
	for _, s := range v {
		if s != "" {
			return s
		}
	}
	return ""
}

// Defaulted fills the fields of a repair spec that the RemediationPolicy CRD defaults, for callers that build one
// by hand (the remediator's plan command, tests): the manager's objects come defaulted from the API server.
func Defaulted(r v1alpha1.RepairSpec) v1alpha1.RepairSpec {
	if r.VersionStrategy == "" {
		r.VersionStrategy = v1alpha1.VersionRepairRewriteConfig
	}
	if r.InstallReferencePlugins == nil {
		yes := true
		r.InstallReferencePlugins = &yes
	}
	c := &r.Containerd
	c.ConfigPath = firstNonEmpty(c.ConfigPath, "/etc/containerd/config.toml")
	c.BinDir = firstNonEmpty(c.BinDir, "/opt/cni/bin")
	c.ConfDir = firstNonEmpty(c.ConfDir, "/etc/cni/net.d")
	r.Units.Kubelet = firstNonEmpty(r.Units.Kubelet, DefaultKubeletUnit)
	r.Units.Runtime = firstNonEmpty(r.Units.Runtime, DefaultRuntimeUnit)
	return r
}
