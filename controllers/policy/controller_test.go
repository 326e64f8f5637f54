package policy

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/utils/clock"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/config"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
	"github.com/cnimedic/cnimedic/test/testenv"
)

var env *testenv.Env

func TestMain(m *testing.M) { testenv.Main(m, &env, nil) }

func startController(t *testing.T) {
	t.Helper()
	mgr, err := ctrl.NewManager(env.Config, ctrl.Options{Scheme: scheme.Scheme, Metrics: metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0", Controller: config.Controller{SkipNameValidation: ptr.To(true)}})
	if err != nil {
		t.Fatal(err)
	}
	if err := (&Reconciler{Client: mgr.GetClient(), Clock: clock.RealClock{}}).SetupWithManager(mgr); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = mgr.Start(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
}

func waitStatus(t *testing.T, name string, ok func(*v1alpha1.RemediationPolicy) error) *v1alpha1.RemediationPolicy {
	t.Helper()
	var err error
	p := &v1alpha1.RemediationPolicy{}
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if err = env.Client.Get(context.Background(), types.NamespacedName{Name: name}, p); err == nil {
			if err = ok(p); err == nil {
				return p
			}
		}
	}
	t.Fatalf("policy %s: %v", name, err)
	return nil
}

func TestStatusCountsNodesAndReportsInvalidPatterns(t *testing.T) {
	startController(t)
	ctx := context.Background()
	for i, labels := range []map[string]string{
		{"pool": "status-a"}, {"pool": "status-a"},
		{"pool": "status-a", "node-role.kubernetes.io/control-plane": ""}, // never covered by a selector
		{"pool": "status-b"},
	} {
		n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("status-n%d", i), Labels: labels}}
		if err := env.Client.Create(ctx, n); err != nil {
			t.Fatal(err)
		}
	}
	p := &v1alpha1.RemediationPolicy{ObjectMeta: metav1.ObjectMeta{Name: "status"}, Spec: v1alpha1.RemediationPolicySpec{
		NodeSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"pool": "status-a"}},
		CustomSignatures: []v1alpha1.CustomSignature{
			{Name: "fine", Pattern: `vendor-ipam: pool (?P<network>\w+) empty`, Action: v1alpha1.ActionDiagnose},
			{Name: "broken", Pattern: `unclosed (group`, Action: v1alpha1.ActionDiagnose},
		},
	}}
	if err := env.Client.Create(ctx, p); err != nil {
		t.Fatal(err)
	}
	got := waitStatus(t, p.Name, func(p *v1alpha1.RemediationPolicy) error {
		if p.Status.ObservedGeneration != p.Generation {
			return fmt.Errorf("not observed yet")
		}
		return nil
	})
	if got.Status.CoveredNodes != 2 {
		t.Errorf("coveredNodes %d, want 2 (the control-plane node matches the selector but is never covered by one)", got.Status.CoveredNodes)
	}
	c := meta.FindStatusCondition(got.Status.Conditions, v1alpha1.PolicySignaturesValid)
	if c == nil || c.Status != metav1.ConditionFalse || !strings.Contains(c.Message, `"broken"`) || !strings.Contains(c.Message, "cannot compile Go regular expressions") {
		t.Errorf("SignaturesValid %+v must name the broken pattern and say why the API server let it through", c)
	}
	if meta.IsStatusConditionTrue(got.Status.Conditions, v1alpha1.PolicyReady) {
		t.Error("a policy with a broken pattern must not be Ready")
	}

	// Fixing the pattern and pausing show up in the status.
	got.Spec.CustomSignatures[1].Pattern = `unclosed \(group`
	got.Spec.Paused = true
	if err := env.Client.Update(ctx, got); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, p.Name, func(p *v1alpha1.RemediationPolicy) error {
		if !meta.IsStatusConditionTrue(p.Status.Conditions, v1alpha1.PolicySignaturesValid) ||
			!meta.IsStatusConditionTrue(p.Status.Conditions, v1alpha1.PolicyPaused) ||
			!meta.IsStatusConditionTrue(p.Status.Conditions, v1alpha1.PolicyReady) {
			return fmt.Errorf("conditions %+v", p.Status.Conditions)
		}
		return nil
	})

	// A new node in the pool is counted.
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "status-n9", Labels: map[string]string{"pool": "status-a"}}}
	if err := env.Client.Create(ctx, n); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, p.Name, func(p *v1alpha1.RemediationPolicy) error {
		if p.Status.CoveredNodes != 3 {
			return fmt.Errorf("coveredNodes %d, want 3", p.Status.CoveredNodes)
		}
		return nil
	})
}

