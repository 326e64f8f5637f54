package nodelease_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"testing"
	"time"

	coordv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/cnimedic/cnimedic/internal/nodelease"
	"github.com/cnimedic/cnimedic/test/testenv"
)

// These tests take leases on a real kube-apiserver (envtest), in the shape the medik8s operators write them.

var k8s client.Client

func TestMain(m *testing.M) {
	env, err := testenv.Start()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	k8s = env.Client
	if err := k8s.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: nodelease.DefaultNamespace}}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	_ = env.Stop()
	os.Exit(code)
}

func newNode(t *testing.T, name string) *corev1.Node {
	t.Helper()
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if err := k8s.Create(context.Background(), n); err != nil {
		t.Fatal(err)
	}
	return n
}

func manager() nodelease.Manager {
	return nodelease.Manager{Client: k8s, Namespace: nodelease.DefaultNamespace, Holder: nodelease.Holder, Duration: 5 * time.Minute}
}

func lease(t *testing.T, node string) *coordv1.Lease {
	t.Helper()
	l := &coordv1.Lease{}
	if err := k8s.Get(context.Background(), client.ObjectKey{Namespace: nodelease.DefaultNamespace, Name: nodelease.Name(node)}, l); err != nil {
		t.Fatal(err)
	}
	return l
}

// otherHolds writes a lease as node-maintenance-operator does (holder "node-maintenance", one hour).
func otherHolds(t *testing.T, node *corev1.Node, renewed time.Time, seconds int32) {
	t.Helper()
	at := metav1.NewMicroTime(renewed)
	l := &coordv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Namespace: nodelease.DefaultNamespace, Name: nodelease.Name(node.Name),
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "v1", Kind: "Node", Name: node.Name, UID: node.UID}}},
		Spec: coordv1.LeaseSpec{HolderIdentity: ptr.To("node-maintenance"), LeaseDurationSeconds: ptr.To(seconds),
			AcquireTime: &at, RenewTime: &at, LeaseTransitions: ptr.To[int32](0)},
	}
	if err := k8s.Create(context.Background(), l); err != nil {
		t.Fatal(err)
	}
}

func TestTheFirstTakerHoldsTheNodesLeaseInTheMedik8sShape(t *testing.T) {
	ctx := context.Background()
	node := newNode(t, "worker-a")
	now := time.Now()
	if err := manager().Acquire(ctx, node, "nr-1", now); err != nil {
		t.Fatal(err)
	}
	l := lease(t, node.Name)
	if l.Name != "node-worker-a" {
		t.Errorf("lease name %q, want node-worker-a (medik8s: kind-name in lower case)", l.Name)
	}
	if got := ptr.Deref(l.Spec.HolderIdentity, ""); got != nodelease.Holder {
		t.Errorf("holder %q, want %q", got, nodelease.Holder)
	}
	if ptr.Deref(l.Spec.LeaseDurationSeconds, 0) != 300 || l.Spec.RenewTime == nil || l.Spec.AcquireTime == nil {
		t.Errorf("lease spec %+v: want 300 s, renew and acquire times", l.Spec)
	}
	if len(l.OwnerReferences) != 1 || l.OwnerReferences[0].Kind != "Node" || l.OwnerReferences[0].UID != node.UID {
		t.Errorf("owner references %+v, want the Node", l.OwnerReferences)
	}
}

func TestALeaseAnotherToolHoldsIsLeftAloneAndNamed(t *testing.T) {
	ctx := context.Background()
	node := newNode(t, "worker-b")
	now := time.Now()
	otherHolds(t, node, now.Add(-time.Minute), 3600)
	before := lease(t, node.Name)
	err := manager().Acquire(ctx, node, "nr-1", now)
	held, ok := nodelease.IsHeld(err)
	if !ok {
		t.Fatalf("Acquire over node-maintenance's valid lease: %v, want a HeldError", err)
	}
	if held.Holder != "node-maintenance" {
		t.Errorf("holder named %q, want node-maintenance", held.Holder)
	}
	if after := lease(t, node.Name); after.ResourceVersion != before.ResourceVersion {
		t.Errorf("another holder's lease was written (resourceVersion %s → %s)", before.ResourceVersion, after.ResourceVersion)
	}
	if err := manager().Release(ctx, node.Name, "nr-1"); err != nil {
		t.Fatal(err)
	}
	if after := lease(t, node.Name); ptr.Deref(after.Spec.HolderIdentity, "") != "node-maintenance" {
		t.Errorf("Release gave back another holder's lease")
	}
}

