package remediation

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/kubectl/pkg/drain"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
)

// reconcileDraining cordons the node (recording that cnimedic did) and evicts its pods through the eviction API with
// kubectl's drain package: PodDisruptionBudgets are respected and DaemonSet pods stay. It never blocks: each
// reconcile evicts what it can and requeues, and progress (pods left, what blocks) is in the status and events.
// Evicted pods on a CNI-broken node may stay Terminating until the repair (their sandbox cannot be torn down), so
// an accepted eviction counts as done.
func (r *Reconciler) reconcileDraining(ctx context.Context, s *scope) (reconcile.Result, error) {
	nr, p, node := s.nr, s.policy, s.node
	if ok, err := r.mayAct(ctx, s); err != nil {
		return reconcile.Result{}, fmt.Errorf("checking that %s may still drain node %s: %w", nr.Name, nr.Spec.NodeName, err)
	} else if !ok {
		return reconcile.Result{}, nil
	}
	if !nr.Status.Action.IsNodeAction() {
		// Restarting the CNI agent pod changes nothing on the node itself: no drain.
		s.transition(v1alpha1.PhaseRepairing, ReasonDrained, "no drain needed for "+string(nr.Status.Action))
		return moveOn, nil
	}
	if nr.Status.Drain == nil || nr.Status.Drain.StartTime == nil {
		nr.Status.Drain = &v1alpha1.DrainStatus{StartTime: &metav1.Time{Time: s.now}}
	}
	dry := p.Spec.DryRun
	if !dry {
		if err := r.cordon(ctx, s); err != nil {
			return reconcile.Result{}, fmt.Errorf("cordoning node %s for %s: %w", node.Name, nr.Name, err)
		}
	}

	helper := r.drainHelper(ctx, p, nr)
	list, errs := helper.GetPodsForDeletion(node.Name)
	var pods []corev1.Pod
	if list != nil {
		pods = list.Pods()
	}
	var pending []string
	var blockedBy []string
	for _, pod := range pods {
		if pod.DeletionTimestamp != nil {
			continue // eviction accepted earlier
		}
		name := pod.Namespace + "/" + pod.Name
		if dry {
			pending = append(pending, name)
			continue
		}
		err := helper.EvictPod(pod, policyv1.SchemeGroupVersion)
		switch {
		case err == nil, apierrors.IsNotFound(err):
		case apierrors.IsTooManyRequests(err):
			pending = append(pending, name)
			blockedBy = append(blockedBy, r.blockingBudget(ctx, &pod))
		default:
			pending = append(pending, name)
			blockedBy = append(blockedBy, fmt.Sprintf("eviction of %s: %v", name, err))
		}
	}
	for _, e := range errs {
		msg := e.Error()
		if strings.Contains(msg, "declare no controller") {
			msg += fmt.Sprintf("; an approver may allow it for this remediation: kubectl annotate noderemediation/%s %s=true (or set drain.evictUnmanagedPods in policy %s)",
				nr.Name, v1alpha1.AnnotationEvictUnmanagedPods, p.Name)
		}
		blockedBy = append(blockedBy, msg)
	}
	blockedBy = unique(blockedBy)
	st := nr.Status.Drain
	st.PodsRemaining = int32(len(pending))
	st.BlockedBy = strings.Join(blockedBy, "; ")

	if dry {
		st.Message = fmt.Sprintf("dry run: would cordon node %s and evict %d pods", node.Name, len(pending))
		if len(pending) > 0 {
			st.Message += ": " + strings.Join(firstN(pending, 10), ", ")
		}
		s.event(normal, ReasonDryRun, actionDrain, st.Message)
		s.transition(v1alpha1.PhaseRepairing, ReasonDryRun, "dry run: asking the executor what it would change, changing nothing")
		return moveOn, nil
	}

	if len(pending) == 0 && len(errs) == 0 {
		st.Message = "every pod that had to leave was evicted"
		s.setCondition(v1alpha1.RemediationDrained, metav1.ConditionTrue, ReasonDrained, st.Message)
		s.transition(v1alpha1.PhaseRepairing, ReasonDrained, fmt.Sprintf("node %s drained: handing it to the executor", node.Name))
		return moveOn, nil
	}

	deadline := st.StartTime.Add(p.Spec.Drain.Timeout.Duration)
	st.Message = fmt.Sprintf("%d pods left to evict", len(pending))
	if st.BlockedBy != "" {
		st.Message += "; blocked by " + st.BlockedBy
	}
	if s.now.Before(deadline) {
		if st.BlockedBy != "" {
			s.event(warning, ReasonDrainBlocked, actionDrain, st.Message, "blocked", st.BlockedBy)
		} else {
			s.event(normal, ReasonDraining, actionDrain, st.Message, "progress")
		}
		return r.requeueAt(s, deadline), nil
	}

	// The drain timed out.
	if p.Spec.Drain.OnTimeout == v1alpha1.DrainTimeoutProceed {
		msg := fmt.Sprintf("drain timed out after %s with %s; drain.onTimeout is Proceed: repairing with those pods still on the node (their disruption budgets are not overridden)",
			p.Spec.Drain.Timeout.Duration, st.Message)
		s.setCondition(v1alpha1.RemediationDrained, metav1.ConditionFalse, ReasonDrainTimeoutProceed, msg)
		s.transition(v1alpha1.PhaseRepairing, ReasonDrainTimeoutProceed, msg)
		return moveOn, nil
	}
	msg := fmt.Sprintf("drain timed out after %s with %s", p.Spec.Drain.Timeout.Duration, st.Message)
	s.setCondition(v1alpha1.RemediationDrained, metav1.ConditionFalse, ReasonDrainTimeout, msg)
	if err := r.release(ctx, s, true); err != nil {
		return reconcile.Result{}, fmt.Errorf("releasing node %s after the drain of %s timed out: %w", node.Name, nr.Name, err)
	}
	s.transition(v1alpha1.PhaseFailed, ReasonDrainTimeout, msg+"; the node was uncordoned if cnimedic had cordoned it, and nothing was repaired (set drain.onTimeout: Proceed to repair anyway)")
	return reconcile.Result{}, nil
}

