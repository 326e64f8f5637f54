package detection

import (
	"context"
	"fmt"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
	"github.com/cnimedic/cnimedic/internal/signature"
)

// knownAgents are the DaemonSets of common CNI providers, by provider (signature.Vendor of the plugin type their
// CNI binary reports: cilium for cilium-cni, weave for weave-net, multus for multus-shim), each with the names its
// manifests have used.
var knownAgents = map[string][]string{
	"flannel":        {"kube-flannel-ds", "kube-flannel"},
	"calico":         {"calico-node"},
	"cilium":         {"cilium"},
	"weave":          {"weave-net"},
	"antrea":         {"antrea-agent"},
	"multus":         {"kube-multus-ds", "kube-multus-ds-amd64"},
	"aws-vpc-cni":    {"aws-node"},
	"canal":          {"canal"},
	"kube-router":    {"kube-router"},
	"kube-ovn":       {"kube-ovn-cni"},
	"ovn-kubernetes": {"ovnkube-node"},
}

// agentNames returns the DaemonSet names of the provider whose plugin type the evidence names: the plugin type
// itself when it is a provider's name (flannel, calico, canal), else its provider's.
func agentNames(pluginType string) []string {
	kind := strings.ToLower(pluginType)
	if names := knownAgents[kind]; len(names) > 0 {
		return names
	}
	if vendor, ok := signature.Vendor(kind); ok {
		return knownAgents[vendor]
	}
	return nil
}

// addAgentState finds the DaemonSet of the CNI provider the evidence names and records its rollout state, so that
// the escalation says whether the agent is down everywhere (a cluster-level cause) or only here.
func addAgentState(ctx context.Context, c client.Reader, params map[string]string) {
	kind := params[v1alpha1.ParamPluginType]
	if kind == "" {
		return
	}
	names := agentNames(kind)
	if len(names) == 0 {
		return
	}
	list := &appsv1.DaemonSetList{}
	if err := c.List(ctx, list); err != nil {
		return
	}
	for _, ds := range list.Items {
		for _, n := range names {
			if ds.Name == n {
				params[v1alpha1.ParamAgentDaemonSet] = ds.Namespace + "/" + ds.Name
				params[v1alpha1.ParamAgentState] = fmt.Sprintf("%d desired, %d ready, %d available, %d updated",
					ds.Status.DesiredNumberScheduled, ds.Status.NumberReady, ds.Status.NumberAvailable, ds.Status.UpdatedNumberScheduled)
				return
			}
		}
	}
	params[v1alpha1.ParamAgentState] = fmt.Sprintf("no %s DaemonSet found in the cluster", kind)
}
