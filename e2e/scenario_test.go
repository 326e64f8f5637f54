//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
	"github.com/cnimedic/cnimedic/e2e/lab"
)

const (
	workloadNS = "e2e"
	// Bounds of each stage; a repair takes seconds here, these only stop a broken run.
	stuckTimeout     = 90 * time.Second
	detectionTimeout = 2 * time.Minute
	repairTimeout    = 5 * time.Minute
)

// scenario is one failure taken from injection to the workload Running again.
type scenario struct {
	fault lab.Fault
	// layout, when set, runs the scenario on the lab's node of that layout (lab.LayoutK3sAgent), moving the manager
	// off it first; else on a kubeadm-style worker the manager does not run on.
	layout string
	// policy, when set, replaces the lab policy for this scenario (and the lab policy is put back after).
	policy func(*v1alpha1.RemediationPolicy)
	// wantPhase is how the NodeRemediation must end: Succeeded, or Escalated for what cnimedic must not repair;
	// empty accepts any end (check decides).
	wantPhase v1alpha1.Phase
	// wantReasons must appear, in this order, among the events `kubectl events --for noderemediation/NAME` shows.
	wantReasons []string
	// nodeCondition: the failure shows on the node's Ready condition (NotReady), not in pod events. The workload
	// is then started before the injection (a NotReady node gets no new pods) and must survive the drain.
	nodeCondition bool
	// teardown: the failure is in pod teardown (FailedKillPod, pods stuck Terminating), not setup. The workload
	// starts on the broken node, then its pods are deleted; the stuck ones must be gone after the repair.
	teardown bool
	// manualApproval runs the scenario under a Manual policy: the test approves the NodeRemediation by annotation
	// once it waits in AwaitingApproval, as a person would.
	manualApproval bool
	// unrepaired: the node is expected to stay broken (a dry run, a rolled-back repair): the workload and node
	// health checks of a success are skipped; check says what must hold instead.
	unrepaired bool
	// during runs once the NodeRemediation exists, while it is being worked on (e.g. to kill the executor).
	during func(t *testing.T, r *run)
	// setup runs before the injection, on the healthy node (e.g. a pod the repair must not touch).
	setup func(t *testing.T, r *run)
	// check runs on the node after the remediation ended, for the scenario's own assertions.
	check func(t *testing.T, s *run)
}

// run is a scenario in progress.
type run struct {
	t        *testing.T
	ctx      context.Context
	c        client.Client
	node     string
	workload string
	nr       *v1alpha1.NodeRemediation
	injected time.Time
	// detectedBy says who created the NodeRemediation: the manager's detection, or this test on its behalf;
	// detectionLatency is the time from the evidence meeting the policy's thresholds (as this test saw it) to the
	// NodeRemediation existing.
	detectedBy       string
	detectionLatency time.Duration
	events           []corev1.Event
	// stuck are the workload's pods the failure held (stuck creating, or stuck terminating).
	stuck []v1alpha1.PodReference
}

// The reasons of a successful repair, as the workflow emits them.
var succeededReasons = []string{
	"Detected", "Diagnosing", "Confirmed", "AwaitingApproval", "Approved", "Draining", "Cordoned", "Drained", "ExecutorStarted",
	"Repaired", "Verifying", "Verified", "Uncordoned", "Succeeded",
}

