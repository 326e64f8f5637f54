//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	sdbus "github.com/coreos/go-systemd/v22/dbus"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
	"github.com/cnimedic/cnimedic/e2e/lab"
	"github.com/cnimedic/cnimedic/test/nspawn"
)

// Dry run: the whole workflow up to the executor's preview, and nothing changes: the node is never cordoned, the
// conflist stays broken, the pods stay stuck.
func TestDryRunChangesNothing(t *testing.T) {
	scenario{
		fault:       lab.FaultCNIVersionNewer,
		policy:      func(p *v1alpha1.RemediationPolicy) { p.Spec.DryRun = true },
		wantPhase:   v1alpha1.PhaseSucceeded,
		unrepaired:  true,
		wantReasons: []string{"Detected", "AwaitingApproval", "Approved", "Draining", "DryRun", "ExecutorStarted", "DryRun"},
		check: func(t *testing.T, r *run) {
			if r.nr.Status.Reason != "DryRun" {
				t.Errorf("dry run ended with reason %s: %s", r.nr.Status.Reason, r.nr.Status.Message)
			}
			for _, e := range r.events {
				if e.Reason == "Cordoned" || e.Reason == "Repaired" {
					t.Errorf("a dry run emitted %s: %s", e.Reason, e.Message)
				}
			}
			n := &corev1.Node{}
			if err := r.c.Get(r.ctx, client.ObjectKey{Name: r.node}, n); err != nil {
				t.Fatal(err)
			}
			if n.Spec.Unschedulable {
				t.Error("a dry run cordoned the node")
			}
			if v := conflistVersion(t, r); v != "1.1.0" {
				t.Errorf("a dry run changed the conflist's cniVersion to %q", v)
			}
			if !strings.Contains(r.nr.Status.Message, "would") {
				t.Errorf("the dry run does not say what it would do: %s", r.nr.Status.Message)
			}
		},
	}.run(t)
}

// A repair whose verification fails is rolled back: the canary cannot start (its image does not exist, so no pod
// gets past image pull), the executor undoes its change, the node stays cordoned for a person.
func TestVerificationFailureRollsBack(t *testing.T) {
	scenario{
		fault: lab.FaultCNIVersionNewer,
		policy: func(p *v1alpha1.RemediationPolicy) {
			p.Spec.Verification.CanaryImage = "cnimedic.local/no-such-image:dev"
			p.Spec.Verification.Timeout = &metav1.Duration{Duration: 20 * time.Second}
		},
		wantPhase:   v1alpha1.PhaseRolledBack,
		unrepaired:  true,
		wantReasons: []string{"Detected", "Approved", "Cordoned", "Drained", "ExecutorStarted", "Repaired", "Verifying", "VerificationFailed", "RollingBack", "RolledBack"},
		check: func(t *testing.T, r *run) {
			if v := conflistVersion(t, r); v != "1.1.0" {
				t.Errorf("after the rollback the conflist's cniVersion is %q, want the original 1.1.0 back", v)
			}
			n := &corev1.Node{}
			if err := r.c.Get(r.ctx, client.ObjectKey{Name: r.node}, n); err != nil {
				t.Fatal(err)
			}
			if !n.Spec.Unschedulable {
				t.Error("a rolled-back node must stay cordoned for a person to look at")
			}
			assertUnitsActive(t, r)
		},
	}.run(t)
}

