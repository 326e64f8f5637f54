//go:build bench

package bench

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strconv"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/serializer/protobuf"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes/scheme"
)

// Creating 150,000 pods through the API costs the API server two requests each (the create, then the status:
// a create drops a pod's status) at about 5 ms of its CPU per request here, which on a shared two-core machine is
// most of an hour. PodsVia chooses how CreatePods makes them: "etcd" (default) writes them straight into the API
// server's storage, in the encoding and under the keys the API server itself uses (protobuf, /registry/pods/NS/NAME),
// with the managed fields an API-created pod carries; the API server's watch of its storage picks them up exactly as
// it picks up its own writes, so the manager sees the same pods either way. "api" (BENCH_PODS_VIA=api) creates them
// through the API.
func PodsVia() string {
	if v := os.Getenv("BENCH_PODS_VIA"); v != "" {
		return v
	}
	return "etcd"
}

// etcdClient connects to the control plane's etcd.
func (cp *ControlPlane) etcdClient() (*clientv3.Client, error) {
	return clientv3.New(clientv3.Config{Endpoints: []string{cp.env.ControlPlane.Etcd.URL.String()}, DialTimeout: 10 * time.Second,
		MaxCallSendMsgSize: 64 << 20})
}

// podTemplate creates one pod through the API (create and status) and returns its managed fields, so that the pods
// written to etcd carry what API-created ones carry.
func (cp *ControlPlane) podTemplate(ctx context.Context, node string) ([]metav1.ManagedFieldsEntry, error) {
	pod := NewPod(PodNamespace(0), "template-"+node, node, 0)
	created, err := cp.Kube.CoreV1().Pods(pod.Namespace).Create(ctx, pod, metav1.CreateOptions{FieldManager: "kube-controller-manager"})
	if err != nil {
		return nil, err
	}
	created.Status = RunningStatus(created, 0)
	got, err := cp.Kube.CoreV1().Pods(pod.Namespace).UpdateStatus(ctx, created, metav1.UpdateOptions{FieldManager: "kubelet"})
	if err != nil {
		return nil, err
	}
	return got.ManagedFields, nil
}

// createPodsInEtcd writes the pods of nodes from..to-1 straight into etcd (see PodsVia).
func (cp *ControlPlane) createPodsInEtcd(ctx context.Context, set string, from, to, perNode int) error {
	cli, err := cp.etcdClient()
	if err != nil {
		return err
	}
	defer cli.Close()
	managed, err := cp.podTemplate(ctx, NodeName(set, from))
	if err != nil {
		return fmt.Errorf("creating the template pod: %w", err)
	}
	codec := protobuf.NewSerializer(scheme.Scheme, scheme.Scheme)
	const batch = 100 // etcd's default --max-txn-ops is 128
	total := (to - from) * perNode
	// Paced: faster than the API server decodes its watch of etcd, and its watch cache falls behind and
	// re-initialises (a full re-list of every pod), which is no steady state to measure the manager in.
	perSecond := 1000
	if v, err := strconv.Atoi(os.Getenv("BENCH_ETCD_PODS_PER_S")); err == nil && v > 0 {
		perSecond = v
	}
	tick := time.NewTicker(time.Second * batch / time.Duration(perSecond))
	defer tick.Stop()
	return Parallel(ctx, (total+batch-1)/batch, 8, func(ctx context.Context, b int) error {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
		ops := make([]clientv3.Op, 0, batch)
		for k := b * batch; k < min(total, (b+1)*batch); k++ {
			node := from + k/perNode
			i := node*perNode + k%perNode
			pod := NewPod(PodNamespace(i), fmt.Sprintf("%s-p%07d", set, i), NodeName(set, node), i)
			pod.TypeMeta = metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"}
			pod.UID = types.UID(fmt.Sprintf("%08x-0000-4000-8000-%012x", i, i))
			pod.CreationTimestamp = metav1.NewTime(time.Now().Add(-time.Duration(1+i%72) * time.Hour).Truncate(time.Second))
			pod.Generation = 1
			pod.Spec.SchedulerName = corev1.DefaultSchedulerName
			pod.Spec.DNSPolicy = corev1.DNSClusterFirst
			pod.Spec.RestartPolicy = corev1.RestartPolicyAlways
			pod.Spec.EnableServiceLinks = &[]bool{true}[0]
			pod.Spec.PreemptionPolicy = &[]corev1.PreemptionPolicy{corev1.PreemptLowerPriority}[0]
			pod.Spec.Priority = &[]int32{0}[0]
			pod.ManagedFields = managed
			pod.Status = RunningStatus(pod, i)
			var buf bytes.Buffer
			if err := codec.Encode(pod, &buf); err != nil {
				return err
			}
			ops = append(ops, clientv3.OpPut("/registry/pods/"+pod.Namespace+"/"+pod.Name, buf.String()))
		}
		return retry(ctx, func() error {
			_, err := cli.Txn(ctx).Then(ops...).Commit()
			return err
		})
	})
}

// CountPods asks the API server how many pods it has (a one-item list and its remaining count).
func (cp *ControlPlane) CountPods(ctx context.Context) (int64, error) {
	list, err := cp.Kube.CoreV1().Pods("").List(ctx, metav1.ListOptions{Limit: 1})
	if err != nil {
		return 0, err
	}
	n := int64(len(list.Items))
	if list.RemainingItemCount != nil {
		n += *list.RemainingItemCount
	}
	return n, nil
}

// WaitSettled waits until the API server serves pods from a watch cache that is up to date: a watch that streams
// the initial state ends it with its bookmark promptly, three times in a row.
func (cp *ControlPlane) WaitSettled(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	ok := 0
	for ok < 3 {
		if time.Now().After(deadline) {
			return fmt.Errorf("the API server's pod watch cache did not settle within %s", timeout)
		}
		if cp.initialEventsEnd(ctx, 5*time.Second) {
			ok++
		} else {
			ok = 0
		}
		time.Sleep(time.Second)
	}
	return nil
}

func (cp *ControlPlane) initialEventsEnd(ctx context.Context, within time.Duration) bool {
	ctx, cancel := context.WithTimeout(ctx, within)
	defer cancel()
	w, err := cp.Kube.CoreV1().Pods(Namespace).Watch(ctx, metav1.ListOptions{
		SendInitialEvents: &[]bool{true}[0], AllowWatchBookmarks: true,
		ResourceVersionMatch: metav1.ResourceVersionMatchNotOlderThan, LabelSelector: "bench/settled-probe",
	})
	if err != nil {
		return false
	}
	defer w.Stop()
	for ev := range w.ResultChan() {
		if ev.Type == watch.Bookmark {
			if o, err := meta.Accessor(ev.Object); err == nil && o.GetAnnotations()[metav1.InitialEventsAnnotationKey] == "true" {
				return true
			}
		}
		if ev.Type == watch.Error {
			return false
		}
	}
	return false
}