func (sc scenario) run(t *testing.T) *run {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	t.Cleanup(cancel)
	c, err := theLab.Client()
	if err != nil {
		t.Fatal(err)
	}
	r := &run{t: t, ctx: ctx, c: c}
	info, ok := lab.Info(sc.fault)
	if !ok {
		t.Fatalf("no fault %s", sc.fault)
	}
	if sc.layout != "" {
		r.node = r.nodeOfLayout(sc.layout)
	} else {
		r.node = r.targetNode()
	}
	r.workload = "wl-" + strings.ReplaceAll(string(sc.fault), "_", "-")
	r.cleanSlate()
	if sc.policy != nil || sc.manualApproval {
		p := lab.LabPolicy()
		if sc.policy != nil {
			sc.policy(p)
		}
		if sc.manualApproval {
			p.Spec.Approval.Mode = v1alpha1.ApprovalManual
		}
		if _, err := theLab.ApplyPolicy(ctx, p); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if _, err := theLab.ApplyPolicy(context.Background(), lab.LabPolicy()); err != nil {
				t.Errorf("putting the lab policy back: %v", err)
			}
		})
	}
	t.Cleanup(func() { r.cleanup(sc) })

	if sc.setup != nil {
		sc.setup(t, r)
	}
	if sc.nodeCondition {
		r.createWorkload()
		r.waitWorkloadRunning()
	}
	t.Logf("injecting %s into %s: %s", sc.fault, r.node, info.What)
	r.injected = time.Now()
	if err := theLab.Inject(ctx, r.node, sc.fault); err != nil {
		t.Fatalf("inject %s: %v", sc.fault, err)
	}
	if !sc.nodeCondition {
		r.createWorkload()
	}
	if sc.teardown {
		r.waitWorkloadRunning()
		if err := r.c.DeleteAllOf(ctx, &corev1.Pod{}, client.InNamespace(workloadNS), client.MatchingLabels{"app": r.workload}); err != nil {
			t.Fatal(err)
		}
	}
	evidence := r.waitStuck(sc.nodeCondition, sc.teardown)
	r.stuck = evidence.pods
	r.nr = r.detect(string(info.Signature), evidence, sc.nodeCondition)
	if sc.manualApproval {
		r.approve()
	}
	if sc.during != nil {
		sc.during(t, r)
	}
	r.nr = r.waitEnd()
	r.events = r.remediationEvents()
	r.logStory()
	if sc.wantPhase != "" && r.nr.Status.Phase != sc.wantPhase {
		t.Fatalf("NodeRemediation %s ended %s (%s: %s), want %s", r.nr.Name, r.nr.Status.Phase, r.nr.Status.Reason, r.nr.Status.Message, sc.wantPhase)
	}
	r.assertReasons(sc.wantReasons)
	if sc.wantPhase == v1alpha1.PhaseSucceeded && !sc.unrepaired {
		r.waitWorkloadRunning()
		mttr := time.Since(r.injected)
		latency := fmt.Sprintf("%4.1fs", r.detectionLatency.Seconds())
		if r.detectionLatency < -time.Second {
			// Detection counted evidence of an earlier scenario on the same node, still inside the window.
			latency = "n/a (earlier evidence in the window)"
		}
		mttrs = append(mttrs, fmt.Sprintf("%-52s %-26s MTTR %5.1fs; thresholds met -> NodeRemediation %s (created by %s)",
			t.Name(), info.Signature, mttr.Seconds(), latency, r.detectedBy))
		t.Logf("MTTR %s: %.1fs from injection to the workload Running again", sc.fault, mttr.Seconds())
		r.assertNodeHealthy()
		// Issue 17: nothing of a successful repair is left in the install namespace.
		r.eventually("the repair's executor and diagnosis pods removed", time.Minute, func() (bool, string) {
			pods := &corev1.PodList{}
			if err := r.c.List(r.ctx, pods, client.InNamespace(lab.Namespace), client.MatchingLabels{v1alpha1.LabelRemediation: r.nr.Name}); err != nil {
				return false, err.Error()
			}
			return len(pods.Items) == 0, fmt.Sprintf("%d pods left", len(pods.Items))
		})
	}
	if sc.check != nil {
		sc.check(t, r)
	}
	return r
}

