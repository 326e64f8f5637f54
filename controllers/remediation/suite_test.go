package remediation

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	schedulingv1 "k8s.io/api/scheduling/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	clocktesting "k8s.io/utils/clock/testing"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
	"github.com/cnimedic/cnimedic/internal/events"
	"github.com/cnimedic/cnimedic/internal/nodelease"
	"github.com/cnimedic/cnimedic/test/testenv"
)

// These suites run the workflow against a real kube-apiserver and etcd (envtest). No kubelet runs there, so the
// tests play the kubelet's part through the API: they set executor and canary pods' status and termination
// messages, and node conditions. The lab's end-to-end suite covers the same paths with a real kubelet.

const testNamespace = "cnimedic-system"

var env *testenv.Env

func TestMain(m *testing.M) {
	testenv.Main(m, &env, func(env *testenv.Env) error {
		ctx := context.Background()
		if err := env.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: testNamespace}}); err != nil {
			return err
		}
		// Where the medik8s operators and cnimedic keep node leases.
		if err := env.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: nodelease.DefaultNamespace}}); err != nil {
			return err
		}
		// The executor's PriorityClass, as deploy/ ships it.
		return env.Client.Create(ctx, &schedulingv1.PriorityClass{ObjectMeta: metav1.ObjectMeta{Name: "cnimedic-executor"}, Value: 1000000000})
	})
}

// harness runs the workflow controller in a manager that a test may stop and start again, on a fake clock.
type harness struct {
	t     *testing.T
	ctx   context.Context
	c     client.Client
	clock *clocktesting.FakeClock
	// prefix keeps each test's objects apart in the shared API server.
	prefix string
	// diagnosisInterval is the workflow's Config.DiagnosisInterval (none unless a test sets it and restarts).
	diagnosisInterval time.Duration
	// ownDiagnoses is set once a test's kubelet answers diagnosis pods itself (kubelet.diagnosis); until then every
	// diagnosis confirms the remediation's signature, as a node with the failure would.
	ownDiagnoses atomic.Bool
	// ran remembers every pod the workflow created on the test's nodes, by UID: an ended remediation's pods are
	// deleted, and the tests still count what ran.
	ranMu sync.Mutex
	ran   map[types.UID]corev1.Pod

	mu     sync.Mutex
	cancel context.CancelFunc
	done   chan struct{}
}

func newHarness(t *testing.T, prefix string) *harness {
	t.Helper()
	h := &harness{t: t, ctx: context.Background(), c: env.Client, clock: clocktesting.NewFakeClock(time.Now()), prefix: prefix,
		diagnosisInterval: -1}
	h.start()
	h.recordPods()
	h.confirmDiagnoses()
	t.Cleanup(func() {
		h.stop()
		h.cleanup()
	})
	return h
}

