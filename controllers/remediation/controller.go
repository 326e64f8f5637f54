// Package remediation is the workflow controller: it takes a NodeRemediation from Detected to an end, following the
// phases and safety rules of the design:
//
//	Detected → Diagnosing → AwaitingApproval → Approved → Draining → Repairing → Verifying → Succeeded
//	                                                                        Verifying → RollingBack → RolledBack
//	ends: Failed, RolledBack, Rejected, Escalated, NotConfirmed
//
// Each phase is a function of the scope (the remediation, its policy, its node, the time); the status is written
// once per reconcile by a deferred patch with an optimistic lock, so two reconciles working from a stale cache can
// never both move one remediation forward. Admission into the phases that hold a node (Draining, Repairing,
// Verifying) is the one place where remediations compete; it counts from a live read of the API server under a
// lock and writes its decision before releasing the lock (admission.go).
package remediation

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
	"github.com/cnimedic/cnimedic/internal/events"
	"github.com/cnimedic/cnimedic/internal/nodelease"
	"github.com/cnimedic/cnimedic/internal/policy"
)

// FinalizerReleaseNode keeps a NodeRemediation that holds a node until the node is released: a remediation deleted
// while it holds a node must not leave the node cordoned by cnimedic with nothing to explain it.
const FinalizerReleaseNode = "cnimedic.io/release-node"

// historyLimit is how many phase transitions a NodeRemediation keeps.
const historyLimit = 50

// moveOn is the result of a reconcile that moved the remediation into a phase with work of its own: the next phase
// runs as soon as the status is written. conflictRetry is how soon a reconcile whose write lost a race starts again
// from what the API server has.
var (
	moveOn        = reconcile.Result{RequeueAfter: time.Millisecond}
	conflictRetry = 100 * time.Millisecond
)

// Config is the manager-wide configuration of the workflow.
type Config struct {
	// Namespace is where executor and canary pods run.
	Namespace string
	// ExecutorImage and CanaryImage are used unless the policy names its own.
	ExecutorImage string
	// AllowedExecutorImages are the other executor images a policy may name; any other image runs nothing.
	AllowedExecutorImages []string
	// MaxDiagnoses is how many diagnosis pods may run at once in the cluster (5 when 0).
	MaxDiagnoses int
	// DiagnosisInterval is the least time between two diagnoses of one node (30s when 0; negative: none).
	DiagnosisInterval time.Duration
	CanaryImage       string
	// ExecutorServiceAccount is the executor pods' ServiceAccount (bound to nothing; its token is never mounted).
	ExecutorServiceAccount string
	// PollInterval is how often a phase that waits on the cluster (drain, executor, canary) looks again when no
	// watch event wakes it sooner.
	PollInterval time.Duration
}

// Reconciler runs the workflow.
type Reconciler struct {
	// Client reads from the manager's cache and writes to the API server.
	Client client.Client
	// APIReader reads from the API server directly; admission counts with it so a stale cache cannot admit twice.
	APIReader client.Reader
	// Kube is the typed clientset kubectl's drain package needs.
	Kube   kubernetes.Interface
	Clock  clock.PassiveClock
	Events events.Recorder
	Config Config
	// Leases takes the nodes' maintenance leases (internal/nodelease); nil takes none and reads none.
	Leases *nodelease.Manager

	// admitMu serialises admissions in this process (see admission.go).
	admitMu sync.Mutex
	// diagnoseMu serialises the start of diagnoses, so that their cluster-wide cap holds (diagnosing.go).
	diagnoseMu sync.Mutex
}

// scope is everything one reconcile works with.
type scope struct {
	nr *v1alpha1.NodeRemediation
	// before is the remediation as last written; the deferred status patch is computed against it.
	before *v1alpha1.NodeRemediation
	policy *v1alpha1.RemediationPolicy // the policy, or one with DefaultSpec when it was deleted
	// policyMissing is set when the named policy does not exist.
	policyMissing bool
	node          *corev1.Node // nil when the node is gone
	now           time.Time
	events        []events.Event
	// afterPatch runs once the status was written (metrics that must not count a failed write).
	afterPatch []func()
}

