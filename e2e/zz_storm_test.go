//go:build e2e

package e2e

// This file is named to sort last: Go runs a package's tests in the order of its files, and the storm scenario must
// come after every other one. Its evidence (both nodes failing) stays in the detection controller's window (5 min
// under the lab policy) after the nodes are reset, and would open a remediation at once for a later scenario's node,
// before that scenario's own failure shows.

import (
	"context"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
	"github.com/cnimedic/cnimedic/e2e/lab"
)

// A storm: the same failure on two of the lab's three workers (a bad rollout, not a node problem). With the storm
// threshold at 50% and minNodes 2, cnimedic must not drain anything: no node cordoned, no executor, and the policy
// says StormActive.
func TestStormDrainsNothing(t *testing.T) {
	if ok, err := theLab.ManagerRunsDetection(context.Background()); err != nil || !ok {
		t.Fatalf("storms are the detection controller's to call; the manager does not run it (%v, %v)", ok, err)
	}
	c, nodes := twoNodeSetup(t, lab.FaultCNIVersionNewer, func(p *v1alpha1.RemediationPolicy) {
		p.Spec.Storm = v1alpha1.StormSpec{ThresholdPercent: 50, MinNodes: 2, Cooldown: &metav1.Duration{Duration: time.Minute}}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	var stormSince time.Time
	for {
		p := &v1alpha1.RemediationPolicy{}
		if err := c.Get(ctx, client.ObjectKey{Name: lab.LabPolicy().Name}, p); err != nil {
			t.Fatal(err)
		}
		if stormSince.IsZero() && meta.IsStatusConditionTrue(p.Status.Conditions, v1alpha1.PolicyStormActive) {
			stormSince = time.Now()
			t.Logf("policy %s: StormActive: %s", p.Name, meta.FindStatusCondition(p.Status.Conditions, v1alpha1.PolicyStormActive).Message)
		}
		for _, n := range nodes {
			node := &corev1.Node{}
			if err := c.Get(ctx, client.ObjectKey{Name: n}, node); err != nil {
				t.Fatal(err)
			}
			if node.Spec.Unschedulable {
				t.Fatalf("node %s was cordoned during a storm", n)
			}
		}
		pods := &corev1.PodList{}
		if err := c.List(ctx, pods, client.InNamespace(lab.Namespace), client.MatchingLabels{v1alpha1.LabelComponent: "executor"}); err != nil {
			t.Fatal(err)
		}
		if len(pods.Items) > 0 {
			t.Fatalf("an executor pod ran during a storm: %s", pods.Items[0].Name)
		}
		list := &v1alpha1.NodeRemediationList{}
		if err := c.List(ctx, list); err != nil {
			t.Fatal(err)
		}
		for _, nr := range list.Items {
			if nr.Status.Phase.HoldsNode() || nr.Status.Phase == v1alpha1.PhaseSucceeded {
				t.Fatalf("%s reached %s during a storm", nr.Name, nr.Status.Phase)
			}
		}
		// The storm must be called, and then hold for a while with both nodes still broken.
		if !stormSince.IsZero() && time.Since(stormSince) > 30*time.Second {
			var phases []string
			for _, nr := range list.Items {
				phases = append(phases, nr.Name+"="+string(nr.Status.Phase))
			}
			slices.Sort(phases)
			t.Logf("30 s into the storm nothing was drained; remediations: %v", phases)
			return
		}
		if ctx.Err() != nil {
			t.Fatal("no storm was called with every node broken")
		}
		time.Sleep(250 * time.Millisecond)
	}
}