// The executor's host-side run is SIGKILLed in the middle of its sequence, right after it stopped containerd: the
// node still ends with kubelet and containerd running, and its conflist either repaired or as it was.
func TestExecutorKilledMidSequence(t *testing.T) {
	scenario{
		fault:      lab.FaultCNIVersionNewer,
		unrepaired: true,
		during: func(t *testing.T, r *run) {
			node, _, err := theLab.Node(r.node)
			if err != nil {
				t.Fatal(err)
			}
			log := filepath.Join(node.RootDir(), "var/lib/cnimedic/journal", r.nr.Name, "log.jsonl")
			r.eventually("the run stopped containerd", 2*time.Minute, func() (bool, string) {
				data, _ := os.ReadFile(log)
				for _, line := range bytes.Split(data, []byte("\n")) {
					if bytes.Contains(line, []byte(`"kind":"unit-stopped"`)) && bytes.Contains(line, []byte("containerd.service")) {
						return true, ""
					}
				}
				return false, fmt.Sprintf("%d bytes of journal", len(data))
			})
			ctx, cancel := context.WithTimeout(r.ctx, 30*time.Second)
			defer cancel()
			conn, err := node.Systemd(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			unit := "cnimedic-run-" + r.nr.Name + ".service"
			if err := conn.KillUnitWithTarget(ctx, unit, sdbus.Main, 9); err != nil {
				t.Fatalf("SIGKILL %s: %v", unit, err)
			}
			t.Logf("SIGKILLed the main process of %s on %s", unit, r.node)
		},
		check: func(t *testing.T, r *run) {
			t.Logf("after the kill the remediation ended %s: %s", r.nr.Status.Phase, r.nr.Status.Message)
			assertUnitsActive(t, r)
			if v := conflistVersion(t, r); v != "1.0.0" && v != "1.1.0" {
				t.Errorf("conflist cniVersion %q: neither repaired (1.0.0) nor as it was (1.1.0)", v)
			}
			r.eventually("node "+r.node+" Ready", 2*time.Minute, func() (bool, string) {
				n := &corev1.Node{}
				if err := r.c.Get(r.ctx, client.ObjectKey{Name: r.node}, n); err != nil {
					return false, err.Error()
				}
				return lab.NodeReady(n)
			})
		},
	}.run(t)
}

// assertUnitsActive checks that the node's containerd and kubelet run.
func assertUnitsActive(t *testing.T, r *run) {
	t.Helper()
	node, _, err := theLab.Node(r.node)
	if err != nil {
		t.Fatal(err)
	}
	r.eventually("containerd and kubelet active on "+r.node, time.Minute, func() (bool, string) {
		return unitsActive(r.ctx, node, "containerd.service", "kubelet.service")
	})
}

func unitsActive(ctx context.Context, node *nspawn.Node, units ...string) (bool, string) {
	conn, err := node.Systemd(ctx)
	if err != nil {
		return false, err.Error()
	}
	defer conn.Close()
	for _, u := range units {
		p, err := conn.GetUnitPropertyContext(ctx, u, "ActiveState")
		if err != nil {
			return false, err.Error()
		}
		if st := strings.Trim(p.Value.String(), `"`); st != "active" {
			return false, u + " is " + st
		}
	}
	return true, ""
}

// twoNodeSetup breaks the two kubeadm-style workers with the same fault and returns a run per node, with one
// workload pinned to each node (required, so the pods stay on their node's failure). The k3s-layout worker stays
// healthy: two broken nodes of three are under the default storm's minNodes (3), as the tests of two nodes expect.
func twoNodeSetup(t *testing.T, fault lab.Fault, policy func(*v1alpha1.RemediationPolicy)) (client.Client, []string) {
	t.Helper()
	ctx := context.Background()
	c, err := theLab.Client()
	if err != nil {
		t.Fatal(err)
	}
	var nodes []string
	for _, n := range theLab.Config().Nodes() {
		if n.Layout != "" {
			continue
		}
		nodes = append(nodes, n.Name)
		r := &run{t: t, ctx: ctx, c: c, node: n.Name}
		r.cleanSlate()
	}
	p := lab.LabPolicy()
	policy(p)
	if _, err := theLab.ApplyPolicy(ctx, p); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cctx := context.Background()
		if t.Failed() {
			(&run{t: t, c: c, node: nodes[0]}).dumpDiagnostics(cctx)
		}
		_ = c.DeleteAllOf(cctx, &appsv1.Deployment{}, client.InNamespace(workloadNS))
		_ = c.DeleteAllOf(cctx, &v1alpha1.NodeRemediation{})
		for _, n := range nodes {
			if err := theLab.Reset(cctx, n); err != nil {
				t.Errorf("reset %s: %v", n, err)
			}
		}
		// The policy is deleted and applied afresh: a storm lives in its status until its cooldown (the lab
		// policy's default, 30 minutes) has passed since the evidence last grew, and would hold every later test.
		if err := c.Delete(cctx, &v1alpha1.RemediationPolicy{ObjectMeta: metav1.ObjectMeta{Name: lab.LabPolicy().Name}}); err != nil {
			t.Errorf("deleting the policy: %v", err)
		}
		r := &run{t: t, ctx: cctx, c: c}
		r.eventually("the policy deleted", time.Minute, func() (bool, string) {
			err := c.Get(cctx, client.ObjectKey{Name: lab.LabPolicy().Name}, &v1alpha1.RemediationPolicy{})
			return apierrors.IsNotFound(err), fmt.Sprint(err)
		})
		if _, err := theLab.ApplyPolicy(cctx, lab.LabPolicy()); err != nil {
			t.Errorf("putting the lab policy back: %v", err)
		}
	})
	for _, n := range nodes {
		if err := theLab.Inject(ctx, n, fault); err != nil {
			t.Fatal(err)
		}
		labels := map[string]string{"app": "pinned-" + n}
		d := &appsv1.Deployment{
			ObjectMeta: metav1.ObjectMeta{Namespace: workloadNS, Name: "pinned-" + n},
			Spec: appsv1.DeploymentSpec{
				Replicas: ptr.To(int32(2)),
				Selector: &metav1.LabelSelector{MatchLabels: labels},
				Template: corev1.PodTemplateSpec{
					ObjectMeta: metav1.ObjectMeta{Labels: labels},
					Spec: corev1.PodSpec{
						NodeSelector:                  map[string]string{"kubernetes.io/hostname": n},
						TerminationGracePeriodSeconds: ptr.To(int64(1)),
						Containers:                    []corev1.Container{{Name: "web", Image: lab.WorkloadImage, ImagePullPolicy: corev1.PullIfNotPresent}},
					},
				},
			},
		}
		if err := c.Create(ctx, d); err != nil {
			t.Fatal(err)
		}
	}
	return c, nodes
}