// Least privilege: nodes and remediations are only ever patched; pods anywhere are only read and evicted (drain,
// and the CNI agent pod's restart, go through the eviction API). The executor, diagnosis and canary pods are created
// and deleted only in the manager's own namespace, by the Role in config/rbac/pods_role.yaml (markers would make
// controller-gen write it into role.yaml, which the Helm chart reads as one ClusterRole).
//
// +kubebuilder:rbac:groups=cnimedic.io,resources=noderemediations,verbs=get;list;watch;patch
// +kubebuilder:rbac:groups=cnimedic.io,resources=noderemediations/status,verbs=get;patch
// +kubebuilder:rbac:groups=cnimedic.io,resources=noderemediations/finalizers,verbs=update
// +kubebuilder:rbac:groups=cnimedic.io,resources=remediationpolicies,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=nodes,verbs=get;list;watch;patch
// +kubebuilder:rbac:groups="",resources=pods,verbs=get;list
// +kubebuilder:rbac:groups="",resources=pods/eviction,verbs=create
// +kubebuilder:rbac:groups=apps,resources=daemonsets;replicasets;statefulsets,verbs=get;list
// +kubebuilder:rbac:groups=policy,resources=poddisruptionbudgets,verbs=get;list;watch
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch
// +kubebuilder:rbac:groups="",resources=events,verbs=get;list;watch

// Reconcile moves one NodeRemediation forward.
func (r *Reconciler) Reconcile(ctx context.Context, req reconcile.Request) (res reconcile.Result, retErr error) {
	nr := &v1alpha1.NodeRemediation{}
	if err := r.Client.Get(ctx, req.NamespacedName, nr); err != nil {
		if apierrors.IsNotFound(err) {
			return reconcile.Result{}, nil
		}
		return reconcile.Result{}, fmt.Errorf("getting remediation %s: %w", req.Name, err)
	}
	ctx = log.IntoContext(ctx, log.FromContext(ctx).WithValues("remediation", nr.Name, "node", nr.Spec.NodeName, "signature", nr.Spec.Signature))

	s, err := r.newScope(ctx, nr)
	if err != nil {
		return reconcile.Result{}, fmt.Errorf("reading what remediation %s acts on: %w", nr.Name, err)
	}
	defer func() {
		if err := r.patchStatus(ctx, s); err != nil {
			if apierrors.IsConflict(err) {
				// Someone else moved it (or our cache was stale): start again from what the API server has.
				res, retErr = reconcile.Result{RequeueAfter: conflictRetry}, nil
				return
			}
			retErr = errors.Join(retErr, err)
		}
	}()

	if !nr.DeletionTimestamp.IsZero() {
		return r.reconcileDelete(ctx, s)
	}
	return r.reconcilePhase(ctx, s)
}

func (r *Reconciler) newScope(ctx context.Context, nr *v1alpha1.NodeRemediation) (*scope, error) {
	s := &scope{nr: nr, before: nr.DeepCopy(), now: r.Clock.Now()}
	p := &v1alpha1.RemediationPolicy{}
	switch err := r.Client.Get(ctx, types.NamespacedName{Name: nr.Spec.PolicyName}, p); {
	case apierrors.IsNotFound(err):
		s.policyMissing = true
		p = &v1alpha1.RemediationPolicy{ObjectMeta: metav1.ObjectMeta{Name: nr.Spec.PolicyName}, Spec: policy.DefaultSpec()}
	case err != nil:
		return nil, fmt.Errorf("getting policy %s: %w", nr.Spec.PolicyName, err)
	}
	s.policy = p
	node := &corev1.Node{}
	switch err := r.Client.Get(ctx, types.NamespacedName{Name: nr.Spec.NodeName}, node); {
	case apierrors.IsNotFound(err):
	case err != nil:
		return nil, fmt.Errorf("getting node %s: %w", nr.Spec.NodeName, err)
	default:
		s.node = node
	}
	return s, nil
}

