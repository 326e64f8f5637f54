package main

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
	"github.com/cnimedic/cnimedic/test/testenv"
)

// The cluster subcommands are tested against a real kube-apiserver and etcd (envtest), started once for the
// package and only by the tests that need it, so that classify's tests keep running without one. No controller
// runs: the tests write the objects and their status as the manager would, then run the plugin as a user would,
// through --kubeconfig.

var controlPlane testenv.Lazy

func TestMain(m *testing.M) { testenv.LazyMain(m, &controlPlane) }

// apiServer starts the shared control plane on first use and returns it with a kubeconfig file for its admin.
func apiServer(t *testing.T) (*testenv.Env, string) {
	t.Helper()
	sharedEnv := controlPlane.Get(t)
	return sharedEnv, writeKubeconfig(t, sharedEnv.Config)
}

// writeKubeconfig writes a kubeconfig file that authenticates as cfg does.
func writeKubeconfig(t *testing.T, cfg *rest.Config) string {
	t.Helper()
	kc := clientcmdapi.NewConfig()
	kc.Clusters["envtest"] = &clientcmdapi.Cluster{Server: cfg.Host, CertificateAuthorityData: cfg.CAData}
	kc.AuthInfos["user"] = &clientcmdapi.AuthInfo{ClientCertificateData: cfg.CertData, ClientKeyData: cfg.KeyData, Token: cfg.BearerToken}
	kc.Contexts["envtest"] = &clientcmdapi.Context{Cluster: "envtest", AuthInfo: "user"}
	kc.CurrentContext = "envtest"
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := clientcmd.WriteToFile(*kc, path); err != nil {
		t.Fatal(err)
	}
	return path
}

// fixture creates cnimedic objects with their status, as the manager would have written them, and deletes them
// when the test ends so that each test sees only its own.
type fixture struct {
	t   *testing.T
	ctx context.Context
	c   client.Client
	now time.Time
}

func newFixture(t *testing.T) (*fixture, string) {
	env, kubeconfig := apiServer(t)
	f := &fixture{t: t, ctx: context.Background(), c: env.Client, now: time.Now().Truncate(time.Second)}
	t.Cleanup(func() {
		_ = f.c.DeleteAllOf(f.ctx, &v1alpha1.NodeRemediation{})
		_ = f.c.DeleteAllOf(f.ctx, &v1alpha1.RemediationPolicy{})
	})
	return f, kubeconfig
}

func (f *fixture) ago(d time.Duration) metav1.Time { return metav1.NewTime(f.now.Add(-d)) }

// policy creates a policy (the API server fills in the defaults), then applies mutate to its spec and status.
func (f *fixture) policy(name string, mutate func(*v1alpha1.RemediationPolicy)) *v1alpha1.RemediationPolicy {
	f.t.Helper()
	p := &v1alpha1.RemediationPolicy{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if err := f.c.Create(f.ctx, p); err != nil {
		f.t.Fatal(err)
	}
	p.Status.Conditions = []metav1.Condition{
		{Type: v1alpha1.PolicyReady, Status: metav1.ConditionTrue, Reason: "Active", Message: "ok", LastTransitionTime: f.ago(time.Hour)},
		{Type: v1alpha1.PolicySignaturesValid, Status: metav1.ConditionTrue, Reason: "Compiled", Message: "ok", LastTransitionTime: f.ago(time.Hour)},
		{Type: v1alpha1.PolicyPaused, Status: metav1.ConditionFalse, Reason: "NotPaused", Message: "not paused", LastTransitionTime: f.ago(time.Hour)},
	}
	p.Status.CoveredNodes = 3
	if mutate != nil {
		mutate(p)
	}
	status := *p.Status.DeepCopy()
	if err := f.c.Update(f.ctx, p); err != nil { // the spec as mutated; the status is its own subresource
		f.t.Fatal(err)
	}
	p.Status = status
	if err := f.c.Status().Update(f.ctx, p); err != nil {
		f.t.Fatal(err)
	}
	return p
}

// remediation creates a NodeRemediation labelled as the workflow labels it, in the given phase, with a history
// that entered the phase `in` ago.
func (f *fixture) remediation(name, node, pol string, phase v1alpha1.Phase, in time.Duration, mutate func(*v1alpha1.NodeRemediation)) *v1alpha1.NodeRemediation {
	f.t.Helper()
	nr := &v1alpha1.NodeRemediation{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{v1alpha1.LabelNode: node, v1alpha1.LabelPolicy: pol}},
		Spec:       v1alpha1.NodeRemediationSpec{NodeName: node, PolicyName: pol, Signature: string(v1alpha1.SignatureCNIVersionIncompatible)},
	}
	status := v1alpha1.NodeRemediationStatus{Phase: phase, Action: v1alpha1.ActionSetCNIVersion, Reason: string(phase), Message: "test", History: []v1alpha1.PhaseTransition{
		{Phase: v1alpha1.PhaseDetected, Time: f.ago(in + time.Minute), Reason: "Detected"},
	}}
	if phase != v1alpha1.PhaseDetected {
		status.History = append(status.History, v1alpha1.PhaseTransition{Phase: phase, Time: f.ago(in), Reason: string(phase)})
	}
	if phase.IsTerminal() {
		status.CompletionTime = ptrTime(f.ago(in))
	}
	nr.Status = status
	if mutate != nil {
		mutate(nr)
	}
	status = nr.Status
	if err := f.c.Create(f.ctx, nr); err != nil {
		f.t.Fatal(err)
	}
	nr.Status = status
	if err := f.c.Status().Update(f.ctx, nr); err != nil {
		f.t.Fatal(err)
	}
	return nr
}

func (f *fixture) get(name string) *v1alpha1.NodeRemediation {
	f.t.Helper()
	nr := &v1alpha1.NodeRemediation{}
	if err := f.c.Get(f.ctx, client.ObjectKey{Name: name}, nr); err != nil {
		f.t.Fatal(err)
	}
	return nr
}

func (f *fixture) namespace(name string) {
	f.t.Helper()
	if err := f.c.Create(f.ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}); client.IgnoreAlreadyExists(err) != nil {
		f.t.Fatal(err)
	}
}

func ptrTime(t metav1.Time) *metav1.Time { return &t }

// run runs the plugin against the test cluster.
func run(t *testing.T, kubeconfig string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	return execute(t, "", append([]string{"--kubeconfig", kubeconfig}, args...)...)
}

func mustRun(t *testing.T, kubeconfig string, args ...string) string {
	t.Helper()
	out, errOut, err := run(t, kubeconfig, args...)
	if err != nil {
		t.Fatalf("kubectl cnimedic %v: %v\n%s", args, err, errOut)
	}
	return out
}
