//go:build bench

package bench

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Parallel runs f(0..n-1) on workers goroutines and returns the first error (and stops handing out work after it).
func Parallel(ctx context.Context, n, workers int, f func(ctx context.Context, i int) error) error {
	var next atomic.Int64
	var once sync.Once
	var first error
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	for range min(workers, n) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				if err := f(ctx, i); err != nil {
					once.Do(func() { first = err; cancel() })
					return
				}
			}
		}()
	}
	wg.Wait()
	if first == nil && ctx.Err() != nil {
		// The parent's cancellation, not ours.
		return nil
	}
	return first
}

// retry retries f on the API server's transient refusals (too many requests, timeouts) with a short backoff.
func retry(ctx context.Context, f func() error) error {
	var err error
	for attempt := 0; attempt < 20; attempt++ {
		err = f()
		if err == nil || !(apierrors.IsTooManyRequests(err) || apierrors.IsServerTimeout(err) || apierrors.IsTimeout(err) ||
			apierrors.IsInternalError(err) || apierrors.IsServiceUnavailable(err)) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Duration(50*(attempt+1)) * time.Millisecond):
		}
	}
	return err
}

// Workers is how many requests the load generators keep in flight.
const Workers = 48

// NodeName is the name of the i-th node of a set.
func NodeName(set string, i int) string { return fmt.Sprintf("%s-%05d", set, i) }

// CreateNodes creates nodes from..to-1 of the set, Ready for an hour, with the labels.
func (cp *ControlPlane) CreateNodes(ctx context.Context, set string, from, to int, labels map[string]string) error {
	readySince := time.Now().Add(-time.Hour)
	return Parallel(ctx, to-from, Workers, func(ctx context.Context, k int) error {
		i := from + k
		n := NewNode(NodeName(set, i), i, labels, readySince)
		status := n.Status
		return retry(ctx, func() error {
			created, err := cp.Kube.CoreV1().Nodes().Create(ctx, n, metav1.CreateOptions{})
			if apierrors.IsAlreadyExists(err) {
				return nil
			}
			if err != nil {
				return fmt.Errorf("creating node %s: %w", n.Name, err)
			}
			if len(created.Status.Images) == len(status.Images) && len(created.Status.Conditions) == len(status.Conditions) {
				return nil
			}
			created.Status = status
			_, err = cp.Kube.CoreV1().Nodes().UpdateStatus(ctx, created, metav1.UpdateOptions{})
			return err
		})
	})
}

// PodNamespaces is how many namespaces the pods are spread over.
const PodNamespaces = 50

// PodNamespace is the namespace of the i-th pod.
func PodNamespace(i int) string { return fmt.Sprintf("shop-%02d", i%PodNamespaces) }

// CreateNamespaces creates the pods' namespaces.
func (cp *ControlPlane) CreateNamespaces(ctx context.Context) error {
	for i := range PodNamespaces {
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: PodNamespace(i)}}
		if _, err := cp.Kube.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return err
		}
	}
	return nil
}

// CreatePods creates perNode Running pods on each of nodes from..to-1 of the set, through etcd or the API (PodsVia),
// and waits until the API server lists them.
func (cp *ControlPlane) CreatePods(ctx context.Context, set string, from, to, perNode int) error {
	before, err := cp.CountPods(ctx)
	if err != nil {
		return err
	}
	want := before + int64((to-from)*perNode)
	if PodsVia() == "etcd" {
		want++ // the template pod
		err = cp.createPodsInEtcd(ctx, set, from, to, perNode)
	} else {
		err = cp.createPodsViaAPI(ctx, set, from, to, perNode)
	}
	if err != nil {
		return err
	}
	deadline := time.Now().Add(5 * time.Minute)
	for {
		n, err := cp.CountPods(ctx)
		if err != nil {
			return err
		}
		if n >= want {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the API server lists %d pods, want %d", n, want)
		}
		time.Sleep(time.Second)
	}
}

// createPodsViaAPI creates each pod, then its status as kubelet reports it.
func (cp *ControlPlane) createPodsViaAPI(ctx context.Context, set string, from, to, perNode int) error {
	return Parallel(ctx, (to-from)*perNode, Workers, func(ctx context.Context, k int) error {
		node := from + k/perNode
		i := node*perNode + k%perNode
		pod := NewPod(PodNamespace(i), fmt.Sprintf("%s-p%07d", set, i), NodeName(set, node), i)
		return retry(ctx, func() error {
			created, err := cp.Kube.CoreV1().Pods(pod.Namespace).Create(ctx, pod, metav1.CreateOptions{})
			if apierrors.IsAlreadyExists(err) {
				created, err = cp.Kube.CoreV1().Pods(pod.Namespace).Get(ctx, pod.Name, metav1.GetOptions{})
				if err == nil && created.Status.Phase == corev1.PodRunning {
					return nil
				}
			}
			if err != nil {
				return fmt.Errorf("creating pod %s: %w", pod.Name, err)
			}
			created.Status = RunningStatus(created, i)
			_, err = cp.Kube.CoreV1().Pods(pod.Namespace).UpdateStatus(ctx, created, metav1.UpdateOptions{})
			return err
		})
	})
}