// reconcilePhase runs the current phase's function.
func (r *Reconciler) reconcilePhase(ctx context.Context, s *scope) (reconcile.Result, error) {
	phase := s.nr.Status.Phase
	if phase.IsTerminal() {
		return r.reconcileEnd(ctx, s)
	}
	if s.node == nil && phase != "" {
		return r.nodeGone(ctx, s)
	}
	if phase.HoldsNode() && !s.policy.Spec.DryRun {
		if err := r.renewLease(ctx, s); err != nil {
			return reconcile.Result{}, fmt.Errorf("keeping node %s's maintenance lease for %s: %w", s.nr.Spec.NodeName, s.nr.Name, err)
		}
	}
	switch phase {
	case "":
		return r.reconcileNew(ctx, s)
	case v1alpha1.PhaseDetected:
		return r.reconcileDetected(ctx, s)
	case v1alpha1.PhaseDiagnosing:
		return r.reconcileDiagnosing(ctx, s)
	case v1alpha1.PhaseAwaitingApproval:
		return r.reconcileAwaitingApproval(ctx, s)
	case v1alpha1.PhaseApproved:
		return r.reconcileApproved(ctx, s)
	case v1alpha1.PhaseDraining:
		return r.reconcileDraining(ctx, s)
	case v1alpha1.PhaseRepairing:
		return r.reconcileRepairing(ctx, s)
	case v1alpha1.PhaseVerifying:
		return r.reconcileVerifying(ctx, s)
	case v1alpha1.PhaseRollingBack:
		return r.followRollback(ctx, s)
	}
	return reconcile.Result{}, fmt.Errorf("unknown phase %q", phase)
}

// patchStatus writes the status if it changed, with an optimistic lock, then publishes the events the reconcile
// produced. Events of a reconcile whose write failed are dropped: the retry produces them again.
func (r *Reconciler) patchStatus(ctx context.Context, s *scope) error {
	if !equality.Semantic.DeepEqual(s.before.Status, s.nr.Status) {
		s.nr.Status.ObservedGeneration = s.nr.Generation
		patch := client.MergeFromWithOptions(s.before, client.MergeFromWithOptimisticLock{})
		if err := r.Client.Status().Patch(ctx, s.nr, patch); err != nil {
			if !apierrors.IsNotFound(err) {
				return fmt.Errorf("patching the status of remediation %s: %w", s.nr.Name, err)
			}
			if s.nr.DeletionTimestamp.IsZero() {
				return nil
			}
			// Gone because this reconcile let its finalizer go: what it did to the node (released it, left it
			// cordoned) still happened, and its events say so.
		}
	}
	r.Events.Publish(s.events...)
	for _, f := range s.afterPatch {
		f()
	}
	// What is written is the new base: a second call (the deferred one after an early write) is a no-op.
	s.before, s.events, s.afterPatch = s.nr.DeepCopy(), nil, nil
	return nil
}

// transition moves the remediation to a phase, recording it in the history, the status and an event.
func (s *scope) transition(to v1alpha1.Phase, reason, msg string) {
	st := &s.nr.Status
	from := st.Phase
	if n := len(st.History); n > 0 && from != "" {
		spent := s.now.Sub(st.History[n-1].Time.Time)
		s.afterPatch = append(s.afterPatch, func() { phaseDuration.WithLabelValues(string(from)).Observe(spent.Seconds()) })
	}
	st.Phase, st.Reason, st.Message = to, reason, msg
	st.History = append(st.History, v1alpha1.PhaseTransition{Phase: to, Time: metav1.NewTime(s.now), Reason: reason, Message: msg})
	if len(st.History) > historyLimit {
		st.History = st.History[len(st.History)-historyLimit:]
	}
	typ := normal
	if to == v1alpha1.PhaseFailed || to == v1alpha1.PhaseRolledBack || to == v1alpha1.PhaseEscalated || to == v1alpha1.PhaseRejected || to == v1alpha1.PhaseNotConfirmed {
		typ = warning
	}
	s.event(typ, reason, actionFor(to), msg)
	if to.IsTerminal() {
		st.CompletionTime = &metav1.Time{Time: s.now}
		nr := s.nr
		s.afterPatch = append(s.afterPatch, func() { recordEnd(nr) })
		s.nodeEvent(typ, reason, actionFinish, fmt.Sprintf("cnimedic %s: %s", to, msg))
	}
}

func actionFor(p v1alpha1.Phase) string {
	switch p {
	case v1alpha1.PhaseDetected:
		return actionDetect
	case v1alpha1.PhaseDiagnosing, v1alpha1.PhaseNotConfirmed:
		return actionDiagnose
	case v1alpha1.PhaseAwaitingApproval, v1alpha1.PhaseApproved, v1alpha1.PhaseRejected:
		return actionApprove
	case v1alpha1.PhaseDraining:
		return actionDrain
	case v1alpha1.PhaseRepairing:
		return actionRepair
	case v1alpha1.PhaseVerifying, v1alpha1.PhaseRollingBack:
		return actionVerify
	case v1alpha1.PhaseEscalated:
		return actionEscalate
	}
	return actionFinish
}