// Two broken nodes under maxConcurrent 1 (and no storm: the lab policy's storm needs 3 nodes): both are repaired,
// one after the other, never both held at once.
func TestTwoBrokenNodesOneAtATime(t *testing.T) {
	if ok, err := theLab.ManagerRunsDetection(context.Background()); err != nil || !ok {
		t.Fatalf("this scenario needs the manager's detection controller (running: %v, %v)", ok, err)
	}
	c, nodes := twoNodeSetup(t, lab.FaultCNIVersionNewer, func(*v1alpha1.RemediationPolicy) {})
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	start := time.Now()
	maxHeld := 0
	for {
		list := &v1alpha1.NodeRemediationList{}
		if err := c.List(ctx, list); err != nil {
			t.Fatal(err)
		}
		held, succeeded := 0, map[string]bool{}
		for _, nr := range list.Items {
			if nr.Status.Phase.HoldsNode() {
				held++
			}
			if nr.Status.Phase == v1alpha1.PhaseSucceeded {
				succeeded[nr.Spec.NodeName] = true
			}
			if nr.Status.Phase.IsTerminal() && nr.Status.Phase != v1alpha1.PhaseSucceeded {
				t.Fatalf("%s ended %s: %s", nr.Name, nr.Status.Phase, nr.Status.Message)
			}
		}
		cordoned := 0
		for _, n := range nodes {
			node := &corev1.Node{}
			if err := c.Get(ctx, client.ObjectKey{Name: n}, node); err != nil {
				t.Fatal(err)
			}
			if node.Spec.Unschedulable {
				cordoned++
			}
		}
		maxHeld = max(maxHeld, held, cordoned)
		if held > 1 || cordoned > 1 {
			t.Fatalf("maxConcurrent 1 broken: %d remediations hold a node, %d nodes cordoned", held, cordoned)
		}
		if len(succeeded) == len(nodes) {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("not every node repaired: %v", succeeded)
		}
		time.Sleep(100 * time.Millisecond)
	}
	mttrs = append(mttrs, fmt.Sprintf("%-52s %-26s MTTR %5.1fs for both nodes, one at a time", t.Name(), "cni-version-incompatible", time.Since(start).Seconds()))
	t.Logf("both nodes repaired one at a time in %.1fs (at most %d held at once)", time.Since(start).Seconds(), maxHeld)
}