// confirmDiagnoses answers every diagnosis pod on the test's nodes with a finding of the remediation's own
// signature, until the test's kubelet answers them itself.
func (h *harness) confirmDiagnoses() {
	ctx, cancel := context.WithCancel(h.ctx)
	h.t.Cleanup(cancel)
	go func() {
		for ctx.Err() == nil && !h.ownDiagnoses.Load() {
			list := &corev1.PodList{}
			if err := h.c.List(ctx, list, client.InNamespace(testNamespace), client.MatchingLabels{v1alpha1.LabelComponent: componentDiagnosis}); err == nil {
				for i := range list.Items {
					pod := &list.Items[i]
					if pod.Status.Phase == corev1.PodPending && strings.HasPrefix(pod.Spec.NodeName, h.prefix+"-") && !h.ownDiagnoses.Load() {
						if res := h.confirms(pod); res != nil {
							_ = h.setPodStatus(pod, terminated(res))
						}
					}
				}
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()
}

// start starts a new manager with the workflow controller, as a restarted manager process would.
func (h *harness) start() {
	h.t.Helper()
	h.mu.Lock()
	defer h.mu.Unlock()
	mgr, err := ctrl.NewManager(env.Config, ctrl.Options{
		Scheme:                 scheme.Scheme,
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		Controller:             config.Controller{SkipNameValidation: ptr.To(true)},
	})
	if err != nil {
		h.t.Fatal(err)
	}
	kube := kubernetes.NewForConfigOrDie(env.Config)
	r := &Reconciler{
		Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), Kube: kube, Clock: h.clock,
		Events: events.NewRecorder(mgr.GetEventRecorder("cnimedic"), h.clock),
		Leases: &nodelease.Manager{Client: env.Client, Namespace: nodelease.DefaultNamespace, Holder: nodelease.Holder, Duration: 5 * time.Minute},
		Config: Config{Namespace: testNamespace, ExecutorImage: "executor:test", CanaryImage: "canary:test",
			ExecutorServiceAccount: "cnimedic-executor", PollInterval: 100 * time.Millisecond,
			// The tests' clock moves only when a test steps it; TestOneNodeIsNotDiagnosedBackToBack sets its own.
			DiagnosisInterval: h.diagnosisInterval},
	}
	if err := r.SetupWithManager(mgr); err != nil {
		h.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(h.ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := mgr.Start(ctx); err != nil {
			h.t.Errorf("manager: %v", err)
		}
	}()
	h.cancel, h.done = cancel, done
}

// stop stops the manager and waits until it has stopped, as a crash would (no cleanup runs).
func (h *harness) stop() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.cancel == nil {
		return
	}
	h.cancel()
	<-h.done
	h.cancel = nil
}

func (h *harness) restart() {
	h.stop()
	h.start()
}

func (h *harness) name(s string) string { return h.prefix + "-" + s }

// cleanup removes the test's objects, finalizers first. No garbage collector runs here, so the pods owned by the
// remediations are deleted too.
func (h *harness) cleanup() {
	ctx := h.ctx
	pods := &corev1.PodList{}
	_ = h.c.List(ctx, pods, client.InNamespace(testNamespace))
	for i := range pods.Items {
		if strings.HasPrefix(pods.Items[i].Spec.NodeName, h.prefix+"-") {
			_ = h.c.Delete(ctx, &pods.Items[i], client.GracePeriodSeconds(0))
		}
	}
	list := &v1alpha1.NodeRemediationList{}
	_ = h.c.List(ctx, list)
	for i := range list.Items {
		nr := &list.Items[i]
		if len(nr.Name) < len(h.prefix) || nr.Name[:len(h.prefix)] != h.prefix {
			continue
		}
		nr.Finalizers = nil
		_ = h.c.Update(ctx, nr)
		_ = h.c.Delete(ctx, nr)
	}
}

// node creates a Ready node.
func (h *harness) node(name string, mutate ...func(*corev1.Node)) *corev1.Node {
	h.t.Helper()
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: h.name(name), Labels: map[string]string{"test": h.prefix}}}
	for _, m := range mutate {
		m(n)
	}
	if err := h.c.Create(h.ctx, n); err != nil {
		h.t.Fatal(err)
	}
	h.setReady(n.Name, true, "kubelet is posting ready status")
	h.t.Cleanup(func() { _ = h.c.Delete(context.Background(), n) })
	return n
}

func (h *harness) setReady(node string, ready bool, msg string) {
	h.t.Helper()
	status := corev1.ConditionTrue
	reason := "KubeletReady"
	if !ready {
		status, reason = corev1.ConditionFalse, "KubeletNotReady"
	}
	h.eventually(func() error {
		n := &corev1.Node{}
		if err := h.c.Get(h.ctx, types.NamespacedName{Name: node}, n); err != nil {
			return err
		}
		n.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: status, Reason: reason, Message: msg,
			LastHeartbeatTime: metav1.Now(), LastTransitionTime: metav1.Now()}}
		return h.c.Status().Update(h.ctx, n)
	}, "set node %s Ready=%v", node, ready)
}

