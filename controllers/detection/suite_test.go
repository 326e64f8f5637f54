package detection

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/utils/clock"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
	"github.com/cnimedic/cnimedic/internal/events"
	"github.com/cnimedic/cnimedic/test/testenv"
)

// These suites run the detection against a real kube-apiserver and etcd (envtest). The tests post events, pod
// statuses and node conditions through the API exactly as a kubelet posts them (core/v1 Events with the node as
// source host, PodReadyToStartContainers, the Ready condition's message), with the messages measured on a real node
// of the lab (docs/lab.md). envtest runs no kubelet: the tests write what it would, with the admin's credentials.

var (
	env  *testenv.Env
	runs atomic.Int32
)

func TestMain(m *testing.M) { testenv.Main(m, &env, nil) }

type harness struct {
	t      *testing.T
	ctx    context.Context
	c      client.Client
	prefix string
	ns     string
	mu     sync.Mutex
	// reconciles counts the detection's reconciles per node.
	reconciles sync.Map // node -> *atomic.Int32
}

// newHarness runs the detection controller (only it: no workflow moves the remediations it opens).
func newHarness(t *testing.T, prefix string) *harness {
	t.Helper()
	// A fresh prefix per harness: -count=N runs must not meet the objects of an earlier run.
	prefix = fmt.Sprintf("%s%d", prefix, runs.Add(1))
	h := &harness{t: t, ctx: context.Background(), c: env.Client, prefix: prefix, ns: prefix}
	if err := h.c.Create(h.ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: h.ns}}); err != nil {
		t.Fatal(err)
	}
	mgr, err := ctrl.NewManager(env.Config, ctrl.Options{
		Scheme: scheme.Scheme, Metrics: metricsserver.Options{BindAddress: "0"}, HealthProbeBindAddress: "0",
		Controller: config.Controller{SkipNameValidation: ptr.To(true)},
	})
	if err != nil {
		t.Fatal(err)
	}
	r := &Reconciler{Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), Kube: kubernetes.NewForConfigOrDie(env.Config),
		Clock: clock.RealClock{}, Events: events.NewRecorder(mgr.GetEventRecorder("cnimedic"), clock.RealClock{}),
		Requeue: 200 * time.Millisecond, MinWriteInterval: 100 * time.Millisecond}
	r.onReconcile = func(node string) {
		v, _ := h.reconciles.LoadOrStore(node, &atomic.Int32{})
		v.(*atomic.Int32).Add(1)
	}
	if err := r.SetupWithManager(mgr); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(h.ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := mgr.Start(ctx); err != nil {
			t.Errorf("manager: %v", err)
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		h.cleanup()
	})
	return h
}

func (h *harness) name(s string) string { return h.prefix + "-" + s }

func (h *harness) cleanup() {
	list := &v1alpha1.NodeRemediationList{}
	_ = h.c.List(h.ctx, list)
	for i := range list.Items {
		if strings.HasPrefix(list.Items[i].Name, h.prefix+"-") {
			_ = h.c.Delete(h.ctx, &list.Items[i])
		}
	}
}

// node creates a node that has been Ready for a while (its Ready transition an hour ago: no boot grace).
func (h *harness) node(name string, labels map[string]string) *corev1.Node {
	h.t.Helper()
	l := map[string]string{"test": h.prefix}
	for k, v := range labels {
		l[k] = v
	}
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: h.name(name), Labels: l}}
	if err := h.c.Create(h.ctx, n); err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { _ = h.c.Delete(context.Background(), n) })
	h.setReady(n.Name, corev1.ConditionTrue, "kubelet is posting ready status", time.Now().Add(-time.Hour))
	return n
}

func (h *harness) setReady(node string, status corev1.ConditionStatus, msg string, since time.Time) {
	h.t.Helper()
	n := &corev1.Node{}
	if err := h.c.Get(h.ctx, types.NamespacedName{Name: node}, n); err != nil {
		h.t.Fatal(err)
	}
	reason := "KubeletReady"
	if status != corev1.ConditionTrue {
		reason = "KubeletNotReady"
	}
	n.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: status, Reason: reason, Message: msg,
		LastHeartbeatTime: metav1.Now(), LastTransitionTime: metav1.NewTime(since)}}
	if err := h.c.Status().Update(h.ctx, n); err != nil {
		h.t.Fatal(err)
	}
}

// policy creates a policy through the API server (so it gets the CRD's defaults) covering the test's nodes, with
// thresholds that real time in a test can meet.
func (h *harness) policy(name string, mutate func(*v1alpha1.RemediationPolicySpec)) *v1alpha1.RemediationPolicy {
	h.t.Helper()
	p := &v1alpha1.RemediationPolicy{ObjectMeta: metav1.ObjectMeta{Name: h.name(name)}}
	p.Spec.NodeSelector = &metav1.LabelSelector{MatchLabels: map[string]string{"test": h.prefix}}
	p.Spec.Detection.MinStuckDuration = &metav1.Duration{}
	p.Spec.Detection.BootGracePeriod = &metav1.Duration{}
	if mutate != nil {
		mutate(&p.Spec)
	}
	if err := h.c.Create(h.ctx, p); err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { _ = h.c.Delete(context.Background(), p) })
	return p
}

// stuckPod creates a pod on the node stuck in ContainerCreating, with the status the node's kubelet writes for a pod
// whose sandbox fails to start: Pending, PodReadyToStartContainers False (since now). There is no kubelet in envtest,
// so the test writes it with the admin's credentials (a tenant cannot: pods/status is not in the edit role).
func (h *harness) stuckPod(name, node string) *corev1.Pod {
	h.t.Helper()
	pod := h.podOn(h.c, h.ns, name, node)
	h.kubeletStatus(pod, sandboxNotReady(time.Now()))
	return pod
}