func (r *Reconciler) drainHelper(ctx context.Context, p *v1alpha1.RemediationPolicy, nr *v1alpha1.NodeRemediation) *drain.Helper {
	grace := -1 // the pod's own terminationGracePeriodSeconds
	if p.Spec.Drain.GracePeriodSeconds != nil {
		grace = int(*p.Spec.Drain.GracePeriodSeconds)
	}
	return &drain.Helper{
		Ctx:                 ctx,
		Client:              r.Kube,
		IgnoreAllDaemonSets: true,
		DeleteEmptyDirData:  p.Spec.Drain.DeleteEmptyDirData,
		GracePeriodSeconds:  grace,
		PodSelector:         p.Spec.Drain.PodSelector,
		// Pods no controller recreates are not evicted unless the policy, or an approver for this remediation, says
		// so: kubectl's own default, and an unattended operator must not be bolder than a person at a terminal. The
		// drain reports them instead.
		Force: p.Spec.Drain.EvictUnmanagedPods || nr.Annotations[v1alpha1.AnnotationEvictUnmanagedPods] == "true",
		AdditionalFilters: []drain.PodFilter{func(pod corev1.Pod) drain.PodDeleteStatus {
			if pod.Namespace == r.Config.Namespace && pod.Labels[v1alpha1.LabelRemediation] != "" {
				// cnimedic's own executor, diagnosis and canary pods; the label elsewhere is anyone's to set
				return drain.MakePodDeleteStatusSkip()
			}
			return drain.MakePodDeleteStatusOkay()
		}},
		Out:    io.Discard,
		ErrOut: io.Discard,
	}
}

// blockingBudget names the PodDisruptionBudget that refused an eviction.
func (r *Reconciler) blockingBudget(ctx context.Context, pod *corev1.Pod) string {
	pdbs := &policyv1.PodDisruptionBudgetList{}
	if err := r.APIReader.List(ctx, pdbs, client.InNamespace(pod.Namespace)); err == nil {
		for _, pdb := range pdbs.Items {
			sel, err := metav1.LabelSelectorAsSelector(pdb.Spec.Selector)
			if err == nil && !sel.Empty() && sel.Matches(labels.Set(pod.Labels)) {
				return fmt.Sprintf("PodDisruptionBudget %s/%s (%d disruptions allowed)", pdb.Namespace, pdb.Name, pdb.Status.DisruptionsAllowed)
			}
		}
	}
	return fmt.Sprintf("a disruption budget of pod %s/%s", pod.Namespace, pod.Name)
}

