//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
	"github.com/cnimedic/cnimedic/e2e/lab"
)

// untouched watches a node while a remediation runs, for what an escalation must never do: cordon it, or start a
// repair (executor) pod on it. The read-only diagnosis pod is allowed.
type untouched struct {
	mu       sync.Mutex
	cordoned []string
	repairs  []string
	polls    int
	stop     context.CancelFunc
	done     chan struct{}
}

func watchUntouched(r *run) *untouched {
	ctx, cancel := context.WithCancel(r.ctx)
	u := &untouched{stop: cancel, done: make(chan struct{})}
	go func() {
		defer close(u.done)
		for ctx.Err() == nil {
			n := &corev1.Node{}
			pods := &corev1.PodList{}
			errN := r.c.Get(ctx, client.ObjectKey{Name: r.node}, n)
			errP := r.c.List(ctx, pods, client.InNamespace(lab.Namespace), client.MatchingLabels{v1alpha1.LabelComponent: "executor", v1alpha1.LabelNode: r.node})
			u.mu.Lock()
			if errN == nil && errP == nil {
				u.polls++
			}
			if errN == nil && (n.Spec.Unschedulable || n.Annotations[v1alpha1.AnnotationCordonedBy] != "") {
				u.cordoned = append(u.cordoned, time.Now().Format(time.TimeOnly))
			}
			for _, p := range pods.Items {
				u.repairs = append(u.repairs, p.Name)
			}
			u.mu.Unlock()
			time.Sleep(250 * time.Millisecond)
		}
	}()
	return u
}

func (u *untouched) check(t *testing.T) {
	t.Helper()
	u.stop()
	<-u.done
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.polls == 0 {
		t.Fatal("the node and its pods were never read while the remediation ran")
	}
	if len(u.cordoned) > 0 {
		t.Errorf("the node was cordoned at %v", u.cordoned)
	}
	if len(u.repairs) > 0 {
		t.Errorf("executor (repair) pods ran on the node: %v", u.repairs)
	}
}

// A failure whose wording no signature names: host-local IPAM without "subnet" or "ranges" makes the real plugins
// fail every pod with `no IP ranges specified`. Detection opens it as the cni-unclassified family on kubelet's
// word, the node's read-only diagnosis finds the cause in the loaded conflist (only the CNI provider may write the
// pod subnet), and the remediation ends Escalated with those findings: never cordoned, no repair pod, the conflist
// left as the fault wrote it.
func TestAFailureNoSignatureNamesIsDiagnosedAndEscalatedWithTheNodesFindings(t *testing.T) {
	var watch *untouched
	scenario{
		fault:       lab.FaultIPAMNoRanges,
		wantPhase:   v1alpha1.PhaseEscalated,
		unrepaired:  true,
		wantReasons: []string{"Detected", "Diagnosing", "NoNodeRepair"},
		during:      func(t *testing.T, r *run) { watch = watchUntouched(r) },
		check: func(t *testing.T, r *run) {
			watch.check(t)
			for _, e := range r.stuckEvents() {
				if !strings.Contains(e, "no IP ranges specified") {
					t.Errorf("a sandbox failure of the workload does not carry the real plugin's words: %s", e)
				}
			}
			if r.nr.Spec.Signature != string(v1alpha1.SignatureCNIUnclassified) {
				t.Errorf("opened as %s, want the family %s", r.nr.Spec.Signature, v1alpha1.SignatureCNIUnclassified)
			}
			d := r.nr.Status.Diagnosis
			if d == nil {
				t.Fatal("no status.diagnosis")
			}
			var found bool
			var all []string
			for _, f := range d.Findings {
				all = append(all, fmt.Sprintf("%s %s %s (fix %s): %s", f.Severity, f.Signature, f.Path, f.Fix, f.Summary))
				if f.Severity == v1alpha1.SeverityError && f.Signature == v1alpha1.SignatureConfigInvalid &&
					f.Path == lab.NodeConfList && f.Fix == v1alpha1.ActionEscalate &&
					strings.Contains(f.Summary, `neither "subnet" nor "ranges"`) && strings.Contains(f.Summary, "no IP ranges specified") {
					found = true
				}
			}
			if !found {
				t.Errorf("status.diagnosis does not name the IPAM problem of %s; findings:\n%s", lab.NodeConfList, strings.Join(all, "\n"))
			}
			if d.Confirmed != "" {
				t.Errorf("the diagnosis confirmed %s, a cause cnimedic would repair", d.Confirmed)
			}
			if !strings.Contains(r.nr.Status.Message, "no node repair") || !strings.Contains(r.nr.Status.Message, "nothing was changed on the node") {
				t.Errorf("the escalation does not say that no node repair fixes it: %s", r.nr.Status.Message)
			}
			if r.nr.Status.Attempt != 0 {
				t.Errorf("status.attempt %d: a repair was attempted", r.nr.Status.Attempt)
			}
			for _, e := range r.events {
				switch {
				case e.Reason == "Cordoned" || e.Reason == "Draining" || e.Reason == "Approved" || e.Reason == "Repaired":
					t.Errorf("the node was acted on: %s %s", e.Reason, e.Message)
				case e.Reason == "ExecutorStarted" && !strings.Contains(e.Message, "(diagnose)"):
					t.Errorf("an executor pod other than the diagnosis started: %s", e.Message)
				}
			}
			if c := string(r.nodeFile(lab.NodeConfList)); strings.Contains(c, `"ranges"`) || strings.Contains(c, `"subnet"`) {
				t.Errorf("the conflist was changed on an escalated node:\n%s", c)
			}
		},
	}.run(t)
}

// stuckEvents are the messages of the FailedCreatePodSandBox events of the workload's pods.
func (r *run) stuckEvents() []string {
	events := &corev1.EventList{}
	if err := r.c.List(r.ctx, events, client.InNamespace(workloadNS)); err != nil {
		r.t.Fatal(err)
	}
	var out []string
	for _, e := range events.Items {
		if e.Reason == "FailedCreatePodSandBox" && strings.HasPrefix(e.InvolvedObject.Name, r.workload) {
			out = append(out, e.Message)
		}
	}
	if len(out) == 0 {
		r.t.Fatal("no FailedCreatePodSandBox event of the workload")
	}
	return out
}
