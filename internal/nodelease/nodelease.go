// Package nodelease takes, renews and gives back a node's maintenance lease in the convention the medik8s
// operators share (node-maintenance-operator, node-healthcheck-operator, self-node-remediation): one
// coordination.k8s.io/v1 Lease per node in one namespace (medik8s-leases unless the install says otherwise), named
// "node-" and the node's name in lower case, owned by the Node, whose holderIdentity says which tool holds the node.
// A lease is valid while its renewTime plus leaseDurationSeconds is not in the past (and renewTime not in the
// future); an expired lease may be taken over, counting a transition. Whoever holds a valid lease may take
// disruptive action on the node; everyone else leaves it alone.
package nodelease

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	coordv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// DefaultNamespace is the namespace the medik8s operators keep node leases in.
const DefaultNamespace = "medik8s-leases"

// Holder is the holderIdentity cnimedic writes.
const Holder = "cnimedic"

// AnnotationOwner on a lease cnimedic holds names the NodeRemediation that took it: only that one gives it back, so
// that another remediation of the node ending (a rejected request, an old one reconciled again) never drops the
// lease of the repair in progress.
const AnnotationOwner = "cnimedic.io/remediation"

// ErrNoNamespace says the leases' namespace does not exist: nobody (no medik8s operator, not the install) made it.
var ErrNoNamespace = errors.New("the leases' namespace does not exist")

// Name is the lease name of a node.
func Name(node string) string { return strings.ToLower("node-" + node) }

// HeldError says another tool holds the node's lease.
type HeldError struct {
	Node   string
	Holder string
	// Until is when the lease expires unless its holder renews it.
	Until time.Time
}

func (e *HeldError) Error() string {
	return fmt.Sprintf("node %s's maintenance lease is held by %q until %s", e.Node, e.Holder, e.Until.UTC().Format(time.RFC3339))
}

// IsHeld says whether err is a HeldError and returns it.
func IsHeld(err error) (*HeldError, bool) {
	var h *HeldError
	ok := errors.As(err, &h)
	return h, ok
}

// Manager takes and gives back node leases for one holder.
type Manager struct {
	Client    client.Client
	Namespace string
	Holder    string
	// Duration is how long a lease lasts without a renewal; Acquire renews once less than half of it is left.
	Duration time.Duration
}

// Acquire takes the node's lease for the remediation owner, or renews it when owner has it and less than half its
// duration is left. A valid lease of another holder, or of another remediation, is a HeldError; nothing is written
// then.
func (m Manager) Acquire(ctx context.Context, node *corev1.Node, owner string, now time.Time) error {
	lease := &coordv1.Lease{}
	key := client.ObjectKey{Namespace: m.Namespace, Name: Name(node.Name)}
	err := m.Client.Get(ctx, key, lease)
	if apierrors.IsNotFound(err) {
		return m.create(ctx, node, owner, now)
	}
	if err != nil {
		return fmt.Errorf("reading lease %s/%s: %w", key.Namespace, key.Name, err)
	}
	mine := lease.Spec.HolderIdentity != nil && *lease.Spec.HolderIdentity == m.Holder && lease.Annotations[AnnotationOwner] == owner
	until, valid := expiry(lease, now)
	switch {
	case !mine && valid:
		holder := holderOf(lease)
		if holder == m.Holder {
			holder += " (noderemediation " + lease.Annotations[AnnotationOwner] + ")"
		}
		return &HeldError{Node: node.Name, Holder: holder, Until: until}
	case mine && valid && until.Sub(now) > m.Duration/2:
		return nil // renewed recently enough
	}
	before := lease.DeepCopy()
	at := metav1.NewMicroTime(now)
	if !mine || !valid {
		lease.Spec.AcquireTime = &at
		lease.Spec.LeaseTransitions = ptr.To(ptr.Deref(lease.Spec.LeaseTransitions, 0) + 1)
	}
	lease.Spec.HolderIdentity = ptr.To(m.Holder)
	lease.Spec.LeaseDurationSeconds = ptr.To(int32(m.Duration / time.Second))
	lease.Spec.RenewTime = &at
	lease.OwnerReferences = []metav1.OwnerReference{nodeOwner(node)}
	metav1.SetMetaDataAnnotation(&lease.ObjectMeta, AnnotationOwner, owner)
	// The optimistic lock makes two takers of one expired lease fail but one.
	if err := m.Client.Patch(ctx, lease, client.MergeFromWithOptions(before, client.MergeFromWithOptimisticLock{})); err != nil {
		return fmt.Errorf("taking lease %s/%s: %w", key.Namespace, key.Name, err)
	}
	return nil
}