// targetNode is a worker the manager does not run on: breaking the manager's own node works too (its pod is
// hostNetwork), but its drain would evict the manager in the middle of the repair, which is a different test.
func (r *run) targetNode() string {
	pods := &corev1.PodList{}
	if err := r.c.List(r.ctx, pods, client.InNamespace(lab.Namespace), client.MatchingLabels{"app.kubernetes.io/component": "manager"}); err != nil {
		r.t.Fatal(err)
	}
	busy := map[string]bool{}
	for _, p := range pods.Items {
		if p.DeletionTimestamp == nil { // an old replica still terminating after a rollout does not count
			busy[p.Spec.NodeName] = true
		}
	}
	for _, n := range theLab.Config().Nodes() {
		// The suite's scenarios on the kubeadm-style node read its paths; the k3s-layout node has its own tests.
		if !busy[n.Name] && n.Layout == "" {
			return n.Name
		}
	}
	r.t.Fatal("no kubeadm-style worker without the manager")
	return ""
}

// cleanSlate makes the target healthy and forgets earlier remediations, whose retry accounting would otherwise
// carry over from one scenario to the next.
func (r *run) cleanSlate() {
	if err := theLab.Reset(r.ctx, r.node); err != nil {
		r.t.Fatalf("reset %s: %v", r.node, err)
	}
	if err := r.c.DeleteAllOf(r.ctx, &v1alpha1.NodeRemediation{}); err != nil && !apierrors.IsNotFound(err) {
		r.t.Fatal(err)
	}
	r.eventually("earlier NodeRemediations gone", time.Minute, func() (bool, string) {
		list := &v1alpha1.NodeRemediationList{}
		if err := r.c.List(r.ctx, list); err != nil {
			return false, err.Error()
		}
		return len(list.Items) == 0, fmt.Sprintf("%d left", len(list.Items))
	})
	// Events of earlier scenarios' pods would read as this scenario's evidence.
	if err := r.c.DeleteAllOf(r.ctx, &corev1.Event{}, client.InNamespace(workloadNS)); err != nil && !apierrors.IsNotFound(err) {
		r.t.Fatal(err)
	}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: workloadNS}}
	if err := r.c.Create(r.ctx, ns); err != nil && !apierrors.IsAlreadyExists(err) {
		r.t.Fatal(err)
	}
	r.eventually("node "+r.node+" Ready", 2*time.Minute, func() (bool, string) {
		n := &corev1.Node{}
		if err := r.c.Get(r.ctx, client.ObjectKey{Name: r.node}, n); err != nil {
			return false, err.Error()
		}
		return lab.NodeReady(n)
	})
}

func (r *run) cleanup(sc scenario) {
	ctx := context.Background()
	if r.t.Failed() {
		r.dumpDiagnostics(ctx)
	}
	_ = r.c.DeleteAllOf(ctx, &appsv1.Deployment{}, client.InNamespace(workloadNS))
	_ = r.c.DeleteAllOf(ctx, &appsv1.DaemonSet{}, client.InNamespace(workloadNS))
	_ = r.c.DeleteAllOf(ctx, &corev1.Pod{}, client.InNamespace(workloadNS), client.GracePeriodSeconds(0))
	if err := theLab.Reset(ctx, r.node); err != nil {
		r.t.Errorf("reset %s after the scenario: %v", r.node, err)
	}
}

// createWorkload starts two replicas that prefer the target node: they land there (and get stuck), and the drain
// can send them to the other worker.
func (r *run) createWorkload() {
	if err := r.c.Create(r.ctx, lab.Workload(workloadNS, r.workload, r.node)); err != nil {
		r.t.Fatal(err)
	}
}

// evidence is what the test saw of the failure: the pods' sandbox failures, or the node's condition.
type evidence struct {
	events    []corev1.Event
	condition string
	pods      []v1alpha1.PodReference
	// metAt is when the evidence first met the lab policy's thresholds.
	metAt time.Time
}