// podOn creates a pod bound to the node through the given client (spec only: its status is kubelet's to write).
func (h *harness) podOn(c client.Client, ns, name, node string) *corev1.Pod {
	h.t.Helper()
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: corev1.PodSpec{NodeName: node, AutomountServiceAccountToken: ptr.To(false),
			Containers: []corev1.Container{{Name: "app", Image: "workload:test"}}},
	}
	if err := c.Create(h.ctx, pod); err != nil {
		h.t.Fatal(err)
	}
	return pod
}

// kubeletStatus writes the pod's status as the node's kubelet would, with the admin's credentials.
func (h *harness) kubeletStatus(pod *corev1.Pod, status corev1.PodStatus) {
	h.t.Helper()
	pod.Status = status
	if err := h.c.Status().Update(h.ctx, pod); err != nil {
		h.t.Fatal(err)
	}
}

// sandboxNotReady is the status kubelet writes for a pod whose sandbox it cannot create (CNI ADD fails), since.
func sandboxNotReady(since time.Time) corev1.PodStatus {
	at := metav1.NewTime(since)
	return corev1.PodStatus{Phase: corev1.PodPending, Conditions: []corev1.PodCondition{
		{Type: corev1.PodReadyToStartContainers, Status: corev1.ConditionFalse, LastTransitionTime: at},
		{Type: corev1.PodInitialized, Status: corev1.ConditionTrue, LastTransitionTime: at},
		{Type: corev1.PodReady, Status: corev1.ConditionFalse, Reason: "ContainersNotReady", LastTransitionTime: at},
		{Type: corev1.ContainersReady, Status: corev1.ConditionFalse, Reason: "ContainersNotReady", LastTransitionTime: at},
		{Type: corev1.PodScheduled, Status: corev1.ConditionTrue, LastTransitionTime: at},
	}, ContainerStatuses: []corev1.ContainerStatus{{Name: "app", Image: "workload:test",
		State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ContainerCreating"}}}}}
}

// sandboxReadyImageNotPulled is the status kubelet writes on a healthy node for a pod whose sandbox and network are
// up but whose image never pulls: Pending, PodReadyToStartContainers True.
func sandboxReadyImageNotPulled(since time.Time) corev1.PodStatus {
	st := sandboxNotReady(since)
	st.Conditions[0].Status = corev1.ConditionTrue
	st.PodIP, st.PodIPs = "10.244.1.7", []corev1.PodIP{{IP: "10.244.1.7"}}
	st.ContainerStatuses[0].State.Waiting = &corev1.ContainerStateWaiting{Reason: "ImagePullBackOff", Message: `Back-off pulling image "workload:test"`}
	return st
}

// running is the status kubelet writes for a pod that runs.
func running(since time.Time) corev1.PodStatus {
	at := metav1.NewTime(since)
	st := corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "10.244.1.8", PodIPs: []corev1.PodIP{{IP: "10.244.1.8"}}}
	for _, t := range []corev1.PodConditionType{corev1.PodReadyToStartContainers, corev1.PodInitialized, corev1.PodReady, corev1.ContainersReady, corev1.PodScheduled} {
		st.Conditions = append(st.Conditions, corev1.PodCondition{Type: t, Status: corev1.ConditionTrue, LastTransitionTime: at})
	}
	st.ContainerStatuses = []corev1.ContainerStatus{{Name: "app", Image: "workload:test", Ready: true, Started: ptr.To(true),
		State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: at}}}}
	return st
}

// kubeletEvent posts a Warning event about the pod as kubelet does: source host = the node.
func (h *harness) kubeletEvent(pod *corev1.Pod, reason, message string, count int32, last time.Time) {
	h.t.Helper()
	ev := &corev1.Event{
		ObjectMeta:     metav1.ObjectMeta{GenerateName: pod.Name + ".", Namespace: pod.Namespace},
		InvolvedObject: corev1.ObjectReference{Kind: "Pod", Namespace: pod.Namespace, Name: pod.Name, UID: pod.UID, APIVersion: "v1"},
		Reason:         reason, Message: message, Type: corev1.EventTypeWarning, Count: count,
		Source:         corev1.EventSource{Component: "kubelet", Host: pod.Spec.NodeName},
		FirstTimestamp: metav1.NewTime(last.Add(-time.Minute)), LastTimestamp: metav1.NewTime(last),
	}
	if err := h.c.Create(h.ctx, ev); err != nil {
		h.t.Fatal(err)
	}
}

func (h *harness) remediationsOf(node string) []v1alpha1.NodeRemediation {
	list := &v1alpha1.NodeRemediationList{}
	if err := h.c.List(h.ctx, list, client.MatchingLabels{v1alpha1.LabelNode: node}); err != nil {
		h.t.Fatal(err)
	}
	return list.Items
}

// waitRemediation waits for the node's NodeRemediation to appear.
func (h *harness) waitRemediation(node string) v1alpha1.NodeRemediation {
	h.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if items := h.remediationsOf(node); len(items) > 0 {
			return items[0]
		}
		time.Sleep(50 * time.Millisecond)
	}
	h.t.Fatalf("no NodeRemediation for node %s", node)
	return v1alpha1.NodeRemediation{}
}

// assertNone checks that no NodeRemediation appears for the node within a few reconcile periods.
func (h *harness) assertNone(node, why string) {
	h.t.Helper()
	time.Sleep(1500 * time.Millisecond)
	if items := h.remediationsOf(node); len(items) > 0 {
		h.t.Fatalf("%s: a NodeRemediation was opened: %s (%s)", why, items[0].Name, items[0].Spec.Signature)
	}
}