// A pod no controller recreates blocks the drain (kubectl's default without --force): the block is reported at
// once, naming the annotation that allows it, and once an approver sets that annotation the drain evicts the pod
// and the repair goes on (issue 17: it used to stall silently for the ten-minute drain timeout).
func TestAPodWithoutAControllerIsReportedAtOnceAndEvictedOnceAllowed(t *testing.T) {
	bare := &corev1.Pod{}
	scenario{
		fault:       lab.FaultCNIVersionNewer,
		wantPhase:   v1alpha1.PhaseSucceeded,
		wantReasons: []string{"Detected", "Diagnosing", "Approved", "Cordoned", "DrainBlocked", "Drained", "Repaired", "Succeeded"},
		setup: func(t *testing.T, r *run) {
			bare = &corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{Name: "bare", Namespace: workloadNS},
				Spec: corev1.PodSpec{NodeName: r.node, TerminationGracePeriodSeconds: ptr.To(int64(1)),
					Containers: []corev1.Container{{Name: "bare", Image: lab.WorkloadImage, ImagePullPolicy: corev1.PullIfNotPresent}}},
			}
			if err := r.c.Create(r.ctx, bare); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = r.c.Delete(context.Background(), bare, client.GracePeriodSeconds(0)) })
			r.eventually("the pod without a controller runs", time.Minute, func() (bool, string) {
				if err := r.c.Get(r.ctx, client.ObjectKeyFromObject(bare), bare); err != nil {
					return false, err.Error()
				}
				return bare.Status.Phase == corev1.PodRunning, "phase " + string(bare.Status.Phase)
			})
		},
		during: func(t *testing.T, r *run) {
			nr := &v1alpha1.NodeRemediation{}
			// Well before drain.timeout (2m in the lab policy): the block is said at once.
			r.eventually("the drain reports the pod without a controller", 45*time.Second, func() (bool, string) {
				if err := r.c.Get(r.ctx, client.ObjectKey{Name: r.nr.Name}, nr); err != nil {
					return false, err.Error()
				}
				d := nr.Status.Drain
				return d != nil && strings.Contains(d.BlockedBy, "declare no controller") && strings.Contains(d.BlockedBy, v1alpha1.AnnotationEvictUnmanagedPods),
					fmt.Sprintf("phase %s drain %+v", nr.Status.Phase, d)
			})
			patch := fmt.Sprintf(`{"metadata":{"annotations":{%q:"true"}}}`, v1alpha1.AnnotationEvictUnmanagedPods)
			if err := r.c.Patch(r.ctx, nr, client.RawPatch("application/merge-patch+json", []byte(patch))); err != nil {
				t.Fatal(err)
			}
		},
		check: func(t *testing.T, r *run) {
			if err := r.c.Get(r.ctx, client.ObjectKeyFromObject(bare), bare); err == nil && bare.DeletionTimestamp == nil {
				t.Error("the pod without a controller was not evicted once allowed")
			}
		},
	}.run(t)
}
