//go:build bench

package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
)

// TestFleet repairs 50 nodes broken the same way at once under maxConcurrent 5 and automatic approval (issue 8,
// item 4), with the real manager binary, detection included: the test plays every kubelet (failing sandbox events
// while a node is broken, the executor pod's run and result, the canary pod) through the API, as the workflow
// suites do. Asserted: never more than 5 nodes held (Draining, Repairing, Verifying) or cordoned at once, and every
// node repaired once. Reported: the total time against 11 × the single-node time measured in the same run (one node
// alone before the fleet and one after).
//
// The storm rule would hold a cluster-wide failure of 50 nodes (thresholdPercent 25, minNodes 3): the policy here
// sets storm.thresholdPercent to 100, so that the fleet is repaired node by node.
//
// BENCH_FLEET_NODES (50), BENCH_FLEET_MAX_CONCURRENT (5), BENCH_EXECUTOR_SECONDS (5), BENCH_CANARY_SECONDS (2).
func TestFleet(t *testing.T) {
	fleet := envInt(t, "BENCH_FLEET_NODES", 50)
	maxConc := envInt(t, "BENCH_FLEET_MAX_CONCURRENT", 5)
	execTime := time.Duration(envInt(t, "BENCH_EXECUTOR_SECONDS", 5)) * time.Second
	canaryTime := time.Duration(envInt(t, "BENCH_CANARY_SECONDS", 2)) * time.Second
	sec := newSection(t, "4-fleet", "Fleet repair (real cmd/manager binary, envtest API server, kubelets played by the test)")
	ctx := context.Background()
	cp, err := StartControlPlane(ControlPlaneOptions{Name: "fleet"})
	if err != nil {
		t.Fatal(err)
	}
	defer cp.Stop()
	if err := cp.CreateNamespaces(ctx); err != nil {
		t.Fatal(err)
	}
	total := fleet + 2 // node 0 alone before, nodes 1..fleet together, node fleet+1 alone after
	labels := map[string]string{"bench/fleet": "yes"}
	if err := cp.CreateNodes(ctx, "fleet", 0, total, labels); err != nil {
		t.Fatal(err)
	}
	p := &v1alpha1.RemediationPolicy{ObjectMeta: metav1.ObjectMeta{Name: "fleet"}}
	p.Spec.NodeSelector = &metav1.LabelSelector{MatchLabels: labels}
	p.Spec.Approval.Mode = v1alpha1.ApprovalAutomatic
	p.Spec.MaxConcurrent = ptr.To(intstr.FromInt32(int32(maxConc)))
	p.Spec.Storm.ThresholdPercent = 100
	p.Spec.Detection.MinStuckDuration = &metav1.Duration{}
	p.Spec.Detection.BootGracePeriod = &metav1.Duration{}
	// The workload's pods have an emptyDir (a cache), as many do: drain refuses them unless allowed.
	p.Spec.Drain.DeleteEmptyDirData = true
	if err := cp.Client.Create(ctx, p); err != nil {
		t.Fatal(err)
	}

	k := newFleetKubelet(cp, execTime, canaryTime)
	kctx, stopKubelet := context.WithCancel(ctx)
	defer stopKubelet()
	go k.run(kctx, t)

	// The observer: every state of every remediation and node, in order.
	obs := newFleetObserver()
	nrEvents, err := cp.Watch(kctx, &v1alpha1.NodeRemediationList{})
	if err != nil {
		t.Fatal(err)
	}
	nodeEvents, err := cp.Watch(kctx, &corev1.NodeList{}, client.MatchingLabels(labels))
	if err != nil {
		t.Fatal(err)
	}
	go obs.watchRemediations(nrEvents)
	go obs.watchNodes(nodeEvents)

	m, err := cp.StartManager(ctx, "fleet")
	if err != nil {
		t.Fatal(err)
	}
	defer m.Stop()

	repair := func(nodes []int) (time.Duration, error) {
		start := time.Now()
		var wg sync.WaitGroup
		errs := make(chan error, len(nodes))
		for _, i := range nodes {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := k.breakNode(kctx, NodeName("fleet", i), i); err != nil {
					errs <- err
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			return 0, err
		}
		deadline := time.Now().Add(15 * time.Minute)
		for {
			done := 0
			for _, i := range nodes {
				if end, ok := obs.ended(NodeName("fleet", i)); ok {
					if end.phase != v1alpha1.PhaseSucceeded {
						return 0, fmt.Errorf("node %s's remediation ended %s: %s", NodeName("fleet", i), end.phase, end.message)
					}
					done++
				}
			}
			if done == len(nodes) {
				last := start
				for _, i := range nodes {
					end, _ := obs.ended(NodeName("fleet", i))
					if end.at.After(last) {
						last = end.at
					}
				}
				return last.Sub(start), nil
			}
			if time.Now().After(deadline) {
				list := &v1alpha1.NodeRemediationList{}
				_ = cp.Client.List(ctx, list)
				phases := map[string]int{}
				for _, nr := range list.Items {
					phases[string(nr.Status.Phase)+": "+nr.Status.Message]++
				}
				return 0, fmt.Errorf("%d of %d nodes repaired after 15 minutes (manager log %s); remediations: %v", done, len(nodes), m.Log, phases)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}

	single1, err := repair([]int{0})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("one node alone: %s", single1)
	var all []int
	for i := 1; i <= fleet; i++ {
		all = append(all, i)
	}
	fleetTime, err := repair(all)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d nodes: %s", fleet, fleetTime)
	single2, err := repair([]int{fleet + 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("one node alone, after: %s", single2)

	maxHeld, maxCordoned, violations := obs.peaks(maxConc)
	for _, v := range violations {
		t.Errorf("safety: %s", v)
	}
	for i := range total {
		if n := obs.count(NodeName("fleet", i)); n != 1 {
			t.Errorf("node %s had %d NodeRemediations, want 1", NodeName("fleet", i), n)
		}
	}
	if n := k.executorRuns(); n != total {
		t.Errorf("%d executor pods ran for %d nodes", n, total)
	}
	single := (single1 + single2) / 2
	sec.Add(AtMost(fmt.Sprintf("%d nodes repaired, total time", fleet), fleetTime.Seconds(), "s", 11*single.Seconds()).
		Against("one node alone (mean of before and after)", single.Seconds()).
		With(fmt.Sprintf("target: within 11 × the single-node time of this run = %.1f s; ratio %.2f", 11*single.Seconds(), fleetTime.Seconds()/single.Seconds())))
	sec.Add(Info("one node alone, before the fleet", single1.Seconds(), "s"))
	sec.Add(Info("one node alone, after the fleet", single2.Seconds(), "s"))
	sec.Add(AtMost("most remediations holding a node at once (Draining/Repairing/Verifying)", float64(maxHeld), "nodes", float64(maxConc)).
		With("asserted by the test on every state a watch saw"))
	sec.Add(AtMost("most nodes cordoned at once", float64(maxCordoned), "nodes", float64(maxConc)).With("asserted by the test"))
	sec.Notef("policy: nodeSelector bench/fleet=yes (%d nodes), approval Automatic, maxConcurrent %d, storm.thresholdPercent 100 "+
		"(the default 25 would declare a storm and hold all %d), detection minStuckDuration 0 and bootGracePeriod 0, drain.deleteEmptyDirData "+
		"(the workload's pods have an emptyDir), canary verification on; everything else defaulted by the CRD", total, maxConc, fleet)
	sec.Notef("each broken node: 2 stuck pods owned by a ReplicaSet, FailedCreatePodSandBox events (cni-version-incompatible) until the executor "+
		"reports; the executor pod reports Succeeded %s after it is created (its result in the termination message, as the real one), the canary "+
		"pod runs %s after it is created; evicted pods are torn down when the node is repaired", execTime, canaryTime)
	sec.Notef("time = from the first failure event to the NodeRemediation's Succeeded (the last one's, for the fleet), seen by a watch; " +
		"detection, approval, admission, cordon, drain (eviction API), executor, canary, uncordon all included")
	sec.Notef("load average at the end: %s", LoadAverage())
}

// fleetKubelet plays the kubelets of the fleet's nodes.
type fleetKubelet struct {
	cp               *ControlPlane
	execTime, canary time.Duration
	mu               sync.Mutex
	broken           map[string]bool
	handled          map[string]bool // executor and canary pods already answered
	executors        int
	podsOf           map[string][]*corev1.Pod
}

func newFleetKubelet(cp *ControlPlane, execTime, canary time.Duration) *fleetKubelet {
	return &fleetKubelet{cp: cp, execTime: execTime, canary: canary, broken: map[string]bool{}, handled: map[string]bool{},
		podsOf: map[string][]*corev1.Pod{}}
}

func (k *fleetKubelet) isBroken(node string) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.broken[node]
}

func (k *fleetKubelet) executorRuns() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.executors
}

// breakNode makes the node's CNI fail: two pods scheduled there stay Pending and each sandbox attempt posts an
// event, until the executor repairs the node.
func (k *fleetKubelet) breakNode(ctx context.Context, node string, i int) error {
	var pods []*corev1.Pod
	for j := range 2 {
		pod, err := k.cp.CreateStuckPod(ctx, PodNamespace(i*2+j), fmt.Sprintf("%s-wl-%d", node, j), node, i*2+j)
		if err != nil {
			return err
		}
		pods = append(pods, pod)
	}
	k.mu.Lock()
	k.broken[node] = true
	k.podsOf[node] = pods
	k.mu.Unlock()
	go func() {
		// kubelet retries each pod's sandbox with a back-off: a new event per attempt (fresh sandbox id).
		for attempt := 0; ctx.Err() == nil && k.isBroken(node); attempt++ {
			for _, pod := range pods {
				_, _, _ = k.cp.SandboxEvent(ctx, pod, fmt.Sprintf("%s-%d", pod.Name, attempt))
			}
			time.Sleep(time.Duration(min(1<<attempt, 10)) * time.Second / 2)
		}
	}()
	return nil
}

// run answers executor and canary pods: an executor reports Succeeded execTime after it was created (the node is
// then repaired: its failing pods are torn down and no more events come), a canary runs canary after it was created.
func (k *fleetKubelet) run(ctx context.Context, t *testing.T) {
	for ctx.Err() == nil {
		list, err := k.cp.Kube.CoreV1().Pods(Namespace).List(ctx, metav1.ListOptions{LabelSelector: v1alpha1.LabelRemediation})
		if err == nil {
			for i := range list.Items {
				pod := &list.Items[i]
				k.mu.Lock()
				done := k.handled[string(pod.UID)]
				k.mu.Unlock()
				if done || pod.DeletionTimestamp != nil {
					continue
				}
				age := time.Since(pod.CreationTimestamp.Time)
				switch pod.Labels[v1alpha1.LabelComponent] {
				case "executor":
					if age < k.execTime {
						continue
					}
					k.mu.Lock()
					k.handled[string(pod.UID)] = true
					k.executors++
					k.mu.Unlock()
					go k.finishExecutor(ctx, t, pod.DeepCopy())
				case "diagnosis":
					// The node's read-only diagnosis confirms the failure at once.
					k.mu.Lock()
					k.handled[string(pod.UID)] = true
					k.mu.Unlock()
					go k.finishDiagnosis(ctx, t, pod.DeepCopy())
				case "canary":
					if age < k.canary {
						continue
					}
					k.mu.Lock()
					k.handled[string(pod.UID)] = true
					k.mu.Unlock()
					go func() {
						p := pod.DeepCopy()
						p.Status.Phase = corev1.PodRunning
						p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}
						if _, err := k.cp.Kube.CoreV1().Pods(Namespace).UpdateStatus(ctx, p, metav1.UpdateOptions{}); err != nil && ctx.Err() == nil {
							t.Errorf("canary %s: %v", p.Name, err)
						}
					}()
				}
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// finishDiagnosis ends a diagnosis pod with a finding that confirms the bench's failure.
func (k *fleetKubelet) finishDiagnosis(ctx context.Context, t *testing.T, pod *corev1.Pod) {
	res := v1alpha1.ExecutorResult{RemediationID: pod.Labels[v1alpha1.LabelRemediation], Outcome: v1alpha1.OutcomeNoChange,
		Message: "the diagnosis found 1 error(s)", Findings: []v1alpha1.Finding{{Severity: v1alpha1.SeverityError,
			Signature: v1alpha1.SignatureCNIVersionIncompatible, Summary: "the conflist asks for a version its plugins do not support"}}}
	raw, _ := json.Marshal(res)
	pod.Status.Phase = corev1.PodSucceeded
	for _, c := range pod.Spec.Containers {
		pod.Status.ContainerStatuses = append(pod.Status.ContainerStatuses, corev1.ContainerStatus{Name: c.Name, Image: c.Image,
			State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 0, Reason: "Completed", Message: string(raw)}}})
	}
	if _, err := k.cp.Kube.CoreV1().Pods(Namespace).UpdateStatus(ctx, pod, metav1.UpdateOptions{}); err != nil && ctx.Err() == nil {
		t.Errorf("diagnosis %s: %v", pod.Name, err)
	}
}

func (k *fleetKubelet) finishExecutor(ctx context.Context, t *testing.T, pod *corev1.Pod) {
	node := pod.Spec.NodeName
	// The repair: the node's CNI works again, kubelet tears the stuck pods down (no more sandbox failures).
	k.mu.Lock()
	k.broken[node] = false
	pods := k.podsOf[node]
	k.mu.Unlock()
	for _, p := range pods {
		_ = k.cp.Kube.CoreV1().Pods(p.Namespace).Delete(ctx, p.Name, metav1.DeleteOptions{GracePeriodSeconds: ptr.To(int64(0))})
	}
	res := v1alpha1.ExecutorResult{RemediationID: pod.Labels[v1alpha1.LabelRemediation], Outcome: v1alpha1.OutcomeSucceeded,
		Message: "set cniVersion 0.4.0 in /etc/cni/net.d/10-bridge.conflist",
		Changes: []v1alpha1.FileChange{{Path: "/etc/cni/net.d/10-bridge.conflist", Backup: "/var/lib/cnimedic/journal/x/1"}}}
	raw, _ := json.Marshal(res)
	pod.Status.Phase = corev1.PodSucceeded
	for _, c := range pod.Spec.Containers {
		st := corev1.ContainerStatus{Name: c.Name, Image: c.Image,
			State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 0, Reason: "Completed"}}}
		if c.Name == "executor" {
			st.State.Terminated.Message = string(raw)
		}
		pod.Status.ContainerStatuses = append(pod.Status.ContainerStatuses, st)
	}
	if _, err := k.cp.Kube.CoreV1().Pods(Namespace).UpdateStatus(ctx, pod, metav1.UpdateOptions{}); err != nil && ctx.Err() == nil {
		t.Errorf("executor %s: %v", pod.Name, err)
	}
}

// fleetObserver follows every remediation and node state through watches.
type fleetObserver struct {
	mu       sync.Mutex
	held     map[string]bool // remediation -> holds a node
	cordoned map[string]bool // node -> unschedulable
	maxHeld  int
	maxCord  int
	ends     map[string]fleetEnd // node -> how its remediation ended
	perNode  map[string]map[string]bool
}

type fleetEnd struct {
	phase   v1alpha1.Phase
	message string
	at      time.Time
}

func newFleetObserver() *fleetObserver {
	return &fleetObserver{held: map[string]bool{}, cordoned: map[string]bool{}, ends: map[string]fleetEnd{}, perNode: map[string]map[string]bool{}}
}

func (o *fleetObserver) watchRemediations(events <-chan watch.Event) {
	for ev := range events {
		nr, ok := ev.Object.(*v1alpha1.NodeRemediation)
		if !ok {
			continue
		}
		now := time.Now()
		o.mu.Lock()
		if o.perNode[nr.Spec.NodeName] == nil {
			o.perNode[nr.Spec.NodeName] = map[string]bool{}
		}
		o.perNode[nr.Spec.NodeName][nr.Name] = true
		o.held[nr.Name] = ev.Type != watch.Deleted && nr.Status.Phase.HoldsNode()
		if n := countTrue(o.held); n > o.maxHeld {
			o.maxHeld = n
		}
		if nr.Status.Phase.IsTerminal() {
			if _, ok := o.ends[nr.Spec.NodeName]; !ok {
				o.ends[nr.Spec.NodeName] = fleetEnd{phase: nr.Status.Phase, message: nr.Status.Message, at: now}
			}
		}
		o.mu.Unlock()
	}
}

func (o *fleetObserver) watchNodes(events <-chan watch.Event) {
	for ev := range events {
		n, ok := ev.Object.(*corev1.Node)
		if !ok {
			continue
		}
		o.mu.Lock()
		o.cordoned[n.Name] = ev.Type != watch.Deleted && n.Spec.Unschedulable
		if c := countTrue(o.cordoned); c > o.maxCord {
			o.maxCord = c
		}
		o.mu.Unlock()
	}
}

func (o *fleetObserver) ended(node string) (fleetEnd, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	e, ok := o.ends[node]
	return e, ok
}

func (o *fleetObserver) count(node string) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.perNode[node])
}

func (o *fleetObserver) peaks(limit int) (held, cordoned int, violations []string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.maxHeld > limit {
		violations = append(violations, fmt.Sprintf("%d remediations held a node at once; maxConcurrent is %d", o.maxHeld, limit))
	}
	if o.maxCord > limit {
		violations = append(violations, fmt.Sprintf("%d nodes were cordoned at once; maxConcurrent is %d", o.maxCord, limit))
	}
	return o.maxHeld, o.maxCord, violations
}

func countTrue(m map[string]bool) int {
	n := 0
	for _, v := range m {
		if v {
			n++
		}
	}
	return n
}