// policy creates a policy through the API server, so that it gets the CRD's defaults, selecting the test's nodes.
func (h *harness) policy(name string, mutate func(*v1alpha1.RemediationPolicySpec)) *v1alpha1.RemediationPolicy {
	h.t.Helper()
	p := &v1alpha1.RemediationPolicy{ObjectMeta: metav1.ObjectMeta{Name: h.name(name)}}
	p.Spec.NodeSelector = &metav1.LabelSelector{MatchLabels: map[string]string{"test": h.prefix}}
	p.Spec.Approval.Mode = v1alpha1.ApprovalAutomatic
	p.Spec.Verification.Canary = ptr.To(true)
	p.Spec.Drain.Timeout = &metav1.Duration{Duration: time.Minute}
	p.Spec.Retry.Cooldown = &metav1.Duration{}
	if mutate != nil {
		mutate(&p.Spec)
	}
	if err := h.c.Create(h.ctx, p); err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { _ = h.c.Delete(context.Background(), p) })
	return p
}

// remediation creates a NodeRemediation with fresh evidence, as the detection would.
func (h *harness) remediation(name, node string, p *v1alpha1.RemediationPolicy, sig v1alpha1.SignatureID, mutate ...func(*v1alpha1.NodeRemediation)) *v1alpha1.NodeRemediation {
	h.t.Helper()
	now := metav1.NewTime(h.clock.Now())
	nr := &v1alpha1.NodeRemediation{
		// Labelled as the detection labels them: the workflow finds a node's earlier remediations by label.
		ObjectMeta: metav1.ObjectMeta{Name: h.name(name), Labels: map[string]string{v1alpha1.LabelNode: node, v1alpha1.LabelPolicy: p.Name}},
		Spec: v1alpha1.NodeRemediationSpec{NodeName: node, PolicyName: p.Name, Signature: string(sig),
			Parameters: map[string]string{"configVersion": "1.0.0", "supportedVersions": "0.1.0,0.2.0,0.3.0,0.3.1,0.4.0"},
			Evidence: v1alpha1.Evidence{EventCount: 5, PodCount: 1, FirstSeen: &now, LastSeen: &now,
				SampleMessages: []string{`plugin type="bridge" failed (add): incompatible CNI versions; config is "1.0.0", plugin supports ["0.1.0" "0.2.0" "0.3.0" "0.3.1" "0.4.0"]`}}},
	}
	for _, m := range mutate {
		m(nr)
	}
	if err := h.c.Create(h.ctx, nr); err != nil {
		h.t.Fatal(err)
	}
	return nr
}

func (h *harness) get(name string) *v1alpha1.NodeRemediation {
	nr := &v1alpha1.NodeRemediation{}
	if err := h.c.Get(h.ctx, types.NamespacedName{Name: name}, nr); err != nil {
		h.t.Fatalf("get %s: %v", name, err)
	}
	return nr
}

func (h *harness) getNode(name string) *corev1.Node {
	n := &corev1.Node{}
	if err := h.c.Get(h.ctx, types.NamespacedName{Name: name}, n); err != nil {
		h.t.Fatalf("get node %s: %v", name, err)
	}
	return n
}