// waitStuck waits until the workload's pods on the node are stuck in ContainerCreating with FailedCreatePodSandBox
// events (or, for a node-condition failure, the node is NotReady with the failure in its Ready condition), and the
// evidence meets the lab policy's detection thresholds.
func (r *run) waitStuck(nodeCondition, teardown bool) evidence {
	reason := "FailedCreatePodSandBox"
	if teardown {
		reason = "FailedKillPod"
	}
	p := lab.LabPolicy().Spec.Detection
	var ev evidence
	r.eventually("the failure shows", stuckTimeout, func() (bool, string) {
		if nodeCondition {
			n := &corev1.Node{}
			if err := r.c.Get(r.ctx, client.ObjectKey{Name: r.node}, n); err != nil {
				return false, err.Error()
			}
			ready, why := lab.NodeReady(n)
			if ready {
				return false, "node still Ready"
			}
			ev.condition = notReadyMessage(n)
			// A node condition counts once it has held for minStuckDuration, from kubelet's transition.
			since := readySince(n)
			if time.Since(since) < p.MinStuckDuration.Duration {
				return false, fmt.Sprintf("NotReady for %s of the policy's %s", time.Since(since).Round(time.Second), p.MinStuckDuration.Duration)
			}
			if ev.metAt.IsZero() {
				ev.metAt = since.Add(p.MinStuckDuration.Duration)
			}
			return true, why
		}
		pods := &corev1.PodList{}
		if err := r.c.List(r.ctx, pods, client.InNamespace(workloadNS), client.MatchingLabels{"app": r.workload}); err != nil {
			return false, err.Error()
		}
		stuck := map[string]bool{}
		for _, pod := range pods.Items {
			switch {
			case pod.Spec.NodeName != r.node:
			case teardown && pod.DeletionTimestamp != nil:
				stuck[pod.Name] = true
			case !teardown && pod.Status.Phase == corev1.PodPending && waiting(&pod) == "ContainerCreating":
				stuck[pod.Name] = true
			}
		}
		events := &corev1.EventList{}
		if err := r.c.List(r.ctx, events, client.InNamespace(workloadNS)); err != nil {
			return false, err.Error()
		}
		ev.events, ev.pods = nil, nil
		occurrences := int32(0)
		var first time.Time
		for _, e := range events.Items {
			if e.Reason != reason || !stuck[e.InvolvedObject.Name] {
				continue
			}
			ev.events = append(ev.events, e)
			occurrences += max(e.Count, 1)
			if t := eventFirst(e); first.IsZero() || t.Before(first) {
				first = t
			}
			ref := v1alpha1.PodReference{Namespace: e.InvolvedObject.Namespace, Name: e.InvolvedObject.Name}
			if !slices.Contains(ev.pods, ref) {
				ev.pods = append(ev.pods, ref)
			}
		}
		if len(stuck) == 0 {
			return false, "no pod of the workload stuck on " + r.node
		}
		if occurrences < p.MinOccurrences || int32(len(ev.pods)) < p.MinPods || time.Since(first) < p.MinStuckDuration.Duration {
			return false, fmt.Sprintf("%d stuck pods, %d %s events so far (thresholds: %d events, %d pods, stuck %s)",
				len(stuck), occurrences, reason, p.MinOccurrences, p.MinPods, p.MinStuckDuration.Duration)
		}
		if ev.metAt.IsZero() {
			ev.metAt = time.Now()
		}
		return true, ""
	})
	if len(ev.events) > 0 {
		r.t.Logf("stuck: %d pods on %s, e.g. %s", len(ev.pods), r.node, ev.events[0].Message)
	} else {
		r.t.Logf("node %s NotReady: %s", r.node, ev.condition)
	}
	return ev
}