func (m Manager) create(ctx context.Context, node *corev1.Node, owner string, now time.Time) error {
	at := metav1.NewMicroTime(now)
	lease := &coordv1.Lease{
		ObjectMeta: metav1.ObjectMeta{
			Namespace:       m.Namespace,
			Name:            Name(node.Name),
			OwnerReferences: []metav1.OwnerReference{nodeOwner(node)},
			Annotations:     map[string]string{AnnotationOwner: owner},
		},
		Spec: coordv1.LeaseSpec{
			HolderIdentity:       ptr.To(m.Holder),
			LeaseDurationSeconds: ptr.To(int32(m.Duration / time.Second)),
			AcquireTime:          &at,
			RenewTime:            &at,
			LeaseTransitions:     ptr.To[int32](0),
		},
	}
	if err := m.Client.Create(ctx, lease); err != nil {
		if apierrors.IsNotFound(err) {
			return fmt.Errorf("creating lease %s/%s: %w", m.Namespace, lease.Name, ErrNoNamespace)
		}
		if apierrors.IsAlreadyExists(err) {
			// Someone created it since we looked: read it again on the next try.
			return fmt.Errorf("creating lease %s/%s: another holder created it first: %w", m.Namespace, lease.Name, err)
		}
		return fmt.Errorf("creating lease %s/%s: %w", m.Namespace, lease.Name, err)
	}
	return nil
}

// HeldByOther says whether another holder (or another remediation) has a valid lease on the node, who, and until
// when. It writes nothing.
func (m Manager) HeldByOther(ctx context.Context, node, owner string, now time.Time) (string, time.Time, bool, error) {
	lease := &coordv1.Lease{}
	key := client.ObjectKey{Namespace: m.Namespace, Name: Name(node)}
	if err := m.Client.Get(ctx, key, lease); err != nil {
		if apierrors.IsNotFound(err) {
			return "", time.Time{}, false, nil
		}
		return "", time.Time{}, false, fmt.Errorf("reading lease %s/%s: %w", key.Namespace, key.Name, err)
	}
	until, valid := expiry(lease, now)
	if !valid || (holderOf(lease) == m.Holder && lease.Annotations[AnnotationOwner] == owner) {
		return "", time.Time{}, false, nil
	}
	holder := holderOf(lease)
	if holder == m.Holder {
		holder += " (noderemediation " + lease.Annotations[AnnotationOwner] + ")"
	}
	return holder, until, true, nil
}

// Release gives the node's lease back by deleting it, only when the remediation owner has it. It is safe to call
// any number of times.
func (m Manager) Release(ctx context.Context, node, owner string) error {
	lease := &coordv1.Lease{}
	key := client.ObjectKey{Namespace: m.Namespace, Name: Name(node)}
	if err := m.Client.Get(ctx, key, lease); err != nil {
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("reading lease %s/%s: %w", key.Namespace, key.Name, err)
	}
	if lease.Spec.HolderIdentity == nil || *lease.Spec.HolderIdentity != m.Holder || lease.Annotations[AnnotationOwner] != owner {
		return nil // not this remediation's: never give back what another tool, or another repair, holds
	}
	// Delete only the version we read: a lease taken over since is not ours to delete.
	if err := m.Client.Delete(ctx, lease, client.Preconditions{UID: &lease.UID, ResourceVersion: &lease.ResourceVersion}); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("giving back lease %s/%s: %w", key.Namespace, key.Name, err)
	}
	return nil
}

// expiry is when a lease expires, and whether it is valid now.
func expiry(l *coordv1.Lease, now time.Time) (time.Time, bool) {
	if l.Spec.RenewTime == nil || l.Spec.LeaseDurationSeconds == nil {
		return time.Time{}, false
	}
	renew := l.Spec.RenewTime.Time
	until := renew.Add(time.Duration(*l.Spec.LeaseDurationSeconds) * time.Second)
	return until, !until.Before(now) && !renew.After(now)
}

func holderOf(l *coordv1.Lease) string {
	if l.Spec.HolderIdentity == nil {
		return "unknown"
	}
	return *l.Spec.HolderIdentity
}

func nodeOwner(node *corev1.Node) metav1.OwnerReference {
	return metav1.OwnerReference{APIVersion: "v1", Kind: "Node", Name: node.Name, UID: node.UID}
}