// TestHealthyClusterCostsNoWrites: once the status is current, node heartbeats and repeated reconciles write
// nothing (issue 8: zero API writes while the cluster is healthy).
func TestHealthyClusterCostsNoWrites(t *testing.T) {
	startController(t)
	ctx := context.Background()
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "quiet-n1", Labels: map[string]string{"pool": "quiet"}}}
	if err := env.Client.Create(ctx, n); err != nil {
		t.Fatal(err)
	}
	p := &v1alpha1.RemediationPolicy{ObjectMeta: metav1.ObjectMeta{Name: "quiet"}, Spec: v1alpha1.RemediationPolicySpec{
		NodeSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"pool": "quiet"}}}}
	if err := env.Client.Create(ctx, p); err != nil {
		t.Fatal(err)
	}
	settled := waitStatus(t, p.Name, func(p *v1alpha1.RemediationPolicy) error {
		if p.Status.CoveredNodes != 1 {
			return fmt.Errorf("coveredNodes %d", p.Status.CoveredNodes)
		}
		return nil
	})
	for i := range 5 { // kubelet heartbeats: status updates of the node
		n.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady",
			LastHeartbeatTime: metav1.NewTime(time.Now().Add(time.Duration(i) * time.Second))}}
		if err := env.Client.Status().Update(ctx, n); err != nil {
			t.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond)
	now := &v1alpha1.RemediationPolicy{}
	if err := env.Client.Get(ctx, types.NamespacedName{Name: p.Name}, now); err != nil {
		t.Fatal(err)
	}
	if now.ResourceVersion != settled.ResourceVersion {
		t.Fatalf("the policy was written again while nothing changed (resourceVersion %s -> %s)", settled.ResourceVersion, now.ResourceVersion)
	}
}

// TestOverlapSaysWhichPolicyActs: on a node two policies cover, the first by name acts; the later one says so.
func TestOverlapSaysWhichPolicyActs(t *testing.T) {
	startController(t)
	ctx := context.Background()
	for i, pool := range []string{"ov-a", "ov-a", "ov-b"} {
		n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("overlap-n%d", i), Labels: map[string]string{"pool": pool, "fleet": "ov"}}}
		if err := env.Client.Create(ctx, n); err != nil {
			t.Fatal(err)
		}
	}
	first := &v1alpha1.RemediationPolicy{ObjectMeta: metav1.ObjectMeta{Name: "ov-1-pool-a"}, Spec: v1alpha1.RemediationPolicySpec{
		NodeSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"pool": "ov-a"}}}}
	fleet := &v1alpha1.RemediationPolicy{ObjectMeta: metav1.ObjectMeta{Name: "ov-2-fleet"}, Spec: v1alpha1.RemediationPolicySpec{
		NodeSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"fleet": "ov"}}}}
	for _, p := range []*v1alpha1.RemediationPolicy{first, fleet} {
		if err := env.Client.Create(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	waitStatus(t, fleet.Name, func(p *v1alpha1.RemediationPolicy) error {
		c := meta.FindStatusCondition(p.Status.Conditions, v1alpha1.PolicyOverlapping)
		if c == nil || c.Status != metav1.ConditionTrue || !strings.Contains(c.Message, "2 by policy ov-1-pool-a") {
			return fmt.Errorf("Overlapping %+v", c)
		}
		return nil
	})
	waitStatus(t, first.Name, func(p *v1alpha1.RemediationPolicy) error {
		if c := meta.FindStatusCondition(p.Status.Conditions, v1alpha1.PolicyOverlapping); c == nil || c.Status != metav1.ConditionFalse {
			return fmt.Errorf("the first policy by name overlaps nothing: %+v", c)
		}
		return nil
	})
}

// A node condition rule whose signature the policy cannot name (a built-in it does not enable, a custom signature it
// does not define) is ignored by the detection, and the status says which rule and why.
func TestANodeConditionRuleNamingASignatureThePolicyCannotNameIsReported(t *testing.T) {
	startController(t)
	ctx := context.Background()
	p := &v1alpha1.RemediationPolicy{ObjectMeta: metav1.ObjectMeta{Name: "condrules"}, Spec: v1alpha1.RemediationPolicySpec{
		NodeNames:  []string{"condrules-n0"},
		Signatures: []v1alpha1.SignatureID{v1alpha1.SignatureIPAMExhausted},
		Detection: v1alpha1.DetectionSpec{NodeConditions: []v1alpha1.NodeConditionRule{
			{Type: "NetworkUnavailable"}, // the cni-unclassified family, which spec.signatures leaves out
			{Type: "CNIProblem", Signature: "no-such-signature"},
			{Type: "IPAMProblem", Signature: string(v1alpha1.SignatureIPAMExhausted)}, // fine
		}},
	}}
	if err := env.Client.Create(ctx, p); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Client.Delete(ctx, p) })
	got := waitStatus(t, p.Name, func(p *v1alpha1.RemediationPolicy) error {
		if p.Status.ObservedGeneration != p.Generation {
			return fmt.Errorf("not observed yet")
		}
		return nil
	})
	c := meta.FindStatusCondition(got.Status.Conditions, v1alpha1.PolicySignaturesValid)
	if c == nil || c.Status != metav1.ConditionFalse ||
		!strings.Contains(c.Message, `spec.detection.nodeConditions[NetworkUnavailable]: signature "cni-unclassified" is not among spec.signatures`) ||
		!strings.Contains(c.Message, `spec.detection.nodeConditions[CNIProblem]: signature "no-such-signature"`) ||
		strings.Contains(c.Message, "IPAMProblem") {
		t.Errorf("SignaturesValid %+v must name the two rules the policy cannot follow, and only them", c)
	}
}
