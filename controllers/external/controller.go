// Package external makes cnimedic an external remediator for medik8s' node-healthcheck-operator (NHC) and Cluster
// API's MachineHealthCheck (MHC): a CNIRemediation either creates becomes a NodeRemediation request for its node,
// and its conditions report the NodeRemediation's progress back in the form both read.
//
// A CNIRemediation is a request, like a NodeRemediation a person creates: it carries no evidence, so the workflow
// records it as by hand (status.byHand), diagnoses the node first and never lets an Automatic policy approve it: an
// approver does (docs/security.md, rule 4). A health checker sees a node NotReady; cnimedic still asks the node.
package external

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
	"github.com/cnimedic/cnimedic/internal/policy"
)

// FinalizerEndRequest keeps a CNIRemediation until the NodeRemediation it opened is ended: NHC and MHC delete the
// request when the node is healthy again (or they give up), and an open repair must not outlive its request.
const FinalizerEndRequest = "cnimedic.io/end-request"

// Reasons of the conditions a CNIRemediation reports.
const (
	ReasonRemediationOpened = "RemediationOpened"
	ReasonRemediationEnded  = "RemediationEnded"
	ReasonNoPolicy          = "NoPolicyCoversNode"
	ReasonNodeNotFound      = "NodeNotFound"
	ReasonNodeUnknown       = "NodeUnknown"
	ReasonRemediationGone   = "RemediationDeleted"
	ReasonNeverDeletesNodes = "NodeIsRepairedInPlace"
	ReasonTimedOut          = "TimedOut"
)

// machineGroup is Cluster API's group: its Machine is read without its Go types (cnimedic does not link Cluster API).
var machineGroup = "cluster.x-k8s.io"

// Reconciler turns CNIRemediations into NodeRemediations and reports their progress back.
type Reconciler struct {
	Client client.Client
	// APIReader reads Machines uncached: Cluster API may not be installed, and only the few owners are read.
	APIReader client.Reader
}

// Least privilege: the requests are read, their finalizer and status written; NodeRemediations are created (and
// deleted only when their own request goes while they are open); Machines are only read, one at a time.
//
// +kubebuilder:rbac:groups=cnimedic.io,resources=cniremediations,verbs=get;list;watch;patch
// +kubebuilder:rbac:groups=cnimedic.io,resources=cniremediations/status,verbs=get;patch
// +kubebuilder:rbac:groups=cnimedic.io,resources=cniremediations/finalizers,verbs=update
// +kubebuilder:rbac:groups=cnimedic.io,resources=noderemediations,verbs=get;list;watch;create;delete
// +kubebuilder:rbac:groups=cnimedic.io,resources=remediationpolicies,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=nodes,verbs=get;list;watch
// +kubebuilder:rbac:groups=cluster.x-k8s.io,resources=machines,verbs=get

// Reconcile moves one CNIRemediation forward.
func (r *Reconciler) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	cr := &v1alpha1.CNIRemediation{}
	if err := r.Client.Get(ctx, req.NamespacedName, cr); err != nil {
		if apierrors.IsNotFound(err) {
			return reconcile.Result{}, nil
		}
		return reconcile.Result{}, fmt.Errorf("getting CNIRemediation %s: %w", req, err)
	}
	if !cr.DeletionTimestamp.IsZero() {
		return reconcile.Result{}, r.end(ctx, cr)
	}
	if !controllerutil.ContainsFinalizer(cr, FinalizerEndRequest) {
		before := cr.DeepCopy()
		controllerutil.AddFinalizer(cr, FinalizerEndRequest)
		if err := r.Client.Patch(ctx, cr, client.MergeFromWithOptions(before, client.MergeFromWithOptimisticLock{})); err != nil {
			return reconcile.Result{}, fmt.Errorf("adding the finalizer to CNIRemediation %s: %w", req, err)
		}
	}
	before := cr.DeepCopy()
	if at, timedOut := cr.Annotations[v1alpha1.AnnotationNHCTimedOut]; timedOut {
		// NHC gave up on this remediator (and may try its next one): the repair it asked for stops here.
		if !isEnded(cr) {
			if err := r.endOpen(ctx, cr); err != nil {
				return reconcile.Result{}, fmt.Errorf("stopping CNIRemediation %s after NHC's timeout: %w", req, err)
			}
			fail(cr, ReasonTimedOut, fmt.Sprintf("NHC timed the remediation out at %s (annotation %s): cnimedic ended NodeRemediation %s if it was still open",
				at, v1alpha1.AnnotationNHCTimedOut, cr.Status.RemediationName))
		}
	} else if err := r.follow(ctx, cr); err != nil {
		return reconcile.Result{}, fmt.Errorf("following CNIRemediation %s: %w", req, err)
	}
	setCondition(cr, v1alpha1.CNIRemediationPermanentNodeDeletionExpected, metav1.ConditionFalse, ReasonNeverDeletesNodes,
		"cnimedic repairs the node in place and never deletes it")
	if equality.Semantic.DeepEqual(before.Status, cr.Status) {
		return reconcile.Result{}, nil
	}
	cr.Status.ObservedGeneration = cr.Generation
	if err := r.Client.Status().Patch(ctx, cr, client.MergeFromWithOptions(before, client.MergeFromWithOptimisticLock{})); err != nil {
		return reconcile.Result{}, fmt.Errorf("patching the status of CNIRemediation %s: %w", req, err)
	}
	return reconcile.Result{}, nil
}

