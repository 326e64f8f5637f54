package remediation

import (
	"context"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
)

// restartAgentPod carries out RestartCNIAgentPod: it evicts the node's pod of the CNI provider's DaemonSet so
// that the DaemonSet recreates it with a fresh service account token (the cni-apiserver-access repair). The node is
// neither drained nor touched by an executor; the verification that follows proves pods get their network again.
func (r *Reconciler) restartAgentPod(ctx context.Context, s *scope) (reconcile.Result, error) {
	nr := s.nr
	ns, name, ok := strings.Cut(nr.Spec.Parameters[v1alpha1.ParamAgentDaemonSet], "/")
	if !ok {
		s.transition(v1alpha1.PhaseEscalated, ReasonEscalated, fmt.Sprintf("RestartCNIAgentPod needs the CNI provider's DaemonSet, and none was found for %s; %s",
			nr.Spec.Parameters["pluginType"], escalationMessage(nr)))
		return reconcile.Result{}, nil
	}
	pods := &corev1.PodList{}
	// Read live: pods are not cached.
	if err := r.APIReader.List(ctx, pods, client.InNamespace(ns), client.MatchingFields{"spec.nodeName": nr.Spec.NodeName}); err != nil {
		return reconcile.Result{}, fmt.Errorf("listing the pods in %s on node %s for %s: %w", ns, nr.Spec.NodeName, nr.Name, err)
	}
	for i := range pods.Items {
		pod := &pods.Items[i]
		owner := metav1.GetControllerOf(pod)
		if owner == nil || owner.Kind != "DaemonSet" || owner.Name != name {
			continue
		}
		if pod.DeletionTimestamp == nil {
			// Evicted, not deleted: the manager deletes pods only in its own namespace (least privilege), and an
			// eviction respects a budget someone set on the agent.
			eviction := &policyv1.Eviction{ObjectMeta: metav1.ObjectMeta{Name: pod.Name, Namespace: pod.Namespace},
				DeleteOptions: &metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &pod.UID}}}
			if err := r.Kube.PolicyV1().Evictions(pod.Namespace).Evict(ctx, eviction); client.IgnoreNotFound(err) != nil {
				return reconcile.Result{}, fmt.Errorf("evicting CNI agent pod %s/%s: %w", pod.Namespace, pod.Name, err)
			}
		}
		s.event(normal, ReasonAgentPodRestarted, actionRepair, fmt.Sprintf("evicted CNI agent pod %s/%s on node %s; DaemonSet %s/%s recreates it",
			pod.Namespace, pod.Name, nr.Spec.NodeName, ns, name))
		s.setCondition(v1alpha1.RemediationRepaired, metav1.ConditionTrue, ReasonAgentPodRestarted, "CNI agent pod restarted")
		s.transition(v1alpha1.PhaseVerifying, ReasonVerifying, fmt.Sprintf("verifying node %s after the CNI agent restart", nr.Spec.NodeName))
		return moveOn, nil
	}
	s.transition(v1alpha1.PhaseEscalated, ReasonEscalated, fmt.Sprintf("DaemonSet %s/%s has no pod on node %s to restart; %s", ns, name, nr.Spec.NodeName, escalationMessage(nr)))
	return reconcile.Result{}, nil
}
