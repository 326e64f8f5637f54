package remediation

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
)

// reconcileVerifying checks the repaired node before giving it back: Ready with no NetworkPluginNotReady (kubelet
// reports the runtime's NetworkReady through it) and, when the policy asks, a canary pod with a pod network
// running on it. Only then is the node uncordoned. A failed verification asks the executor to roll back, and the
// node stays cordoned.
func (r *Reconciler) reconcileVerifying(ctx context.Context, s *scope) (reconcile.Result, error) {
	nr, p := s.nr, s.policy
	deadline := phaseSince(nr, v1alpha1.PhaseVerifying, s.now).Add(p.Spec.Verification.Timeout.Duration)

	ok, why := nodeReady(s.node)
	if ok && ptr.Deref(p.Spec.Verification.Canary, true) {
		var err error
		ok, why, err = r.canary(ctx, s)
		if err != nil {
			return reconcile.Result{}, fmt.Errorf("verifying node %s with a canary pod: %w", nr.Spec.NodeName, err)
		}
	}
	if ok {
		if err := r.deleteCanary(ctx, s); err != nil {
			return reconcile.Result{}, fmt.Errorf("tidying up after verifying node %s: %w", nr.Spec.NodeName, err)
		}
		s.setCondition(v1alpha1.RemediationVerified, metav1.ConditionTrue, ReasonVerified, "node Ready and pods get their network")
		s.event(normal, ReasonVerified, actionVerify, fmt.Sprintf("node %s is Ready and a canary pod got its network", nr.Spec.NodeName))
		if err := r.release(ctx, s, true); err != nil {
			return reconcile.Result{}, fmt.Errorf("releasing node %s after its verification: %w", nr.Spec.NodeName, err)
		}
		took := "?"
		if nr.Status.StartTime != nil {
			took = s.now.Sub(nr.Status.StartTime.Time).Round(time.Second).String()
		}
		s.transition(v1alpha1.PhaseSucceeded, ReasonSucceeded, fmt.Sprintf("node %s repaired (%s) in %s and uncordoned", nr.Spec.NodeName, nr.Spec.Signature, took))
		return reconcile.Result{}, nil
	}
	if s.now.Before(deadline) {
		return r.requeueAt(s, deadline), nil
	}
	if err := r.deleteCanary(ctx, s); err != nil {
		return reconcile.Result{}, fmt.Errorf("tidying up after the failed verification of node %s: %w", nr.Spec.NodeName, err)
	}
	msg := fmt.Sprintf("verification failed after %s: %s", p.Spec.Verification.Timeout.Duration, why)
	s.setCondition(v1alpha1.RemediationVerified, metav1.ConditionFalse, ReasonVerificationFailed, msg)
	s.event(warning, ReasonVerificationFailed, actionVerify, msg)
	s.transition(v1alpha1.PhaseRollingBack, ReasonRollingBack, msg+"; the executor undoes the repair")
	return r.followRollback(ctx, s)
}

// followRollback runs the executor's rollback of this remediation and ends RolledBack or Failed. The node stays
// cordoned either way: a person decides what comes next.
func (r *Reconciler) followRollback(ctx context.Context, s *scope) (reconcile.Result, error) {
	verifyMsg := ""
	// The rollback started when the verification failed (the Verified condition's transition, on our clock).
	started := s.now
	if c := meta.FindStatusCondition(s.nr.Status.Conditions, v1alpha1.RemediationVerified); c != nil {
		verifyMsg, started = c.Message, c.LastTransitionTime.Time
	}
	res, wait, failed, err := r.awaitExecutor(ctx, s, modeRollback, started)
	switch {
	case err != nil:
		return reconcile.Result{}, fmt.Errorf("rolling back the repair of node %s: %w", s.nr.Spec.NodeName, err)
	case wait != nil:
		return *wait, nil
	case failed != nil:
		s.transition(v1alpha1.PhaseFailed, failed.reason, verifyMsg+"; the rollback's "+failed.message+"; "+humanHint(s))
	case res.Outcome == v1alpha1.OutcomeRolledBack || res.Outcome == v1alpha1.OutcomeSucceeded || res.Outcome == v1alpha1.OutcomeNoChange:
		s.nr.Status.Result = res
		s.transition(v1alpha1.PhaseRolledBack, ReasonRolledBack, verifyMsg+"; every change was rolled back; "+humanHint(s))
	default:
		s.nr.Status.Result = res
		s.transition(v1alpha1.PhaseFailed, ReasonRepairFailed, verifyMsg+"; the rollback failed too: "+res.Message+"; "+humanHint(s))
	}
	return reconcile.Result{}, nil
}