// detect returns the NodeRemediation for the failure.
//
// The manager's detection controller (controllers/detection) creates it from FailedCreatePodSandBox events and
// node conditions. Until that controller is wired into the manager (cmd/manager), nobody would: then this test
// creates the NodeRemediation itself, exactly as detection does (the signature named by internal/signature from the
// real events, their parameters, the evidence), and says so. Which one applies is read from the manager's own log
// ("Starting Controller" for controller "detection"), so the suite switches to real detection the moment it lands,
// and then fails if detection does not detect.
func (r *run) detect(wantSignature string, ev evidence, nodeCondition bool) *v1alpha1.NodeRemediation {
	if r.managerRunsDetection() {
		r.detectedBy = "the manager's detection"
		var nr *v1alpha1.NodeRemediation
		r.eventually("the manager detects the failure on "+r.node, detectionTimeout, func() (bool, string) {
			list := &v1alpha1.NodeRemediationList{}
			if err := r.c.List(r.ctx, list); err != nil {
				return false, err.Error()
			}
			for i := range list.Items {
				if list.Items[i].Spec.NodeName == r.node {
					nr = &list.Items[i]
					return true, ""
				}
			}
			return false, "no NodeRemediation for " + r.node
		})
		// The creation timestamp has whole seconds; the threshold time is this test's poll: the difference is
		// good to about a second.
		r.detectionLatency = nr.CreationTimestamp.Sub(ev.metAt)
		r.t.Logf("detected by the manager as %s, %.1fs after the thresholds were met", nr.Spec.Signature, r.detectionLatency.Seconds())
		if nr.Spec.Signature != wantSignature {
			r.t.Fatalf("the manager detected %s, want %s", nr.Spec.Signature, wantSignature)
		}
		return nr
	}

	r.detectedBy = "the test, as detection would (detection is not in the manager yet)"
	nr, err := lab.RemediationAsDetection(r.node, lab.LabPolicy().Name, ev.events, ev.condition)
	if err != nil {
		r.t.Fatalf("the real failure: %v", err)
	}
	if nr.Spec.Signature != wantSignature {
		r.t.Fatalf("the real failure reads as %s, want %s (params %v)", nr.Spec.Signature, wantSignature, nr.Spec.Parameters)
	}
	if err := r.c.Create(r.ctx, nr); err != nil {
		r.t.Fatal(err)
	}
	r.t.Logf("created NodeRemediation %s (%s, parameters %v) on behalf of detection", nr.Name, nr.Spec.Signature, nr.Spec.Parameters)
	return nr
}

func (r *run) managerRunsDetection() bool {
	ok, err := theLab.ManagerRunsDetection(r.ctx)
	if err != nil {
		r.t.Fatalf("reading the manager's log: %v", err)
	}
	return ok
}

// approve waits until the NodeRemediation asks for approval, checks that nothing touched the node meanwhile, and
// approves it with the annotation a person would set.
func (r *run) approve() {
	nr := &v1alpha1.NodeRemediation{}
	r.eventually("NodeRemediation "+r.nr.Name+" waits for approval", time.Minute, func() (bool, string) {
		if err := r.c.Get(r.ctx, client.ObjectKey{Name: r.nr.Name}, nr); err != nil {
			return false, err.Error()
		}
		return nr.Status.Phase == v1alpha1.PhaseAwaitingApproval, "phase " + string(nr.Status.Phase)
	})
	// A Manual policy must hold the repair: a few seconds later it still waits, and the node is not cordoned.
	time.Sleep(3 * time.Second)
	if err := r.c.Get(r.ctx, client.ObjectKey{Name: r.nr.Name}, nr); err != nil {
		r.t.Fatal(err)
	}
	n := &corev1.Node{}
	if err := r.c.Get(r.ctx, client.ObjectKey{Name: r.node}, n); err != nil {
		r.t.Fatal(err)
	}
	if nr.Status.Phase != v1alpha1.PhaseAwaitingApproval || n.Spec.Unschedulable {
		r.t.Fatalf("under a Manual policy, before approval: phase %s, node cordoned %v", nr.Status.Phase, n.Spec.Unschedulable)
	}
	r.t.Logf("approving %s: kubectl annotate noderemediation/%s %s=true", nr.Name, nr.Name, v1alpha1.AnnotationApprove)
	if _, err := theLab.Kubectl(r.ctx, "annotate", "noderemediation/"+nr.Name, v1alpha1.AnnotationApprove+"=true"); err != nil {
		r.t.Fatal(err)
	}
}

