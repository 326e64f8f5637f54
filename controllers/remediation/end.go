package remediation

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
)

// reconcileEnd tidies up after an end. A remediation that succeeded, or ended before touching the node, gives the
// node back. One that failed or rolled back keeps it cordoned, and keeps its finalizer so that it still explains
// the cordon: deleting it then hands the node to a person (reconcileDelete).
func (r *Reconciler) reconcileEnd(ctx context.Context, s *scope) (reconcile.Result, error) {
	if err := r.deleteCanary(ctx, s); err != nil {
		return reconcile.Result{}, fmt.Errorf("tidying up after %s: %w", s.nr.Name, err)
	}
	tidy, err := r.tidyPods(ctx, s)
	if err != nil {
		return reconcile.Result{}, fmt.Errorf("tidying up after %s: %w", s.nr.Name, err)
	}
	switch s.nr.Status.Phase {
	case v1alpha1.PhaseFailed, v1alpha1.PhaseRolledBack:
		// The node stays cordoned for a person, but cnimedic does nothing more to it: its lease goes back now (a
		// lease nobody renews would only keep the next repair of the node waiting until it lapses).
		if err := r.giveBackLease(ctx, s); err != nil {
			return reconcile.Result{}, fmt.Errorf("after %s ended %s: %w", s.nr.Name, s.nr.Status.Phase, err)
		}
		if s.node == nil || s.node.Annotations[v1alpha1.AnnotationCordonedBy] != s.nr.Name {
			return tidy, r.removeFinalizer(ctx, s)
		}
		return tidy, nil
	}
	if err := r.release(ctx, s, true); err != nil {
		return reconcile.Result{}, fmt.Errorf("releasing node %s after %s ended: %w", s.nr.Spec.NodeName, s.nr.Name, err)
	}
	return tidy, r.removeFinalizer(ctx, s)
}

// keepFailedPods is how long the executor and diagnosis pods of a repair that failed or rolled back are kept, for
// their logs; those of any other end are deleted once their result is recorded.
const keepFailedPods = 24 * time.Hour

// tidyPods deletes the remediation's executor and diagnosis pods once they are no longer needed, and says when to
// come back for the ones kept for now.
func (r *Reconciler) tidyPods(ctx context.Context, s *scope) (reconcile.Result, error) {
	if p := s.nr.Status.Phase; (p == v1alpha1.PhaseFailed || p == v1alpha1.PhaseRolledBack) && s.nr.Status.CompletionTime != nil {
		if until := s.nr.Status.CompletionTime.Add(keepFailedPods); s.now.Before(until) {
			return reconcile.Result{RequeueAfter: until.Sub(s.now)}, nil
		}
	}
	pods := &corev1.PodList{}
	if err := r.Client.List(ctx, pods, client.InNamespace(r.Config.Namespace), client.MatchingLabels{v1alpha1.LabelRemediation: s.nr.Name}); err != nil {
		return reconcile.Result{}, fmt.Errorf("listing its pods: %w", err)
	}
	for i := range pods.Items {
		pod := &pods.Items[i]
		if pod.DeletionTimestamp != nil {
			continue
		}
		if err := r.Client.Delete(ctx, pod, client.PropagationPolicy(metav1.DeletePropagationBackground)); err != nil && !apierrors.IsNotFound(err) {
			return reconcile.Result{}, fmt.Errorf("deleting pod %s/%s: %w", pod.Namespace, pod.Name, err)
		}
	}
	return reconcile.Result{}, nil
}

// reconcileDelete releases the node of a remediation being deleted. A run still going on the node is waited for:
// the host-side sequence restarts kubelet and the runtime on every path out, and the node must not be uncordoned
// under it.
func (r *Reconciler) reconcileDelete(ctx context.Context, s *scope) (reconcile.Result, error) {
	if name := s.nr.Status.ExecutorPod; name != "" && !s.nr.Status.Phase.IsTerminal() {
		pod := &corev1.Pod{}
		err := r.Client.Get(ctx, types.NamespacedName{Namespace: r.Config.Namespace, Name: name}, pod)
		// Only a pod that may change the node is waited for: a diagnosis or a preview changes nothing.
		if err == nil && pod.Labels[v1alpha1.LabelComponent] == "executor" && pod.Status.Phase != corev1.PodSucceeded && pod.Status.Phase != corev1.PodFailed && pod.DeletionTimestamp == nil {
			s.event(normal, ReasonReleased, actionFinish, fmt.Sprintf("deletion waits for executor pod %s to finish its run on node %s", name, s.nr.Spec.NodeName), "delete-wait")
			return reconcile.Result{RequeueAfter: r.poll()}, nil
		}
		if err != nil && !apierrors.IsNotFound(err) {
			return reconcile.Result{}, fmt.Errorf("getting executor pod %s/%s before %s is deleted: %w", r.Config.Namespace, name, s.nr.Name, err)
		}
	}
	if err := r.deleteCanary(ctx, s); err != nil {
		return reconcile.Result{}, fmt.Errorf("tidying up before %s is deleted: %w", s.nr.Name, err)
	}
	failed := s.nr.Status.Phase == v1alpha1.PhaseFailed || s.nr.Status.Phase == v1alpha1.PhaseRolledBack
	if err := r.release(ctx, s, !failed); err != nil {
		return reconcile.Result{}, fmt.Errorf("releasing node %s before %s is deleted: %w", s.nr.Spec.NodeName, s.nr.Name, err)
	}
	return reconcile.Result{}, r.removeFinalizer(ctx, s)
}

// nodeGone ends a remediation whose node was deleted.
func (r *Reconciler) nodeGone(ctx context.Context, s *scope) (reconcile.Result, error) {
	s.nr.Status.Cordoned = false
	s.transition(v1alpha1.PhaseFailed, ReasonNodeGone, fmt.Sprintf("node %s was deleted during the %s phase", s.nr.Spec.NodeName, s.nr.Status.Phase))
	if err := r.deleteCanary(ctx, s); err != nil {
		return reconcile.Result{}, fmt.Errorf("tidying up after node %s was deleted: %w", s.nr.Spec.NodeName, err)
	}
	return reconcile.Result{}, r.removeFinalizer(ctx, s)
}