func TestAnExpiredLeaseIsTakenOverCountingATransition(t *testing.T) {
	ctx := context.Background()
	node := newNode(t, "worker-c")
	now := time.Now()
	otherHolds(t, node, now.Add(-2*time.Hour), 3600)
	if err := manager().Acquire(ctx, node, "nr-1", now); err != nil {
		t.Fatal(err)
	}
	l := lease(t, node.Name)
	if ptr.Deref(l.Spec.HolderIdentity, "") != nodelease.Holder || ptr.Deref(l.Spec.LeaseTransitions, 0) != 1 {
		t.Errorf("after taking over an expired lease: holder %q, transitions %d; want cnimedic, 1",
			ptr.Deref(l.Spec.HolderIdentity, ""), ptr.Deref(l.Spec.LeaseTransitions, 0))
	}
}

func TestTheHolderRenewsOnlyOnceHalfTheLeaseIsGoneAndGivesItBack(t *testing.T) {
	ctx := context.Background()
	node := newNode(t, "worker-d")
	m := manager()
	start := time.Now()
	if err := m.Acquire(ctx, node, "nr-1", start); err != nil {
		t.Fatal(err)
	}
	first := lease(t, node.Name)
	if err := m.Acquire(ctx, node, "nr-1", start.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if l := lease(t, node.Name); l.ResourceVersion != first.ResourceVersion {
		t.Errorf("renewed after one minute of five: want no write until half is gone")
	}
	if err := m.Acquire(ctx, node, "nr-1", start.Add(3*time.Minute)); err != nil {
		t.Fatal(err)
	}
	if l := lease(t, node.Name); !l.Spec.RenewTime.After(first.Spec.RenewTime.Time) {
		t.Errorf("not renewed after three minutes of five")
	}
	if err := m.Release(ctx, node.Name, "nr-1"); err != nil {
		t.Fatal(err)
	}
	err := k8s.Get(ctx, client.ObjectKey{Namespace: nodelease.DefaultNamespace, Name: nodelease.Name(node.Name)}, &coordv1.Lease{})
	if !apierrors.IsNotFound(err) {
		t.Errorf("after Release the lease is still there (%v)", err)
	}
	if err := m.Release(ctx, node.Name, "nr-1"); err != nil {
		t.Errorf("a second Release: %v", err)
	}
}

func TestOnlyTheRemediationThatTookTheLeaseGivesItBack(t *testing.T) {
	ctx := context.Background()
	node := newNode(t, "worker-e")
	m := manager()
	now := time.Now()
	if err := m.Acquire(ctx, node, "nr-1", now); err != nil {
		t.Fatal(err)
	}
	if err := m.Release(ctx, node.Name, "nr-2"); err != nil {
		t.Fatal(err)
	}
	if l := lease(t, node.Name); l.Annotations[nodelease.AnnotationOwner] != "nr-1" {
		t.Fatalf("another remediation gave the lease back: %+v", l.ObjectMeta)
	}
	_, ok := nodelease.IsHeld(m.Acquire(ctx, node, "nr-2", now))
	if !ok {
		t.Fatal("another remediation of the node took the valid lease nr-1 holds")
	}
	if holder, _, held, err := m.HeldByOther(ctx, node.Name, "nr-2", now); err != nil || !held || holder != "cnimedic (noderemediation nr-1)" {
		t.Fatalf("HeldByOther for nr-2: %q %v %v", holder, held, err)
	}
}

func TestWithoutTheLeasesNamespaceTheErrorSaysSo(t *testing.T) {
	ctx := context.Background()
	node := newNode(t, "worker-f")
	m := nodelease.Manager{Client: k8s, Namespace: "no-such-namespace", Holder: nodelease.Holder, Duration: time.Minute}
	if err := m.Acquire(ctx, node, "nr-1", time.Now()); !errors.Is(err, nodelease.ErrNoNamespace) {
		t.Fatalf("Acquire in a namespace nobody made: %v, want ErrNoNamespace", err)
	}
}