// waitEnd follows the NodeRemediation to a terminal phase, logging each phase as it comes.
func (r *run) waitEnd() *v1alpha1.NodeRemediation {
	nr := &v1alpha1.NodeRemediation{}
	seen := ""
	r.eventually("NodeRemediation "+r.nr.Name+" ends", repairTimeout, func() (bool, string) {
		if err := r.c.Get(r.ctx, client.ObjectKey{Name: r.nr.Name}, nr); err != nil {
			return false, err.Error()
		}
		if p := string(nr.Status.Phase); p != seen {
			r.t.Logf("%6.1fs  %s: %s", time.Since(r.injected).Seconds(), p, nr.Status.Message)
			seen = p
		}
		return nr.Status.Phase.IsTerminal(), "phase " + string(nr.Status.Phase)
	})
	return nr
}

// remediationEvents are the events `kubectl events --for noderemediation/NAME` shows, oldest first.
func (r *run) remediationEvents() []corev1.Event {
	out, err := theLab.Kubectl(r.ctx, "events", "--for", "noderemediation/"+r.nr.Name, "-o", "json")
	if err != nil {
		r.t.Fatal(err)
	}
	var list corev1.EventList
	if err := json.Unmarshal(out, &list); err != nil {
		r.t.Fatalf("kubectl events -o json: %v", err)
	}
	sort.SliceStable(list.Items, func(i, j int) bool { return eventFirst(list.Items[i]).Before(eventFirst(list.Items[j])) })
	return list.Items
}

func (r *run) logStory() {
	out, err := theLab.Kubectl(r.ctx, "events", "--for", "noderemediation/"+r.nr.Name)
	if err == nil {
		r.t.Logf("kubectl events --for noderemediation/%s:\n%s", r.nr.Name, out)
	}
}

// assertReasons checks that want appears, in order, among the events' reasons.
func (r *run) assertReasons(want []string) {
	var got []string
	for _, e := range r.events {
		got = append(got, e.Reason)
	}
	i := 0
	for _, g := range got {
		if i < len(want) && g == want[i] {
			i++
		}
	}
	if i < len(want) {
		r.t.Fatalf("events of %s: want %v in this order, missing %q onwards; got %v", r.nr.Name, want, want[i], got)
	}
}

// waitWorkloadRunning waits until every replica of the workload runs and is Ready, wherever it landed.
func (r *run) waitWorkloadRunning() {
	r.eventually("the workload Running again", 2*time.Minute, func() (bool, string) {
		pods := &corev1.PodList{}
		if err := r.c.List(r.ctx, pods, client.InNamespace(workloadNS), client.MatchingLabels{"app": r.workload}); err != nil {
			return false, err.Error()
		}
		ready := 0
		var not []string
		for _, p := range pods.Items {
			if p.DeletionTimestamp == nil && p.Status.Phase == corev1.PodRunning && podReady(&p) {
				ready++
			} else {
				not = append(not, fmt.Sprintf("%s on %s: %s %s", p.Name, p.Spec.NodeName, p.Status.Phase, waiting(&p)))
			}
		}
		return ready >= 2, fmt.Sprintf("%d of 2 Running; %v", ready, not)
	})
}