// follow opens the request's NodeRemediation if it has none, and reports its phase.
func (r *Reconciler) follow(ctx context.Context, cr *v1alpha1.CNIRemediation) error {
	st := &cr.Status
	if st.RemediationName == "" {
		if err := r.open(ctx, cr); err != nil {
			return fmt.Errorf("opening a NodeRemediation for CNIRemediation %s/%s: %w", cr.Namespace, cr.Name, err)
		}
		if st.RemediationName == "" {
			return nil
		}
	}
	nr := &v1alpha1.NodeRemediation{}
	switch err := r.Client.Get(ctx, types.NamespacedName{Name: st.RemediationName}, nr); {
	case apierrors.IsNotFound(err):
		if isEnded(cr) {
			return nil
		}
		fail(cr, ReasonRemediationGone, fmt.Sprintf("NodeRemediation %s was deleted before it ended", st.RemediationName))
		return nil
	case err != nil:
		return fmt.Errorf("getting NodeRemediation %s: %w", st.RemediationName, err)
	}
	st.Phase = nr.Status.Phase
	phase := nr.Status.Phase
	if phase == "" {
		phase = "new"
	}
	if !nr.Status.Phase.IsTerminal() {
		setCondition(cr, v1alpha1.CNIRemediationProcessing, metav1.ConditionTrue, ReasonRemediationOpened,
			fmt.Sprintf("NodeRemediation %s of node %s is %s", nr.Name, nr.Spec.NodeName, phase))
		meta.RemoveStatusCondition(&st.Conditions, v1alpha1.CNIRemediationSucceeded)
		return nil
	}
	msg := fmt.Sprintf("NodeRemediation %s of node %s ended %s (%s): %s", nr.Name, nr.Spec.NodeName, nr.Status.Phase, nr.Status.Reason, nr.Status.Message)
	setCondition(cr, v1alpha1.CNIRemediationProcessing, metav1.ConditionFalse, ReasonRemediationEnded, msg)
	succeeded := metav1.ConditionFalse
	if nr.Status.Phase == v1alpha1.PhaseSucceeded {
		succeeded = metav1.ConditionTrue
	}
	setCondition(cr, v1alpha1.CNIRemediationSucceeded, succeeded, string(nr.Status.Phase), msg)
	return nil
}

