//go:build bench

package bench

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// What a kubelet whose node's CNI is broken posts: its pods stay Pending (ContainerCreating, PodReadyToStartContainers
// False in their status) and each sandbox attempt fails with a Warning event about the pod, from the node (source
// host), as containerd words it. A new sandbox id makes each attempt's message differ, so kubelet creates an event
// per attempt; once its correlator aggregates them it patches the count of one instead. Both are used.

// SandboxMessage is containerd's message for a cni-version-incompatible failure (seed 1) with a fresh sandbox id.
func SandboxMessage(attempt string) string {
	return fmt.Sprintf(`Failed to create pod sandbox: rpc error: code = Unknown desc = failed to setup network for sandbox %q: `+
		`plugin type="bridge" failed (add): incompatible CNI versions; config is "1.0.0", plugin supports ["0.1.0" "0.2.0" "0.3.0" "0.3.1" "0.4.0"]`,
		digest(attempt))
}

// CreateStuckPod creates a Deployment's pod bound to the node that never gets its sandbox: it stays Pending, and the
// node's kubelet reports so in its status (StuckStatus), which is what detection counts a pod's events by.
func (cp *ControlPlane) CreateStuckPod(ctx context.Context, ns, name, node string, i int) (*corev1.Pod, error) {
	pod := NewPod(ns, name, node, i)
	var out *corev1.Pod
	err := retry(ctx, func() error {
		var err error
		out, err = cp.Kube.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{})
		return err
	})
	if err != nil {
		return out, err
	}
	out.Status = StuckStatus(out, time.Now())
	err = retry(ctx, func() error {
		updated, err := cp.Kube.CoreV1().Pods(ns).UpdateStatus(ctx, out, metav1.UpdateOptions{})
		if err == nil {
			out = updated
		}
		return err
	})
	return out, err
}

// SandboxEvent creates the Warning event of a failed sandbox attempt for the pod, and returns when the API server
// stored it (the moment the evidence exists).
func (cp *ControlPlane) SandboxEvent(ctx context.Context, pod *corev1.Pod, attempt string) (*corev1.Event, time.Time, error) {
	now := metav1.Now()
	ev := &corev1.Event{
		ObjectMeta:     metav1.ObjectMeta{Name: fmt.Sprintf("%s.%x", pod.Name, time.Now().UnixNano()), Namespace: pod.Namespace},
		InvolvedObject: corev1.ObjectReference{Kind: "Pod", Namespace: pod.Namespace, Name: pod.Name, UID: pod.UID, APIVersion: "v1", ResourceVersion: pod.ResourceVersion},
		Reason:         "FailedCreatePodSandBox", Message: SandboxMessage(attempt), Type: corev1.EventTypeWarning, Count: 1,
		Source:         corev1.EventSource{Component: "kubelet", Host: pod.Spec.NodeName},
		FirstTimestamp: now, LastTimestamp: now, ReportingController: "kubelet", ReportingInstance: pod.Spec.NodeName,
	}
	out, err := cp.Kube.CoreV1().Events(pod.Namespace).Create(ctx, ev, metav1.CreateOptions{})
	return out, time.Now(), err
}

// RepeatEvent patches the event's count and last time, as kubelet's correlator does for a repeated failure.
func (cp *ControlPlane) RepeatEvent(ctx context.Context, ev *corev1.Event, count int32) (*corev1.Event, time.Time, error) {
	patch := fmt.Sprintf(`{"count":%d,"lastTimestamp":%q}`, count, metav1.Now().UTC().Format(time.RFC3339))
	out, err := cp.Kube.CoreV1().Events(ev.Namespace).Patch(ctx, ev.Name, types.StrategicMergePatchType, []byte(patch), metav1.PatchOptions{})
	return out, time.Now(), err
}
