package planner

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
)

// shape spells a plan as "Type[detail] ..." so that whole plans compare in one line.
func shape(p v1alpha1.Plan) string {
	var out []string
	for _, s := range p.Steps {
		d := s.Unit + s.ConfList + s.CNIVersion + s.Link + s.Network + strings.Join(s.Plugins, ",")
		if s.ResultVersion != "" {
			d += "@" + s.ResultVersion
		}
		if s.Runtime != nil {
			d += s.Runtime.ConfDir
		}
		if d != "" {
			out = append(out, fmt.Sprintf("%s[%s]", s.Type, d))
		} else {
			out = append(out, string(s.Type))
		}
	}
	return strings.Join(out, " ")
}

func TestBuildFollowsTheRunbookOrderAdaptedPerRepair(t *testing.T) {
	no := false
	cases := []struct {
		name string
		req  Request
		want string
	}{
		{"incompatible, rewrite the config (default)", Request{Signature: v1alpha1.SignatureCNIVersionIncompatible, Params: map[string]string{"configFile": "/etc/cni/net.d/10-net.conflist"}},
			"StopUnit[kubelet.service] StopUnit[containerd.service] SetCNIVersion[10-net.conflist] StartUnit[containerd.service] StartUnit[kubelet.service] VerifyNode"},
		{"incompatible, upgrade the plugins", Request{Signature: v1alpha1.SignatureCNIVersionIncompatible, Repair: v1alpha1.RepairSpec{VersionStrategy: v1alpha1.VersionRepairUpgradePlugins}},
			"StopUnit[kubelet.service] StopUnit[containerd.service] InstallReferencePlugins StartUnit[containerd.service] StartUnit[kubelet.service] VerifyNode"},
		{"missing version with the policy's target and units", Request{Signature: v1alpha1.SignatureCNIVersionMissing, Repair: v1alpha1.RepairSpec{CNIVersion: "1.0.0", Units: v1alpha1.UnitsSpec{Kubelet: "k.service", Runtime: "c.service"}}},
			"StopUnit[k.service] StopUnit[c.service] SetCNIVersion[1.0.0] StartUnit[c.service] StartUnit[k.service] VerifyNode"},
		{"not initialized", Request{Signature: v1alpha1.SignatureCNINotInitialized, Repair: Defaulted(v1alpha1.RepairSpec{})},
			"StopUnit[kubelet.service] StopUnit[containerd.service] FixConfFileModes RepairRuntimeCNIConfig[/etc/cni/net.d] StartUnit[containerd.service] StartUnit[kubelet.service] VerifyNode"},
		{"reference plugin missing", Request{Signature: v1alpha1.SignaturePluginBinaryMissing, Params: map[string]string{"plugin": "portmap"}},
			"StopUnit[kubelet.service] StopUnit[containerd.service] InstallReferencePlugins[portmap] StartUnit[containerd.service] StartUnit[kubelet.service] VerifyNode"},
		{"IPAM exhausted keeps the runtime up for CRI", Request{Signature: v1alpha1.SignatureIPAMExhausted, Params: map[string]string{"network": "cni0"}},
			"StopUnit[kubelet.service] ReclaimIPAM RemoveStaleNetns StartUnit[kubelet.service] VerifyNode"},
		{"stale cni0 address", Request{Signature: v1alpha1.SignatureStaleState, Params: map[string]string{"address": "10.244.1.1/24"}},
			"StopUnit[kubelet.service] DeleteLink[cni0] RemoveStaleNetns RemoveStaleCNIResults StartUnit[kubelet.service] VerifyNode"},
		{"cached result the runtime cannot convert", Request{Signature: v1alpha1.SignatureStaleState,
			Params: map[string]string{"network": "lab", "configVersion": "1.1.0", "resultVersion": "1.0.0"}},
			"StopUnit[kubelet.service] RemoveStaleNetns RemoveStaleCNIResults[lab@1.0.0] StartUnit[kubelet.service] VerifyNode"},
		{"invalid config", Request{Signature: v1alpha1.SignatureConfigInvalid, Params: map[string]string{"configFile": "10-calico.conflist"}},
			"StopUnit[kubelet.service] StopUnit[containerd.service] RestoreConfList[10-calico.conflist] StartUnit[containerd.service] StartUnit[kubelet.service] VerifyNode"},
		{"custom signature mapped to an action", Request{Signature: "site-ipam", Action: v1alpha1.ActionReclaimIPAM},
			"StopUnit[kubelet.service] ReclaimIPAM RemoveStaleNetns StartUnit[kubelet.service] VerifyNode"},
		{"one unit runs kubelet and the runtime (k3s): stopped and started once", Request{Signature: v1alpha1.SignatureCNIVersionIncompatible, Repair: v1alpha1.RepairSpec{Units: v1alpha1.UnitsSpec{Kubelet: "k3s-agent.service", Runtime: "k3s-agent.service"}}},
			"StopUnit[k3s-agent.service] SetCNIVersion StartUnit[k3s-agent.service] VerifyNode"},
		{"IPAM exhausted where one unit runs both: nothing stopped, CRI must answer", Request{Signature: v1alpha1.SignatureIPAMExhausted, Repair: v1alpha1.RepairSpec{Units: v1alpha1.UnitsSpec{Kubelet: "k3s-agent.service", Runtime: "k3s-agent.service"}}},
			"ReclaimIPAM RemoveStaleNetns VerifyNode"},
		{"install disallowed falls on the caller", Request{Signature: v1alpha1.SignatureCNIVersionMissing, Repair: v1alpha1.RepairSpec{InstallReferencePlugins: &no}},
			"StopUnit[kubelet.service] StopUnit[containerd.service] SetCNIVersion StartUnit[containerd.service] StartUnit[kubelet.service] VerifyNode"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p, err := Build(c.req)
			if err != nil {
				t.Fatal(err)
			}
			if got := shape(p); got != c.want {
				t.Fatalf("\n got %s\nwant %s", got, c.want)
			}
			// Every plan ends with both units started and a verification, whatever the repair.
			last := p.Steps[len(p.Steps)-1]
			if last.Type != v1alpha1.StepVerifyNode {
				t.Fatal("plan does not end with VerifyNode")
			}
			started := map[string]bool{}
			for _, s := range p.Steps {
				switch s.Type {
				case v1alpha1.StepStopUnit:
					started[s.Unit] = false
				case v1alpha1.StepStartUnit:
					started[s.Unit] = true
				}
			}
			for u, up := range started {
				if !up {
					t.Fatalf("%s is stopped and never started", u)
				}
			}
		})
	}
}

func TestBuildRefusesWhatIsNotANodeRepair(t *testing.T) {
	no := false
	for _, c := range []struct {
		req  Request
		want error
		text string
	}{
		{Request{Signature: v1alpha1.SignatureDaemonUnavailable}, ErrNoNodeRepair, ""},
		{Request{Signature: v1alpha1.SignatureAPIServerAccess}, ErrNoNodeRepair, "RestartCNIAgentPod"},
		{Request{Signature: "custom", Action: v1alpha1.ActionDiagnose}, ErrNoNodeRepair, ""},
		{Request{Signature: v1alpha1.SignaturePluginBinaryMissing, Params: map[string]string{"plugin": "flannel"}}, ErrVendorPlugin, "flannel"},
		{Request{Signature: v1alpha1.SignatureCNIVersionIncompatible, Repair: v1alpha1.RepairSpec{VersionStrategy: v1alpha1.VersionRepairUpgradePlugins, InstallReferencePlugins: &no}}, nil, "does not allow installing"},
	} {
		_, err := Build(c.req)
		if err == nil || (c.want != nil && !errors.Is(err, c.want)) || !strings.Contains(err.Error(), c.text) {
			t.Errorf("%+v: %v", c.req, err)
		}
	}
}