// open finds the node and the policy, and opens the NodeRemediation (or follows the node's open one). A request it
// cannot serve ends with Succeeded False, so that NHC may try its next remediator.
func (r *Reconciler) open(ctx context.Context, cr *v1alpha1.CNIRemediation) error {
	if isEnded(cr) {
		return nil
	}
	nodeName, why, err := r.nodeOf(ctx, cr)
	if err != nil {
		return fmt.Errorf("finding the node of CNIRemediation %s/%s: %w", cr.Namespace, cr.Name, err)
	}
	if nodeName == "" {
		fail(cr, ReasonNodeUnknown, why)
		return nil
	}
	cr.Status.NodeName = nodeName
	node := &corev1.Node{}
	switch err := r.Client.Get(ctx, types.NamespacedName{Name: nodeName}, node); {
	case apierrors.IsNotFound(err):
		fail(cr, ReasonNodeNotFound, fmt.Sprintf("node %s does not exist", nodeName))
		return nil
	case err != nil:
		return fmt.Errorf("getting node %s: %w", nodeName, err)
	}
	p, err := r.policyFor(ctx, node)
	if err != nil {
		return fmt.Errorf("finding the policy covering node %s: %w", nodeName, err)
	}
	if p == nil {
		fail(cr, ReasonNoPolicy, fmt.Sprintf("no RemediationPolicy covers node %s: cnimedic does nothing to it", nodeName))
		return nil
	}
	cr.Status.PolicyName = p.Name

	// One open remediation per node: a request for a node cnimedic is already working on follows that remediation
	// (and never ends it: it is not the request's).
	open := &v1alpha1.NodeRemediationList{}
	if err := r.Client.List(ctx, open, client.MatchingLabels{v1alpha1.LabelNode: nodeName}); err != nil {
		return fmt.Errorf("listing the remediations of node %s: %w", nodeName, err)
	}
	for i := range open.Items {
		if !open.Items[i].Status.Phase.IsTerminal() {
			cr.Status.RemediationName = open.Items[i].Name
			return nil
		}
	}
	sig := cr.Spec.Signature
	if sig == "" {
		sig = string(v1alpha1.SignatureCNIUnclassified)
	}
	nr := &v1alpha1.NodeRemediation{
		ObjectMeta: metav1.ObjectMeta{
			Name:        remediationName(nodeName, cr.UID),
			Annotations: map[string]string{v1alpha1.AnnotationExternalRequest: requestRef(cr)},
		},
		Spec: v1alpha1.NodeRemediationSpec{NodeName: nodeName, PolicyName: p.Name, Signature: sig},
	}
	if err := r.Client.Create(ctx, nr); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("opening a NodeRemediation for node %s: %w", nodeName, err)
	}
	cr.Status.RemediationName = nr.Name
	return nil
}

// nodeOf names the request's node: an owning Machine's status.nodeRef (Cluster API), else NHC's node-name
// annotation, else the request's name (NHC names it after the node).
func (r *Reconciler) nodeOf(ctx context.Context, cr *v1alpha1.CNIRemediation) (string, string, error) {
	for _, ref := range cr.OwnerReferences {
		gv, err := schema.ParseGroupVersion(ref.APIVersion)
		if err != nil || gv.Group != machineGroup || ref.Kind != "Machine" {
			continue
		}
		m := &unstructured.Unstructured{}
		m.SetGroupVersionKind(gv.WithKind("Machine"))
		switch err := r.APIReader.Get(ctx, types.NamespacedName{Namespace: cr.Namespace, Name: ref.Name}, m); {
		case apierrors.IsNotFound(err) || meta.IsNoMatchError(err):
			return "", fmt.Sprintf("its owner Machine %s/%s does not exist", cr.Namespace, ref.Name), nil
		case err != nil:
			return "", "", fmt.Errorf("getting the owner Machine %s/%s: %w", cr.Namespace, ref.Name, err)
		}
		if m.GetUID() != ref.UID {
			return "", fmt.Sprintf("its owner Machine %s/%s is another object than the one that owns it (uid %s, not %s)", cr.Namespace, ref.Name, m.GetUID(), ref.UID), nil
		}
		name, _, _ := unstructured.NestedString(m.Object, "status", "nodeRef", "name")
		if name == "" {
			return "", fmt.Sprintf("its owner Machine %s/%s has no status.nodeRef", cr.Namespace, ref.Name), nil
		}
		return name, "", nil
	}
	if name := cr.Annotations[v1alpha1.AnnotationNHCNodeName]; name != "" {
		return name, "", nil
	}
	return cr.Name, "", nil
}

// policyFor is the policy covering the node: the first by name among those that cover it, as for the detection.
func (r *Reconciler) policyFor(ctx context.Context, node *corev1.Node) (*v1alpha1.RemediationPolicy, error) {
	list := &v1alpha1.RemediationPolicyList{}
	if err := r.Client.List(ctx, list); err != nil {
		return nil, fmt.Errorf("listing policies: %w", err)
	}
	sort.Slice(list.Items, func(i, j int) bool { return list.Items[i].Name < list.Items[j].Name })
	for i := range list.Items {
		if sel, err := policy.NewSelector(&list.Items[i]); err == nil && sel.Covers(node) {
			return &list.Items[i], nil
		}
	}
	return nil, nil
}

