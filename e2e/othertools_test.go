//go:build e2e

package e2e

import (
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
	"github.com/cnimedic/cnimedic/e2e/lab"
)

// A node someone else cordoned (a maintenance, a reboot tool, a person running kubectl cordon) is left alone
// (issue 16): the approved repair waits, saying why, with the node never touched and never uncordoned by cnimedic;
// once that someone uncordons it, the repair goes on as usual.
func TestANodeCordonedBySomeoneElseIsLeftAloneUntilTheyUncordonIt(t *testing.T) {
	scenario{
		fault:     lab.FaultCNIVersionNewer,
		policy:    func(p *v1alpha1.RemediationPolicy) { p.Spec.Approval.Mode = v1alpha1.ApprovalManual },
		wantPhase: v1alpha1.PhaseSucceeded,
		wantReasons: []string{"Detected", "Diagnosing", "AwaitingApproval", "Approved", "NodeHeldByOthers",
			"Draining", "Cordoned", "Repaired", "Verified", "Uncordoned", "Succeeded"},
		during: func(t *testing.T, r *run) {
			nr := &v1alpha1.NodeRemediation{}
			r.eventually("NodeRemediation "+r.nr.Name+" waits for approval", time.Minute, func() (bool, string) {
				if err := r.c.Get(r.ctx, client.ObjectKey{Name: r.nr.Name}, nr); err != nil {
					return false, err.Error()
				}
				return nr.Status.Phase == v1alpha1.PhaseAwaitingApproval, "phase " + string(nr.Status.Phase)
			})
			// Someone else cordons the node, then an approver approves the repair.
			if _, err := theLab.Kubectl(r.ctx, "cordon", r.node); err != nil {
				t.Fatal(err)
			}
			if _, err := theLab.Kubectl(r.ctx, "annotate", "noderemediation/"+r.nr.Name, v1alpha1.AnnotationApprove+"=true"); err != nil {
				t.Fatal(err)
			}
			r.eventually("a NodeHeldByOthers event saying the node is cordoned by someone else", time.Minute, func() (bool, string) {
				for _, e := range r.remediationEvents() {
					if e.Reason == "NodeHeldByOthers" && strings.Contains(e.Message, "cordoned by someone else") {
						return true, ""
					}
				}
				return false, "no such event yet"
			})
			// Left alone: for a while, still Approved, no executor, the cordon still the other one's.
			watchCordonedByOthers(t, r, 5*time.Second)
			if err := r.c.Get(r.ctx, client.ObjectKey{Name: r.nr.Name}, nr); err != nil {
				t.Fatal(err)
			}
			if nr.Status.Phase != v1alpha1.PhaseApproved {
				t.Fatalf("on a node someone else cordoned the remediation moved to %s", nr.Status.Phase)
			}
			// The other party is done: cnimedic takes it from here.
			if _, err := theLab.Kubectl(r.ctx, "uncordon", r.node); err != nil {
				t.Fatal(err)
			}
		},
	}.run(t)
}

// watchCordonedByOthers checks, for a while, that cnimedic neither lifts someone else's cordon of the node nor marks
// it as its own, and starts no repair pod there.
func watchCordonedByOthers(t *testing.T, r *run, d time.Duration) {
	t.Helper()
	var faults []string
	samples := 0
	for deadline := time.Now().Add(d); time.Now().Before(deadline); time.Sleep(250 * time.Millisecond) {
		n := &corev1.Node{}
		pods := &corev1.PodList{}
		if err := r.c.Get(r.ctx, client.ObjectKey{Name: r.node}, n); err != nil {
			t.Fatal(err)
		}
		if err := r.c.List(r.ctx, pods, client.InNamespace(lab.Namespace), client.MatchingLabels{v1alpha1.LabelComponent: "executor", v1alpha1.LabelNode: r.node}); err != nil {
			t.Fatal(err)
		}
		samples++
		if !n.Spec.Unschedulable {
			faults = append(faults, "the node was uncordoned")
		}
		if n.Annotations[v1alpha1.AnnotationCordonedBy] != "" {
			faults = append(faults, "cnimedic marked the other one's cordon as its own")
		}
		if len(pods.Items) > 0 {
			faults = append(faults, "an executor pod ran")
		}
	}
	if len(faults) > 0 {
		t.Fatalf("on a node someone else cordoned (%d samples): %v", samples, faults)
	}
}
