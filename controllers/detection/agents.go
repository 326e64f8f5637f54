package detection

import (
	"context"
	"fmt"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/cnimedic/cnimedic/internal/signature"
)

// Parameters the detection adds for causes in the CNI provider itself.
const (
	ParamAgentDaemonSet = "agentDaemonSet"
	ParamAgentState     = "agentState"
)

// knownAgents are the DaemonSets of common CNI providers, by the plugin type their CNI binary reports.
var knownAgents = map[string][]string{
	"flannel":     {"kube-flannel-ds", "kube-flannel"},
	"calico":      {"calico-node"},
	"cilium":      {"cilium"},
	"weave":       {"weave-net"},
	"antrea":      {"antrea-agent"},
	"aws-cni":     {"aws-node"},
	"canal":       {"canal"},
	"kube-router": {"kube-router"},
}

// addAgentState finds the DaemonSet of the CNI provider the evidence names and records its rollout state, so that
// the escalation says whether the agent is down everywhere (a cluster-level cause) or only here.
func addAgentState(ctx context.Context, c client.Reader, params map[string]string) {
	kind := params[signature.ParamPluginType]
	if kind == "" {
		return
	}
	names := knownAgents[strings.ToLower(kind)]
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
				params[ParamAgentDaemonSet] = ds.Namespace + "/" + ds.Name
				params[ParamAgentState] = fmt.Sprintf("%d desired, %d ready, %d available, %d updated",
					ds.Status.DesiredNumberScheduled, ds.Status.NumberReady, ds.Status.NumberAvailable, ds.Status.UpdatedNumberScheduled)
				return
			}
		}
	}
	params[ParamAgentState] = fmt.Sprintf("no %s DaemonSet found in the cluster", kind)
}
