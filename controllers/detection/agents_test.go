package detection

import (
	"context"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
	"github.com/cnimedic/cnimedic/internal/signature"
)

// The plugin type in the evidence is the CNI binary's (cilium-cni, weave-net, multus-shim), not the provider's
// name: each must still find its provider's DaemonSet, or the escalation and RestartCNIAgentPod lose it.
func TestEachAgentPluginTypeFindsItsProvidersDaemonSet(t *testing.T) {
	ds := func(ns, name string, ready int32) *appsv1.DaemonSet {
		return &appsv1.DaemonSet{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
			Status:     appsv1.DaemonSetStatus{DesiredNumberScheduled: 3, NumberReady: ready, NumberAvailable: ready, UpdatedNumberScheduled: 3},
		}
	}
	c := fake.NewClientBuilder().WithScheme(scheme.Scheme).WithObjects(
		ds("kube-system", "cilium", 2),
		ds("kube-system", "weave-net", 1),
		ds("kube-system", "kube-multus-ds", 0),
		ds("kube-flannel", "kube-flannel-ds", 3),
		ds("kube-system", "calico-node", 3),
		ds("kube-system", "antrea-agent", 3),
		ds("kube-system", "aws-node", 3),
	).Build()
	cases := map[string]string{
		"cilium-cni":  "kube-system/cilium",
		"cilium":      "kube-system/cilium",
		"weave-net":   "kube-system/weave-net",
		"weave":       "kube-system/weave-net",
		"multus-shim": "kube-system/kube-multus-ds",
		"multus":      "kube-system/kube-multus-ds",
		"flannel":     "kube-flannel/kube-flannel-ds",
		"calico":      "kube-system/calico-node",
		"calico-ipam": "kube-system/calico-node",
		"antrea":      "kube-system/antrea-agent",
		"aws-cni":     "kube-system/aws-node",
	}
	for pluginType, want := range cases {
		params := map[string]string{v1alpha1.ParamPluginType: pluginType}
		addAgentState(context.Background(), c, params)
		if params[v1alpha1.ParamAgentDaemonSet] != want {
			t.Errorf("plugin type %s: DaemonSet %q, want %q (state %q)", pluginType, params[v1alpha1.ParamAgentDaemonSet], want, params[v1alpha1.ParamAgentState])
		}
		if params[v1alpha1.ParamAgentState] == "" {
			t.Errorf("plugin type %s: no agent state", pluginType)
		}
	}
}

// Every plugin type the catalog implies for an agent it cannot reach names a provider whose DaemonSet is known.
func TestEveryAgentTheCatalogBlamesHasAKnownDaemonSet(t *testing.T) {
	for _, d := range signature.Definitions() {
		for _, p := range d.Patterns {
			pt := p.Implies[v1alpha1.ParamPluginType]
			if pt == "" {
				continue
			}
			if len(agentNames(pt)) == 0 {
				t.Errorf("%s implies plugin type %q, whose DaemonSet cnimedic does not know", d.ID, pt)
			}
		}
	}
}

// A plugin type of no known provider names no DaemonSet, and says so instead of guessing one.
func TestAnUnknownPluginTypeNamesNoDaemonSet(t *testing.T) {
	c := fake.NewClientBuilder().WithScheme(scheme.Scheme).WithObjects(&appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Namespace: "kube-system", Name: "cilium"}}).Build()
	for _, pluginType := range []string{"bridge", "my-own-plugin"} {
		params := map[string]string{v1alpha1.ParamPluginType: pluginType}
		addAgentState(context.Background(), c, params)
		if params[v1alpha1.ParamAgentDaemonSet] != "" || params[v1alpha1.ParamAgentState] != "" {
			t.Errorf("plugin type %s: got %v, want no agent parameters", pluginType, params)
		}
	}
}