func canaryName(nr *v1alpha1.NodeRemediation) string {
	sum := sha256.Sum256([]byte(string(nr.UID) + "/canary"))
	return "cnimedic-canary-" + hex.EncodeToString(sum[:6])
}

// canary makes sure the canary pod exists on the node and reports whether it runs.
func (r *Reconciler) canary(ctx context.Context, s *scope) (bool, string, error) {
	nr, p := s.nr, s.policy
	name := canaryName(nr)
	pod := &corev1.Pod{}
	err := r.Client.Get(ctx, types.NamespacedName{Namespace: r.Config.Namespace, Name: name}, pod)
	if apierrors.IsNotFound(err) {
		image := p.Spec.Verification.CanaryImage
		if image == "" {
			image = r.Config.CanaryImage
		}
		pod = &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: r.Config.Namespace, Labels: map[string]string{
				v1alpha1.LabelRemediation: nr.Name, v1alpha1.LabelComponent: "canary", v1alpha1.LabelNode: nr.Spec.NodeName,
			}},
			Spec: corev1.PodSpec{
				// Pinned to the cordoned node (nodeName skips the scheduler) and on the pod network: the point is a
				// sandbox that needs the CNI that was repaired.
				NodeName:                      nr.Spec.NodeName,
				RestartPolicy:                 corev1.RestartPolicyNever,
				AutomountServiceAccountToken:  ptr.To(false),
				Tolerations:                   []corev1.Toleration{{Operator: corev1.TolerationOpExists}},
				TerminationGracePeriodSeconds: ptr.To(int64(1)),
				Containers: []corev1.Container{{
					Name: "canary", Image: image, ImagePullPolicy: corev1.PullIfNotPresent,
					SecurityContext: &corev1.SecurityContext{
						RunAsNonRoot: ptr.To(true), RunAsUser: ptr.To(int64(65532)), AllowPrivilegeEscalation: ptr.To(false),
						ReadOnlyRootFilesystem: ptr.To(true), Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
					},
				}},
			},
		}
		if err := controllerutil.SetOwnerReference(nr, pod, r.Client.Scheme()); err != nil {
			return false, "", fmt.Errorf("making %s the owner of canary pod %s: %w", nr.Name, name, err)
		}
		if err := r.Client.Create(ctx, pod); err != nil && !apierrors.IsAlreadyExists(err) {
			return false, "", fmt.Errorf("creating canary pod %s/%s: %w", pod.Namespace, name, err)
		}
		s.event(normal, ReasonVerifying, actionVerify, fmt.Sprintf("started canary pod %s/%s on node %s", pod.Namespace, name, nr.Spec.NodeName), "canary")
		return false, "the canary pod was just created", nil
	}
	if err != nil {
		return false, "", fmt.Errorf("getting canary pod %s/%s: %w", r.Config.Namespace, name, err)
	}
	switch {
	case pod.Status.Phase == corev1.PodRunning || pod.Status.Phase == corev1.PodSucceeded:
		return true, "", nil
	case pod.Status.Phase == corev1.PodFailed:
		return false, fmt.Sprintf("canary pod %s failed: %s", name, pod.Status.Message), nil
	}
	return false, fmt.Sprintf("canary pod %s is %s%s", name, pod.Status.Phase, waitingReason(pod)), nil
}

func waitingReason(pod *corev1.Pod) string {
	for _, cs := range pod.Status.ContainerStatuses {
		if w := cs.State.Waiting; w != nil {
			return fmt.Sprintf(" (%s: %s)", w.Reason, w.Message)
		}
	}
	return ""
}

func (r *Reconciler) deleteCanary(ctx context.Context, s *scope) error {
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: r.Config.Namespace, Name: canaryName(s.nr)}}
	if err := r.Client.Delete(ctx, pod, client.GracePeriodSeconds(0)); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("deleting canary pod %s/%s: %w", pod.Namespace, pod.Name, err)
	}
	return nil
}