// end lets a deleted request go: the NodeRemediation it opened is deleted while it is open (the workflow's own
// finalizer releases the node: uncordoned, and an executor already running is waited for); an ended one stays as
// the node's history, and one the request only followed is not the request's to end.
func (r *Reconciler) end(ctx context.Context, cr *v1alpha1.CNIRemediation) error {
	if !controllerutil.ContainsFinalizer(cr, FinalizerEndRequest) {
		return nil
	}
	if err := r.endOpen(ctx, cr); err != nil {
		return fmt.Errorf("ending what deleted CNIRemediation %s/%s opened: %w", cr.Namespace, cr.Name, err)
	}
	before := cr.DeepCopy()
	controllerutil.RemoveFinalizer(cr, FinalizerEndRequest)
	if err := r.Client.Patch(ctx, cr, client.MergeFrom(before)); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("removing the finalizer of CNIRemediation %s/%s: %w", cr.Namespace, cr.Name, err)
	}
	return nil
}

// endOpen deletes the NodeRemediation the request opened if it is still open.
func (r *Reconciler) endOpen(ctx context.Context, cr *v1alpha1.CNIRemediation) error {
	if name := cr.Status.RemediationName; name != "" {
		nr := &v1alpha1.NodeRemediation{}
		err := r.Client.Get(ctx, types.NamespacedName{Name: name}, nr)
		switch {
		case apierrors.IsNotFound(err):
		case err != nil:
			return fmt.Errorf("getting NodeRemediation %s of CNIRemediation %s/%s: %w", name, cr.Namespace, cr.Name, err)
		case nr.Annotations[v1alpha1.AnnotationExternalRequest] == requestRef(cr) && !nr.Status.Phase.IsTerminal() && nr.DeletionTimestamp.IsZero():
			if err := r.Client.Delete(ctx, nr, client.Preconditions{UID: &nr.UID}); err != nil && !apierrors.IsNotFound(err) {
				return fmt.Errorf("deleting NodeRemediation %s of CNIRemediation %s/%s: %w", name, cr.Namespace, cr.Name, err)
			}
		}
	}
	return nil
}

// requestRef is the value of the external-request annotation: namespace, name and uid of the request, so that a
// request recreated under the same name is another request.
func requestRef(cr *v1alpha1.CNIRemediation) string {
	return cr.Namespace + "/" + cr.Name + "/" + string(cr.UID)
}

// remediationName is the NodeRemediation's name: the node's, and a hash of the request's uid, so that a retried
// create opens no second remediation.
func remediationName(node string, uid types.UID) string {
	sum := sha256.Sum256([]byte(uid))
	prefix := strings.TrimRight(node, "-.")
	if len(prefix) > 200 {
		prefix = strings.TrimRight(prefix[:200], "-.")
	}
	return prefix + "-ext-" + hex.EncodeToString(sum[:])[:8]
}

// isEnded reports whether the request already has its Succeeded condition.
func isEnded(cr *v1alpha1.CNIRemediation) bool {
	return meta.FindStatusCondition(cr.Status.Conditions, v1alpha1.CNIRemediationSucceeded) != nil
}

// fail ends a request that opened nothing.
func fail(cr *v1alpha1.CNIRemediation, reason, msg string) {
	setCondition(cr, v1alpha1.CNIRemediationProcessing, metav1.ConditionFalse, reason, msg)
	setCondition(cr, v1alpha1.CNIRemediationSucceeded, metav1.ConditionFalse, reason, msg)
}

func setCondition(cr *v1alpha1.CNIRemediation, typ string, status metav1.ConditionStatus, reason, msg string) {
	meta.SetStatusCondition(&cr.Status.Conditions, metav1.Condition{Type: typ, Status: status, Reason: reason, Message: msg,
		ObservedGeneration: cr.Generation})
}

// SetupWithManager registers the controller: the requests, and the NodeRemediations they opened or follow.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager) error {
	toRequests := handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, o client.Object) []reconcile.Request {
		list := &v1alpha1.CNIRemediationList{}
		if err := r.Client.List(ctx, list); err != nil {
			return nil
		}
		var out []reconcile.Request
		for i := range list.Items {
			if list.Items[i].Status.RemediationName == o.GetName() {
				out = append(out, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&list.Items[i])})
			}
		}
		return out
	})
	return ctrl.NewControllerManagedBy(mgr).
		Named("external").
		For(&v1alpha1.CNIRemediation{}).
		Watches(&v1alpha1.NodeRemediation{}, toRequests).
		Complete(r)
}