// waitPhase waits until the remediation reaches the phase (failing at once if it ends in another).
func (h *harness) waitPhase(name string, want v1alpha1.Phase) *v1alpha1.NodeRemediation {
	h.t.Helper()
	var nr *v1alpha1.NodeRemediation
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		nr = h.get(name)
		if nr.Status.Phase == want {
			return nr
		}
		if nr.Status.Phase.IsTerminal() {
			h.t.Fatalf("%s ended %s (%s: %s), want %s", name, nr.Status.Phase, nr.Status.Reason, nr.Status.Message, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
	h.t.Fatalf("%s is %s (%s: %s), want %s", name, nr.Status.Phase, nr.Status.Reason, nr.Status.Message, want)
	return nil
}

// eventOn waits for an event of the reason about the remediation whose note contains want.
func (h *harness) eventOn(nr, reason, want string) {
	h.t.Helper()
	h.eventually(func() error {
		list := &eventsv1.EventList{}
		if err := h.c.List(h.ctx, list); err != nil {
			return err
		}
		for _, e := range list.Items {
			if e.Reason == reason && e.Regarding.Name == nr && strings.Contains(e.Note, want) {
				return nil
			}
		}
		return fmt.Errorf("no %s event naming %q on %s", reason, want, nr)
	}, "the %s event", reason)
}

func (h *harness) eventually(f func() error, what string, args ...any) {
	h.t.Helper()
	var err error
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if err = f(); err == nil {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	h.t.Fatalf("%s: %v", fmt.Sprintf(what, args...), err)
}

// phases lists the phases of the remediation's history, in order.
func phases(nr *v1alpha1.NodeRemediation) []v1alpha1.Phase {
	var out []v1alpha1.Phase
	for _, t := range nr.Status.History {
		out = append(out, t.Phase)
	}
	return out
}

// executorPods lists the executor pods of a remediation.
func (h *harness) executorPods(nr string) []corev1.Pod { return h.podsOf(nr, "executor") }

// podsOf lists the remediation's pods of one component (executor, diagnosis or canary) that exist or existed: the
// live ones as they are now, the deleted ones as last seen.
func (h *harness) podsOf(nr, component string) []corev1.Pod {
	list := &corev1.PodList{}
	if err := h.c.List(h.ctx, list, client.InNamespace(testNamespace), client.MatchingLabels{v1alpha1.LabelRemediation: nr, v1alpha1.LabelComponent: component}); err != nil {
		h.t.Fatal(err)
	}
	out := list.Items
	live := map[types.UID]bool{}
	for _, p := range out {
		live[p.UID] = true
	}
	h.ranMu.Lock()
	defer h.ranMu.Unlock()
	for uid, p := range h.ran {
		if !live[uid] && p.Labels[v1alpha1.LabelRemediation] == nr && p.Labels[v1alpha1.LabelComponent] == component {
			out = append(out, p)
		}
	}
	return out
}

// recordPods remembers the pods of the test's nodes until the test ends.
func (h *harness) recordPods() {
	h.ran = map[types.UID]corev1.Pod{}
	ctx, cancel := context.WithCancel(h.ctx)
	h.t.Cleanup(cancel)
	go func() {
		for ctx.Err() == nil {
			list := &corev1.PodList{}
			if err := h.c.List(ctx, list, client.InNamespace(testNamespace)); err == nil {
				h.ranMu.Lock()
				for _, p := range list.Items {
					if strings.HasPrefix(p.Spec.NodeName, h.prefix+"-") {
						h.ran[p.UID] = p
					}
				}
				h.ranMu.Unlock()
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
}

// terminated plays the kubelet for an executor: the pod ran and ended with the result as its termination message.
func terminated(res *v1alpha1.ExecutorResult) func(*corev1.Pod) {
	return func(p *corev1.Pod) {
		raw, _ := json.Marshal(res)
		phase, code := corev1.PodSucceeded, int32(0)
		if res.Outcome != v1alpha1.OutcomeSucceeded && res.Outcome != v1alpha1.OutcomeNoChange {
			phase, code = corev1.PodFailed, 1
		}
		p.Status.Phase = phase
		p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: p.Spec.Containers[0].Name, Image: p.Spec.Containers[0].Image,
			State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: code, Message: string(raw), Reason: "Completed"}}}}
	}
}

// running plays the kubelet for a pod that started: Running and Ready.
func podRunning(p *corev1.Pod) {
	p.Status.Phase = corev1.PodRunning
	p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}
}

// setPodStatus writes a pod's status as kubelet would, retrying conflicts; a pod deleted meanwhile is not an error.
func (h *harness) setPodStatus(pod *corev1.Pod, set func(*corev1.Pod)) error {
	for range 50 {
		p := &corev1.Pod{}
		if err := h.c.Get(h.ctx, client.ObjectKeyFromObject(pod), p); err != nil {
			return client.IgnoreNotFound(err)
		}
		set(p)
		err := h.c.Status().Update(h.ctx, p)
		if err == nil || apierrors.IsNotFound(err) {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("could not set the status of pod %s", pod.Name)
}

func (h *harness) runPod(pod *corev1.Pod) {
	h.t.Helper()
	if err := h.setPodStatus(pod, podRunning); err != nil {
		h.t.Fatal(err)
	}
}

// kubelet plays the kubelet for every pod cnimedic creates on the test's nodes until the test ends: executor pods
// end with the result outcome(pod) gives (nil: leave the pod pending), diagnosis pods with the one diagnosis(pod)
// gives (unset: confirmDiagnoses answers them), canary pods run when canaryRuns says so.
type kubelet struct {
	outcome    func(pod *corev1.Pod) *v1alpha1.ExecutorResult
	diagnosis  func(pod *corev1.Pod) *v1alpha1.ExecutorResult
	canaryRuns func(pod *corev1.Pod) bool
	// preview ends the preview pods (nil: they stay pending).
	preview func(pod *corev1.Pod) *v1alpha1.ExecutorResult
}

// confirms is a diagnosis that finds the remediation's own signature on the node.
func (h *harness) confirms(pod *corev1.Pod) *v1alpha1.ExecutorResult {
	nr := &v1alpha1.NodeRemediation{}
	if err := h.c.Get(h.ctx, types.NamespacedName{Name: pod.Labels[v1alpha1.LabelRemediation]}, nr); err != nil {
		return nil
	}
	return diagnosisFinding(pod, v1alpha1.Finding{Severity: v1alpha1.SeverityError, Signature: v1alpha1.SignatureID(nr.Spec.Signature),
		Summary: "the node shows " + nr.Spec.Signature})
}

// diagnosisFinding is a diagnosis result with the given findings.
func diagnosisFinding(pod *corev1.Pod, fs ...v1alpha1.Finding) *v1alpha1.ExecutorResult {
	msg := "the diagnosis found nothing wrong on the node"
	if len(fs) > 0 {
		msg = "the diagnosis found: " + fs[0].Summary
	}
	return &v1alpha1.ExecutorResult{RemediationID: pod.Labels[v1alpha1.LabelRemediation], Outcome: v1alpha1.OutcomeNoChange, Message: msg, Findings: fs}
}

func (h *harness) runKubelet(k kubelet) {
	if k.diagnosis != nil {
		h.ownDiagnoses.Store(true)
	}
	ctx, cancel := context.WithCancel(h.ctx)
	h.t.Cleanup(cancel)
	go func() {
		seen := map[types.UID]bool{}
		for ctx.Err() == nil {
			list := &corev1.PodList{}
			if err := h.c.List(ctx, list, client.InNamespace(testNamespace)); err == nil {
				for i := range list.Items {
					pod := &list.Items[i]
					if seen[pod.UID] || pod.DeletionTimestamp != nil || len(pod.Spec.NodeName) < len(h.prefix) || pod.Spec.NodeName[:len(h.prefix)] != h.prefix {
						continue
					}
					switch pod.Labels[v1alpha1.LabelComponent] {
					case "executor":
						if k.outcome == nil {
							continue
						}
						if res := k.outcome(pod); res != nil {
							seen[pod.UID] = true
							_ = h.setPodStatus(pod, terminated(res))
						}
					case componentDiagnosis:
						if k.diagnosis == nil {
							continue
						}
						if res := k.diagnosis(pod); res != nil {
							seen[pod.UID] = true
							_ = h.setPodStatus(pod, terminated(res))
						}
					case componentPreview:
						if k.preview == nil {
							continue
						}
						if res := k.preview(pod); res != nil {
							seen[pod.UID] = true
							_ = h.setPodStatus(pod, terminated(res))
						}
					case "canary":
						if k.canaryRuns == nil || k.canaryRuns(pod) {
							seen[pod.UID] = true
							_ = h.setPodStatus(pod, podRunning)
						}
					}
				}
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()
}

func succeeded(pod *corev1.Pod) *v1alpha1.ExecutorResult {
	return &v1alpha1.ExecutorResult{RemediationID: pod.Labels[v1alpha1.LabelRemediation], Outcome: v1alpha1.OutcomeSucceeded,
		Message: "set cniVersion 0.4.0", Changes: []v1alpha1.FileChange{{Path: "/etc/cni/net.d/10-lab.conflist", Backup: "/var/lib/cnimedic/journal/x/1"}}}
}