// setCondition sets a condition on the remediation, keeping the transition time when the status is unchanged.
func (s *scope) setCondition(typ string, status metav1.ConditionStatus, reason, msg string) {
	c := metav1.Condition{Type: typ, Status: status, Reason: reason, Message: msg, ObservedGeneration: s.nr.Generation,
		LastTransitionTime: metav1.NewTime(s.now)}
	for i, old := range s.nr.Status.Conditions {
		if old.Type == typ {
			if old.Status == status {
				c.LastTransitionTime = old.LastTransitionTime
			}
			s.nr.Status.Conditions[i] = c
			return
		}
	}
	s.nr.Status.Conditions = append(s.nr.Status.Conditions, c)
}

// patchMeta writes a change to the remediation's metadata or spec with an optimistic lock, keeping the status
// changes this reconcile made in memory for the deferred status patch.
func (r *Reconciler) patchMeta(ctx context.Context, s *scope, mutate func(nr *v1alpha1.NodeRemediation)) error {
	base := s.nr.DeepCopy()
	mutate(s.nr)
	if equality.Semantic.DeepEqual(base.ObjectMeta, s.nr.ObjectMeta) && equality.Semantic.DeepEqual(base.Spec, s.nr.Spec) {
		return nil
	}
	status := s.nr.Status.DeepCopy()
	if err := r.Client.Patch(ctx, s.nr, client.MergeFromWithOptions(base, client.MergeFromWithOptimisticLock{})); err != nil {
		return fmt.Errorf("patching remediation %s: %w", s.nr.Name, err)
	}
	s.nr.Status = *status
	// The write above is ours and was made on the version the status patch is based on: move the base along.
	s.before.ResourceVersion = s.nr.ResourceVersion
	return nil
}

// ensureFinalizer adds the release-node finalizer before the remediation may touch the node.
func (r *Reconciler) ensureFinalizer(ctx context.Context, s *scope) error {
	return r.patchMeta(ctx, s, func(nr *v1alpha1.NodeRemediation) { controllerutil.AddFinalizer(nr, FinalizerReleaseNode) })
}

// removeFinalizer lets the remediation go once it no longer holds the node.
func (r *Reconciler) removeFinalizer(ctx context.Context, s *scope) error {
	err := r.patchMeta(ctx, s, func(nr *v1alpha1.NodeRemediation) { controllerutil.RemoveFinalizer(nr, FinalizerReleaseNode) })
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("removing the finalizer: %w", err)
	}
	return nil
}

// requeueAt returns a result that wakes the reconcile at t (or after the poll interval, whichever is sooner).
func (r *Reconciler) requeueAt(s *scope, t time.Time) reconcile.Result {
	d := t.Sub(s.now)
	if d <= 0 {
		d = time.Second
	}
	return reconcile.Result{RequeueAfter: min(d, r.poll())}
}

func (r *Reconciler) poll() time.Duration {
	if r.Config.PollInterval > 0 {
		return r.Config.PollInterval
	}
	return 5 * time.Second
}

// SetupWithManager registers the controller. Besides its own objects it watches the pods it creates (executor and
// canary, by label) and wakes the remediations waiting for a slot when another one releases its node.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager) error {
	inFlightReader.Store(mgr.GetClient())
	byRemediationLabel := handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []reconcile.Request {
		if name := o.GetLabels()[v1alpha1.LabelRemediation]; name != "" {
			return []reconcile.Request{{NamespacedName: types.NamespacedName{Name: name}}}
		}
		return nil
	})
	return ctrl.NewControllerManagedBy(mgr).
		Named("remediation").
		// Remediations of different nodes proceed in parallel (drains wait on evictions); admission stays exact
		// because it is serialised and counted live (admission.go).
		WithOptions(controller.Options{MaxConcurrentReconciles: 4}).
		For(&v1alpha1.NodeRemediation{}).
		Watches(&corev1.Pod{}, byRemediationLabel, builder.WithPredicates(predicate.NewPredicateFuncs(func(o client.Object) bool {
			return o.GetNamespace() == r.Config.Namespace && o.GetLabels()[v1alpha1.LabelRemediation] != ""
		}))).
		Watches(&v1alpha1.NodeRemediation{}, handler.EnqueueRequestsFromMapFunc(r.waitingForSlot), builder.WithPredicates(releasedNode())).
		Complete(r)
}