// assertNodeHealthy checks what the repair must leave: the node Ready and schedulable, without cnimedic's cordon
// annotation, and able to give a new pod its network (a pod pinned to it, apart from the canary).
func (r *run) assertNodeHealthy() {
	n := &corev1.Node{}
	if err := r.c.Get(r.ctx, client.ObjectKey{Name: r.node}, n); err != nil {
		r.t.Fatal(err)
	}
	if ok, why := lab.NodeReady(n); !ok {
		r.t.Errorf("node %s after the repair: %s", r.node, why)
	}
	if n.Spec.Unschedulable {
		r.t.Errorf("node %s is still cordoned", r.node)
	}
	if v, ok := n.Annotations[v1alpha1.AnnotationCordonedBy]; ok {
		r.t.Errorf("node %s still carries %s=%s", r.node, v1alpha1.AnnotationCordonedBy, v)
	}
	probe := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: workloadNS, Name: "probe-" + r.workload},
		Spec: corev1.PodSpec{
			NodeName: r.node, TerminationGracePeriodSeconds: ptr.To(int64(1)),
			Containers: []corev1.Container{{Name: "probe", Image: lab.WorkloadImage, ImagePullPolicy: corev1.PullIfNotPresent}},
		},
	}
	if err := r.c.Create(r.ctx, probe); err != nil {
		r.t.Fatal(err)
	}
	r.eventually("a new pod on "+r.node+" gets its network", time.Minute, func() (bool, string) {
		p := &corev1.Pod{}
		if err := r.c.Get(r.ctx, client.ObjectKeyFromObject(probe), p); err != nil {
			return false, err.Error()
		}
		return p.Status.Phase == corev1.PodRunning && p.Status.PodIP != "", fmt.Sprintf("%s %s", p.Status.Phase, waiting(p))
	})
	_ = r.c.Delete(r.ctx, probe, client.GracePeriodSeconds(0))
}

// nodeFile reads a file of the node, as the node sees it.
func (r *run) nodeFile(path string) []byte {
	node, _, err := theLab.Node(r.node)
	if err != nil {
		r.t.Fatal(err)
	}
	data, err := os.ReadFile(node.RootDir() + path)
	if err != nil {
		r.t.Fatal(err)
	}
	return data
}

// dumpDiagnostics logs what a person needs to see why a scenario failed.
func (r *run) dumpDiagnostics(ctx context.Context) {
	for _, args := range [][]string{
		{"get", "noderemediations", "-o", "yaml"},
		{"get", "pods", "--all-namespaces", "-o", "wide"},
		{"get", "events", "--all-namespaces", "--sort-by=.lastTimestamp"},
		{"logs", "--namespace=" + lab.Namespace, "deployment/cnimedic-manager", "--tail=80"},
		{"logs", "--namespace=" + lab.Namespace, "--selector=app.kubernetes.io/component=executor", "--tail=80"},
	} {
		out, _ := theLab.Kubectl(ctx, args...)
		r.t.Logf("kubectl %s:\n%s", strings.Join(args, " "), out)
	}
	if node, _, err := theLab.Node(r.node); err == nil {
		out, _ := node.Run(ctx, "journalctl", "--no-pager", "-n", "60", "-u", "kubelet", "-u", "containerd", "-u", lab.K3sUnit, "-u", "cnimedic-run-*")
		r.t.Logf("journal of %s:\n%s", r.node, out)
	}
}

// eventually polls cond every 250 ms until it holds or timeout passes, then fails with cond's last word.
func (r *run) eventually(what string, timeout time.Duration, cond func() (bool, string)) {
	r.t.Helper()
	deadline := time.Now().Add(timeout)
	last := ""
	for {
		ok, why := cond()
		if ok {
			return
		}
		last = why
		if time.Now().After(deadline) || r.ctx.Err() != nil {
			r.t.Fatalf("%s: not after %s: %s", what, timeout, last)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

func waiting(p *corev1.Pod) string {
	for _, cs := range p.Status.ContainerStatuses {
		if cs.State.Waiting != nil {
			return cs.State.Waiting.Reason
		}
	}
	if p.Status.Phase == corev1.PodPending && len(p.Status.ContainerStatuses) == 0 && p.Spec.NodeName != "" {
		// kubelet reports ContainerCreating only once it got the sandbox; before that the pod has no statuses.
		return "ContainerCreating"
	}
	return ""
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func readySince(n *corev1.Node) time.Time {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.LastTransitionTime.Time
		}
	}
	return time.Now()
}

func notReadyMessage(n *corev1.Node) string {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady && c.Status != corev1.ConditionTrue {
			return c.Message
		}
	}
	return ""
}

func eventFirst(e corev1.Event) time.Time { return lab.EventFirst(e) }