// cordon marks the node unschedulable and records that cnimedic did it, in one write with an optimistic lock so that
// a person cordoning the node at the same moment is never mistaken for cnimedic. A node someone else cordoned is
// left as it is, and cnimedic will not uncordon it.
func (r *Reconciler) cordon(ctx context.Context, s *scope) error {
	node := s.node
	owner := node.Annotations[v1alpha1.AnnotationCordonedBy]
	switch {
	case owner == s.nr.Name:
		if !s.nr.Status.Cordoned { // a crash between the node write and the status write
			s.nr.Status.Cordoned = true
		}
		return nil
	case node.Spec.Unschedulable:
		if s.nr.Status.Drain.Message == "" {
			s.event(normal, ReasonAlreadyCordoned, actionCordon, fmt.Sprintf("node %s was already cordoned by someone else: it stays cordoned after the repair", node.Name))
			s.nr.Status.Drain.Message = "the node was already cordoned by someone else"
		}
		return nil
	}
	before := node.DeepCopy()
	node.Spec.Unschedulable = true
	if node.Annotations == nil {
		node.Annotations = map[string]string{}
	}
	node.Annotations[v1alpha1.AnnotationCordonedBy] = s.nr.Name
	if err := r.Client.Patch(ctx, node, client.MergeFromWithOptions(before, client.MergeFromWithOptimisticLock{})); err != nil {
		return fmt.Errorf("patching node %s: %w", node.Name, err)
	}
	s.nr.Status.Cordoned = true
	s.event(normal, ReasonCordoned, actionCordon, fmt.Sprintf("cordoned node %s", node.Name))
	s.nodeEvent(normal, ReasonCordoned, actionCordon, "cordoned by cnimedic for a repair")
	return nil
}

// release gives the node back. It gives back the node's maintenance lease, removes cnimedic's cordon mark and,
// when uncordon is set, uncordons the node — only if cnimedic cordoned it. It is safe to call any number of times.
func (r *Reconciler) release(ctx context.Context, s *scope, uncordon bool) error {
	if err := r.giveBackLease(ctx, s); err != nil {
		return fmt.Errorf("releasing node %s for %s: %w", s.nr.Spec.NodeName, s.nr.Name, err)
	}
	node := s.node
	if node == nil || node.Annotations[v1alpha1.AnnotationCordonedBy] != s.nr.Name {
		s.nr.Status.Cordoned = false
		return nil
	}
	before := node.DeepCopy()
	delete(node.Annotations, v1alpha1.AnnotationCordonedBy)
	if uncordon {
		node.Spec.Unschedulable = false
	}
	if err := r.Client.Patch(ctx, node, client.MergeFromWithOptions(before, client.MergeFromWithOptimisticLock{})); err != nil {
		return fmt.Errorf("patching node %s: %w", node.Name, err)
	}
	s.nr.Status.Cordoned = false
	if uncordon {
		s.event(normal, ReasonUncordoned, actionUncordon, fmt.Sprintf("uncordoned node %s", node.Name))
		s.nodeEvent(normal, ReasonUncordoned, actionUncordon, "uncordoned by cnimedic")
	} else {
		s.nodeEvent(warning, ReasonLeftCordoned, actionUncordon, "cnimedic no longer holds this node but left it cordoned: look at the NodeRemediation before uncordoning it")
	}
	return nil
}

func unique(in []string) []string {
	sort.Strings(in)
	out := in[:0]
	for i, v := range in {
		if i == 0 || v != in[i-1] {
			out = append(out, v)
		}
	}
	return out
}

func firstN(in []string, n int) []string {
	if len(in) <= n {
		return in
	}
	return append(in[:n:n], fmt.Sprintf("and %d more", len(in)-n))
}
