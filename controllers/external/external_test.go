package external

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	schedulingv1 "k8s.io/api/scheduling/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/utils/clock"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/yaml"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
	"github.com/cnimedic/cnimedic/controllers/remediation"
	"github.com/cnimedic/cnimedic/internal/events"
	"github.com/cnimedic/cnimedic/internal/nodelease"
	"github.com/cnimedic/cnimedic/test/repo"
	"github.com/cnimedic/cnimedic/test/testenv"
)

// These tests run on a real kube-apiserver and etcd (envtest) with the peers' own CRDs installed (testdata/crds,
// copied from their repositories: testdata/README.md): NodeHealthCheck from medik8s' node-healthcheck-operator,
// Machine and MachineHealthCheck from Cluster API. The requests are created the way NHC's resource manager and
// MHC's controller create them. The manager runs this controller and the real remediation workflow; no kubelet runs
// here, so a diagnosis pod never reports and a request stays before approval, where a request made by hand stays
// until an approver approves it.

const managerNamespace = "cnimedic-system"

var env *testenv.Env

func TestMain(m *testing.M) {
	ctrl.SetLogger(zap.New(zap.WriteTo(os.Stderr), zap.Level(zapcore.ErrorLevel)))
	e, err := testenv.Start()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	env = e
	ctx, cancel := context.WithCancel(context.Background())
	stopped, err := setup(ctx, e)
	code := 1
	if err != nil {
		fmt.Fprintln(os.Stderr, "test setup:", err)
	} else {
		code = m.Run()
	}
	// The manager stops before the API server does.
	cancel()
	if stopped != nil {
		<-stopped
	}
	if err := e.Stop(); err != nil {
		fmt.Fprintln(os.Stderr, "stopping the control plane:", err)
	}
	os.Exit(code)
}

func setup(ctx context.Context, e *testenv.Env) (<-chan struct{}, error) {
	if _, err := envtest.InstallCRDs(e.Config, envtest.CRDInstallOptions{Paths: []string{filepath.Join("testdata", "crds")}, ErrorIfPathMissing: true}); err != nil {
		return nil, fmt.Errorf("installing the peers' CRDs: %w", err)
	}
	for _, ns := range []string{managerNamespace, nodelease.DefaultNamespace} {
		if err := e.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
			return nil, err
		}
	}
	if err := e.Client.Create(ctx, &schedulingv1.PriorityClass{ObjectMeta: metav1.ObjectMeta{Name: "cnimedic-executor"}, Value: 1000000000}); err != nil {
		return nil, err
	}
	return startManager(ctx, e)
}

// startManager runs this controller and the remediation workflow, as cmd/manager wires them.
func startManager(ctx context.Context, e *testenv.Env) (<-chan struct{}, error) {
	mgr, err := ctrl.NewManager(e.Config, ctrl.Options{Scheme: scheme.Scheme, Metrics: metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0", Controller: config.Controller{SkipNameValidation: ptr.To(true)}})
	if err != nil {
		return nil, err
	}
	workflow := &remediation.Reconciler{
		Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), Kube: kubernetes.NewForConfigOrDie(e.Config), Clock: clock.RealClock{},
		Events: events.NewRecorder(mgr.GetEventRecorder("cnimedic"), clock.RealClock{}),
		Leases: &nodelease.Manager{Client: e.Client, Namespace: nodelease.DefaultNamespace, Holder: nodelease.Holder, Duration: 5 * time.Minute},
		Config: remediation.Config{Namespace: managerNamespace, ExecutorImage: "executor:test", CanaryImage: "canary:test",
			ExecutorServiceAccount: "cnimedic-executor", PollInterval: 100 * time.Millisecond},
	}
	if err := workflow.SetupWithManager(mgr); err != nil {
		return nil, err
	}
	if err := (&Reconciler{Client: mgr.GetClient(), APIReader: mgr.GetAPIReader()}).SetupWithManager(mgr); err != nil {
		return nil, err
	}
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		if err := mgr.Start(ctx); err != nil {
			fmt.Fprintln(os.Stderr, "manager:", err)
		}
	}()
	return stopped, nil
}

type fixture struct {
	t      *testing.T
	ctx    context.Context
	c      client.Client
	prefix string
}

func newFixture(t *testing.T, prefix string) *fixture {
	return &fixture{t: t, ctx: context.Background(), c: env.Client, prefix: prefix}
}

func (f *fixture) name(s string) string { return f.prefix + "-" + s }

// node creates a Ready Linux node labelled for the test's policy.
func (f *fixture) node(name string) *corev1.Node {
	f.t.Helper()
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: f.name(name), Labels: map[string]string{"test": f.prefix, "kubernetes.io/os": "linux"}}}
	if err := f.c.Create(f.ctx, n); err != nil {
		f.t.Fatal(err)
	}
	n.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionFalse, Reason: "KubeletNotReady",
		Message:           "container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady message:Network plugin returns error: cni plugin not initialized",
		LastHeartbeatTime: metav1.Now(), LastTransitionTime: metav1.Now()}}
	if err := f.c.Status().Update(f.ctx, n); err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() { _ = f.c.Delete(context.Background(), n) })
	return n
}

// automaticPolicy creates an Automatic policy covering the test's nodes: the strongest case, where a detected
// failure would be repaired without a person.
func (f *fixture) automaticPolicy() *v1alpha1.RemediationPolicy {
	f.t.Helper()
	p := &v1alpha1.RemediationPolicy{ObjectMeta: metav1.ObjectMeta{Name: f.name("policy")}}
	p.Spec.NodeSelector = &metav1.LabelSelector{MatchLabels: map[string]string{"test": f.prefix}}
	p.Spec.Approval.Mode = v1alpha1.ApprovalAutomatic
	if err := f.c.Create(f.ctx, p); err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() { _ = f.c.Delete(context.Background(), p) })
	return p
}

func (f *fixture) namespace(name string) string {
	f.t.Helper()
	ns := f.name(name)
	if err := f.c.Create(f.ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		f.t.Fatal(err)
	}
	return ns
}

func (f *fixture) template(ns string) *v1alpha1.CNIRemediationTemplate {
	f.t.Helper()
	tpl := &v1alpha1.CNIRemediationTemplate{ObjectMeta: metav1.ObjectMeta{Name: "cnimedic", Namespace: ns}}
	if err := f.c.Create(f.ctx, tpl); err != nil {
		f.t.Fatal(err)
	}
	return tpl
}

func (f *fixture) create(o client.Object) {
	f.t.Helper()
	if err := f.c.Create(f.ctx, o); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fixture) eventually(what string, cond func() error) {
	f.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			f.t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// opened waits for the request's NodeRemediation and returns it.
func (f *fixture) opened(key types.NamespacedName) (*v1alpha1.CNIRemediation, *v1alpha1.NodeRemediation) {
	f.t.Helper()
	cr := &v1alpha1.CNIRemediation{}
	nr := &v1alpha1.NodeRemediation{}
	f.eventually("the request's NodeRemediation", func() error {
		if err := f.c.Get(f.ctx, key, cr); err != nil {
			return err
		}
		if cr.Status.RemediationName == "" {
			return fmt.Errorf("no remediation yet; conditions %v", cr.Status.Conditions)
		}
		if err := f.c.Get(f.ctx, types.NamespacedName{Name: cr.Status.RemediationName}, nr); err != nil {
			return err
		}
		if !meta.IsStatusConditionTrue(cr.Status.Conditions, v1alpha1.CNIRemediationProcessing) || nr.Status.Phase == "" {
			return fmt.Errorf("not processing yet: %v, phase %q", cr.Status.Conditions, nr.Status.Phase)
		}
		return nil
	})
	return cr, nr
}

// neverActs checks, for a while, that the node's remediation is not approved and the node not cordoned.
func (f *fixture) neverActs(nrName, node string) {
	f.t.Helper()
	for end := time.Now().Add(3 * time.Second); time.Now().Before(end); time.Sleep(200 * time.Millisecond) {
		nr := &v1alpha1.NodeRemediation{}
		if err := f.c.Get(f.ctx, types.NamespacedName{Name: nrName}, nr); err != nil {
			f.t.Fatal(err)
		}
		if nr.Status.Approval != nil && nr.Status.Approval.Decision == v1alpha1.DecisionApproved {
			f.t.Fatalf("remediation %s was approved by %s without an approver", nr.Name, nr.Status.Approval.Source)
		}
		switch nr.Status.Phase {
		case v1alpha1.PhaseDetected, v1alpha1.PhaseDiagnosing, v1alpha1.PhaseAwaitingApproval:
		default:
			f.t.Fatalf("remediation %s went to %s (%s) without an approver", nr.Name, nr.Status.Phase, nr.Status.Message)
		}
		n := &corev1.Node{}
		if err := f.c.Get(f.ctx, types.NamespacedName{Name: node}, n); err != nil {
			f.t.Fatal(err)
		}
		if n.Spec.Unschedulable || n.Annotations[v1alpha1.AnnotationCordonedBy] != "" {
			f.t.Fatalf("node %s was cordoned", node)
		}
	}
}

// endsWith waits for the request to end with Succeeded False and the reason.
func (f *fixture) endsWith(key types.NamespacedName, reason string) *v1alpha1.CNIRemediation {
	f.t.Helper()
	cr := &v1alpha1.CNIRemediation{}
	f.eventually("the request's end", func() error {
		if err := f.c.Get(f.ctx, key, cr); err != nil {
			return err
		}
		s := meta.FindStatusCondition(cr.Status.Conditions, v1alpha1.CNIRemediationSucceeded)
		p := meta.FindStatusCondition(cr.Status.Conditions, v1alpha1.CNIRemediationProcessing)
		if s == nil || s.Status != metav1.ConditionFalse || s.Reason != reason || p == nil || p.Status != metav1.ConditionFalse {
			return fmt.Errorf("conditions %+v", cr.Status.Conditions)
		}
		return nil
	})
	return cr
}

func nhcObject(name, ns string) *unstructured.Unstructured {
	nhc := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "remediation.medik8s.io/v1alpha1", "kind": "NodeHealthCheck",
		"metadata": map[string]any{"name": name},
		"spec": map[string]any{
			"selector": map[string]any{"matchExpressions": []any{map[string]any{"key": "node-role.kubernetes.io/worker", "operator": "Exists"}}},
			"remediationTemplate": map[string]any{"apiVersion": v1alpha1.GroupVersion.String(), "kind": "CNIRemediationTemplate",
				"name": "cnimedic", "namespace": ns},
		},
	}}
	return nhc
}

// What NHC creates (where its source says so: testdata/README.md): the template's kind minus
// Template, in the template's namespace, spec from spec.template.spec, named after the node (or generated from it
// when the template supports several of its kind), annotated with the node and the template, labelled part-of
// node-healthcheck-controller, owned (not controlled) by the NodeHealthCheck.
func nhcRequest(nhc *unstructured.Unstructured, tpl *v1alpha1.CNIRemediationTemplate, node string, generated bool) *v1alpha1.CNIRemediation {
	cr := &v1alpha1.CNIRemediation{ObjectMeta: metav1.ObjectMeta{
		Namespace: tpl.Namespace,
		Annotations: map[string]string{
			v1alpha1.AnnotationNHCNodeName:         node,
			"remediation.medik8s.io/template-name": tpl.Name,
		},
		Labels: map[string]string{"app.kubernetes.io/part-of": "node-healthcheck-controller"},
		OwnerReferences: []metav1.OwnerReference{{APIVersion: "remediation.medik8s.io/v1alpha1", Kind: "NodeHealthCheck",
			Name: nhc.GetName(), UID: nhc.GetUID(), Controller: ptr.To(false)}},
	}, Spec: tpl.Spec.Template.Spec}
	if generated {
		cr.GenerateName = node + "-"
	} else {
		cr.Name = node
	}
	return cr
}

func TestARequestNHCCreatesOpensARemediationOfItsNodeThatWaitsForAnApprover(t *testing.T) {
	f := newFixture(t, "nhc")
	node := f.node("worker-1")
	p := f.automaticPolicy()
	ns := f.namespace("remediators")
	tpl := f.template(ns)
	nhc := nhcObject(f.name("nhc"), ns)
	f.create(nhc)
	t.Cleanup(func() { _ = f.c.Delete(context.Background(), nhc) })

	req := nhcRequest(nhc, tpl, node.Name, true)
	f.create(req)
	cr, nr := f.opened(client.ObjectKeyFromObject(req))

	if nr.Spec.NodeName != node.Name || nr.Spec.PolicyName != p.Name || nr.Spec.Signature != string(v1alpha1.SignatureCNIUnclassified) {
		t.Fatalf("remediation %s is for node %s under %s (%s), want node %s under %s (cni-unclassified)", nr.Name, nr.Spec.NodeName, nr.Spec.PolicyName, nr.Spec.Signature, node.Name, p.Name)
	}
	if !nr.Status.ByHand {
		t.Errorf("remediation %s opened for NHC is not recorded as a request (status.byHand)", nr.Name)
	}
	if cr.Status.NodeName != node.Name || cr.Status.PolicyName != p.Name {
		t.Errorf("request status names node %q policy %q", cr.Status.NodeName, cr.Status.PolicyName)
	}
	if c := meta.FindStatusCondition(cr.Status.Conditions, v1alpha1.CNIRemediationPermanentNodeDeletionExpected); c == nil || c.Status != metav1.ConditionFalse {
		t.Errorf("PermanentNodeDeletionExpected: %+v", c)
	}
	if c := meta.FindStatusCondition(cr.Status.Conditions, v1alpha1.CNIRemediationProcessing); !strings.Contains(c.Message, nr.Name) {
		t.Errorf("Processing does not name the remediation %s: %q", nr.Name, c.Message)
	}
	if meta.FindStatusCondition(cr.Status.Conditions, v1alpha1.CNIRemediationSucceeded) != nil {
		t.Errorf("Succeeded is set while the remediation runs: %+v", cr.Status.Conditions)
	}
	f.neverActs(nr.Name, node.Name)

	// NHC deletes the request once the node is healthy: the open remediation goes with it, the node untouched.
	if err := f.c.Delete(f.ctx, cr); err != nil {
		t.Fatal(err)
	}
	f.eventually("the request and its remediation are gone", func() error {
		if err := f.c.Get(f.ctx, client.ObjectKeyFromObject(cr), &v1alpha1.CNIRemediation{}); !apierrors.IsNotFound(err) {
			return fmt.Errorf("request still there (%v)", err)
		}
		if err := f.c.Get(f.ctx, types.NamespacedName{Name: nr.Name}, &v1alpha1.NodeRemediation{}); !apierrors.IsNotFound(err) {
			return fmt.Errorf("remediation %s still there (%v)", nr.Name, err)
		}
		return nil
	})
	n := &corev1.Node{}
	if err := f.c.Get(f.ctx, types.NamespacedName{Name: node.Name}, n); err != nil {
		t.Fatal(err)
	}
	if n.Spec.Unschedulable {
		t.Errorf("node %s left cordoned", node.Name)
	}
}

func TestARequestNamedAfterItsNodeReportsTheRemediationsEnd(t *testing.T) {
	f := newFixture(t, "nhcend")
	node := f.node("worker-1")
	f.automaticPolicy()
	ns := f.namespace("remediators")
	tpl := f.template(ns)
	nhc := nhcObject(f.name("nhc"), ns)
	f.create(nhc)
	t.Cleanup(func() { _ = f.c.Delete(context.Background(), nhc) })

	req := nhcRequest(nhc, tpl, node.Name, false)
	f.create(req)
	_, nr := f.opened(client.ObjectKeyFromObject(req))
	// The node goes away: the workflow ends the remediation Failed, and the request reports it.
	if err := f.c.Delete(f.ctx, node); err != nil {
		t.Fatal(err)
	}
	cr := f.endsWith(client.ObjectKeyFromObject(req), string(v1alpha1.PhaseFailed))
	if c := meta.FindStatusCondition(cr.Status.Conditions, v1alpha1.CNIRemediationSucceeded); !strings.Contains(c.Message, nr.Name) {
		t.Errorf("Succeeded does not name the remediation %s: %q", nr.Name, c.Message)
	}
	if cr.Status.Phase != v1alpha1.PhaseFailed {
		t.Errorf("status.phase %q, want Failed", cr.Status.Phase)
	}
}

// NHC's timeout (its annotation remediation.medik8s.io/nhc-timed-out, then its next remediator): the repair stops.
func TestARequestNHCTimedOutEndsItsRemediation(t *testing.T) {
	f := newFixture(t, "nhctimeout")
	node := f.node("worker-1")
	f.automaticPolicy()
	ns := f.namespace("remediators")
	tpl := f.template(ns)
	nhc := nhcObject(f.name("nhc"), ns)
	f.create(nhc)
	t.Cleanup(func() { _ = f.c.Delete(context.Background(), nhc) })
	req := nhcRequest(nhc, tpl, node.Name, false)
	f.create(req)
	cr, nr := f.opened(client.ObjectKeyFromObject(req))

	patch := fmt.Sprintf(`{"metadata":{"annotations":{%q:%q}}}`, v1alpha1.AnnotationNHCTimedOut, time.Now().UTC().Format(time.RFC3339))
	if err := f.c.Patch(f.ctx, cr, client.RawPatch(types.MergePatchType, []byte(patch))); err != nil {
		t.Fatal(err)
	}
	f.endsWith(client.ObjectKeyFromObject(req), ReasonTimedOut)
	f.eventually("the timed-out request's remediation is gone", func() error {
		if err := f.c.Get(f.ctx, types.NamespacedName{Name: nr.Name}, &v1alpha1.NodeRemediation{}); !apierrors.IsNotFound(err) {
			return fmt.Errorf("remediation %s still there (%v)", nr.Name, err)
		}
		return nil
	})
}

// The end the workflow records is reported as NHC reads it. The workflow's whole way to Succeeded (diagnosis,
// approval, drain, executor, canary) needs a kubelet and is covered by controllers/remediation's suites; here the
// test writes the end into the NodeRemediation's status, as the workflow does.
func TestARemediationThatSucceededIsReportedSucceeded(t *testing.T) {
	f := newFixture(t, "nhcok")
	node := f.node("worker-1")
	f.automaticPolicy()
	ns := f.namespace("remediators")
	tpl := f.template(ns)
	nhc := nhcObject(f.name("nhc"), ns)
	f.create(nhc)
	t.Cleanup(func() { _ = f.c.Delete(context.Background(), nhc) })
	req := nhcRequest(nhc, tpl, node.Name, false)
	f.create(req)
	_, nr := f.opened(client.ObjectKeyFromObject(req))

	f.eventually("write the remediation's end", func() error {
		cur := &v1alpha1.NodeRemediation{}
		if err := f.c.Get(f.ctx, types.NamespacedName{Name: nr.Name}, cur); err != nil {
			return err
		}
		cur.Status.Phase, cur.Status.Reason, cur.Status.Message = v1alpha1.PhaseSucceeded, "Verified", "node Ready and a canary pod got its network"
		return f.c.Status().Update(f.ctx, cur)
	})
	cr := &v1alpha1.CNIRemediation{}
	f.eventually("Succeeded True", func() error {
		if err := f.c.Get(f.ctx, client.ObjectKeyFromObject(req), cr); err != nil {
			return err
		}
		s := meta.FindStatusCondition(cr.Status.Conditions, v1alpha1.CNIRemediationSucceeded)
		if s == nil || s.Status != metav1.ConditionTrue || !meta.IsStatusConditionFalse(cr.Status.Conditions, v1alpha1.CNIRemediationProcessing) {
			return fmt.Errorf("conditions %+v", cr.Status.Conditions)
		}
		if !strings.Contains(s.Message, nr.Name) || cr.Status.Phase != v1alpha1.PhaseSucceeded {
			return fmt.Errorf("Succeeded %q, phase %q", s.Message, cr.Status.Phase)
		}
		return nil
	})
	// Deleting the request once the node is healthy leaves the ended remediation as the node's history.
	if err := f.c.Delete(f.ctx, cr); err != nil {
		t.Fatal(err)
	}
	f.eventually("the request is gone", func() error {
		if err := f.c.Get(f.ctx, client.ObjectKeyFromObject(cr), &v1alpha1.CNIRemediation{}); !apierrors.IsNotFound(err) {
			return fmt.Errorf("request still there (%v)", err)
		}
		return nil
	})
	if err := f.c.Get(f.ctx, types.NamespacedName{Name: nr.Name}, &v1alpha1.NodeRemediation{}); err != nil {
		t.Errorf("the ended remediation %s went with its request: %v", nr.Name, err)
	}
}

// A node cnimedic already works on keeps its one open remediation: the request follows it, and deleting the
// request (which anyone who may create one may do) never ends a remediation the request did not open.
func TestARequestForANodeWithAnOpenRemediationFollowsItAndNeverEndsIt(t *testing.T) {
	f := newFixture(t, "follow")
	node := f.node("worker-1")
	p := f.automaticPolicy()
	open := &v1alpha1.NodeRemediation{ObjectMeta: metav1.ObjectMeta{Name: f.name("open")},
		Spec: v1alpha1.NodeRemediationSpec{NodeName: node.Name, PolicyName: p.Name, Signature: string(v1alpha1.SignatureCNINotInitialized)}}
	f.create(open)
	f.eventually("the open remediation is labelled", func() error {
		cur := &v1alpha1.NodeRemediation{}
		if err := f.c.Get(f.ctx, client.ObjectKeyFromObject(open), cur); err != nil {
			return err
		}
		if cur.Labels[v1alpha1.LabelNode] != node.Name || cur.Status.Phase == "" {
			return fmt.Errorf("labels %v phase %q", cur.Labels, cur.Status.Phase)
		}
		return nil
	})
	ns := f.namespace("remediators")
	tpl := f.template(ns)
	nhc := nhcObject(f.name("nhc"), ns)
	f.create(nhc)
	t.Cleanup(func() { _ = f.c.Delete(context.Background(), nhc) })
	req := nhcRequest(nhc, tpl, node.Name, false)
	f.create(req)
	cr, nr := f.opened(client.ObjectKeyFromObject(req))
	if nr.Name != open.Name {
		t.Fatalf("the request opened %s though %s is open on node %s", nr.Name, open.Name, node.Name)
	}
	if err := f.c.Delete(f.ctx, cr); err != nil {
		t.Fatal(err)
	}
	f.eventually("the request is gone", func() error {
		if err := f.c.Get(f.ctx, client.ObjectKeyFromObject(cr), &v1alpha1.CNIRemediation{}); !apierrors.IsNotFound(err) {
			return fmt.Errorf("request still there (%v)", err)
		}
		return nil
	})
	cur := &v1alpha1.NodeRemediation{}
	if err := f.c.Get(f.ctx, client.ObjectKeyFromObject(open), cur); err != nil || !cur.DeletionTimestamp.IsZero() {
		t.Fatalf("deleting the request ended remediation %s, which it did not open: %v", open.Name, err)
	}
	_ = f.c.Delete(context.Background(), cur)
}

// What MHC creates (where Cluster API's source says so: testdata/README.md): named like the Machine, in its
// namespace, owned by it, with the cloned-from annotations and the cluster-name label, spec from the template's
// spec.template.
func TestARequestMachineHealthCheckCreatesRepairsTheMachinesNode(t *testing.T) {
	f := newFixture(t, "capi")
	node := f.node("md-0-abcde")
	p := f.automaticPolicy()
	ns := f.namespace("cluster")
	tpl := f.template(ns)
	machine := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Machine",
		"metadata": map[string]any{"name": "md-0-abcde", "namespace": ns, "labels": map[string]any{"cluster.x-k8s.io/cluster-name": "c1"}},
		"spec": map[string]any{"clusterName": "c1", "bootstrap": map[string]any{"dataSecretName": "md-0-abcde-bootstrap"},
			"infrastructureRef": map[string]any{"apiGroup": "infrastructure.cluster.x-k8s.io", "kind": "DockerMachine", "name": "md-0-abcde"}},
	}}
	f.create(machine)
	if err := unstructured.SetNestedField(machine.Object, map[string]any{"name": node.Name}, "status", "nodeRef"); err != nil {
		t.Fatal(err)
	}
	if err := f.c.Status().Update(f.ctx, machine); err != nil {
		t.Fatal(err)
	}
	mhc := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "MachineHealthCheck",
		"metadata": map[string]any{"name": "c1-workers", "namespace": ns},
		"spec": map[string]any{"clusterName": "c1", "selector": map[string]any{"matchLabels": map[string]any{"cluster.x-k8s.io/cluster-name": "c1"}},
			"remediation": map[string]any{"templateRef": map[string]any{"apiVersion": v1alpha1.GroupVersion.String(), "kind": "CNIRemediationTemplate", "name": tpl.Name}}},
	}}
	f.create(mhc)

	req := &v1alpha1.CNIRemediation{ObjectMeta: metav1.ObjectMeta{
		Name: machine.GetName(), Namespace: ns,
		Annotations:     map[string]string{"cluster.x-k8s.io/cloned-from-name": tpl.Name, "cluster.x-k8s.io/cloned-from-groupkind": "CNIRemediationTemplate.cnimedic.io"},
		Labels:          map[string]string{"cluster.x-k8s.io/cluster-name": "c1"},
		OwnerReferences: []metav1.OwnerReference{{APIVersion: "cluster.x-k8s.io/v1beta2", Kind: "Machine", Name: machine.GetName(), UID: machine.GetUID()}},
	}, Spec: tpl.Spec.Template.Spec}
	f.create(req)
	cr, nr := f.opened(client.ObjectKeyFromObject(req))
	if nr.Spec.NodeName != node.Name || nr.Spec.PolicyName != p.Name || cr.Status.NodeName != node.Name {
		t.Fatalf("remediation %s is for node %s under %s, want the Machine's node %s under %s", nr.Name, nr.Spec.NodeName, nr.Spec.PolicyName, node.Name, p.Name)
	}
	f.neverActs(nr.Name, node.Name)
}

func TestARequestForAMachineWithoutANodeEndsSayingSo(t *testing.T) {
	f := newFixture(t, "capinonode")
	ns := f.namespace("cluster")
	machine := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Machine",
		"metadata": map[string]any{"name": "md-0-fghij", "namespace": ns},
		"spec": map[string]any{"clusterName": "c1", "bootstrap": map[string]any{"dataSecretName": "x"},
			"infrastructureRef": map[string]any{"apiGroup": "infrastructure.cluster.x-k8s.io", "kind": "DockerMachine", "name": "md-0-fghij"}},
	}}
	f.create(machine)
	req := &v1alpha1.CNIRemediation{ObjectMeta: metav1.ObjectMeta{Name: machine.GetName(), Namespace: ns,
		OwnerReferences: []metav1.OwnerReference{{APIVersion: "cluster.x-k8s.io/v1beta2", Kind: "Machine", Name: machine.GetName(), UID: machine.GetUID()}}}}
	f.create(req)
	cr := f.endsWith(client.ObjectKeyFromObject(req), ReasonNodeUnknown)
	if c := meta.FindStatusCondition(cr.Status.Conditions, v1alpha1.CNIRemediationSucceeded); !strings.Contains(c.Message, "status.nodeRef") {
		t.Errorf("the end does not say the Machine has no node: %q", c.Message)
	}
}

func TestARequestForANodeNoPolicyCoversEndsSayingSo(t *testing.T) {
	f := newFixture(t, "nopolicy")
	node := f.node("worker-1") // no policy in this test selects test=nopolicy
	ns := f.namespace("remediators")
	tpl := f.template(ns)
	nhc := nhcObject(f.name("nhc"), ns)
	f.create(nhc)
	t.Cleanup(func() { _ = f.c.Delete(context.Background(), nhc) })
	req := nhcRequest(nhc, tpl, node.Name, false)
	f.create(req)
	cr := f.endsWith(client.ObjectKeyFromObject(req), ReasonNoPolicy)
	if c := meta.FindStatusCondition(cr.Status.Conditions, v1alpha1.CNIRemediationSucceeded); !strings.Contains(c.Message, "no RemediationPolicy covers node "+node.Name) {
		t.Errorf("Succeeded message: %q", c.Message)
	}
	list := &v1alpha1.NodeRemediationList{}
	if err := f.c.List(f.ctx, list, client.MatchingLabels{v1alpha1.LabelNode: node.Name}); err != nil {
		t.Fatal(err)
	}
	for _, nr := range list.Items {
		if nr.Spec.NodeName == node.Name {
			t.Errorf("remediation %s opened for a node no policy covers", nr.Name)
		}
	}
}

// A tenant holding the built-in edit role in its namespace cannot ask cnimedic for anything (the external
// remediation role is not aggregated into edit), and one granted that role in its namespace, as NHC is, can only
// ask: under an Automatic policy its request still waits for an approver, and no node is cordoned.
func TestATenantCannotMakeCnimedicActThroughARemediationRequest(t *testing.T) {
	f := newFixture(t, "tenant")
	node := f.node("worker-1")
	f.automaticPolicy()
	role := externalRole(t)
	if err := f.c.Create(f.ctx, role); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	ns := f.namespace("team-a")
	edit := f.user(ns, "edit", "pods")

	req := &v1alpha1.CNIRemediation{ObjectMeta: metav1.ObjectMeta{Name: node.Name, Namespace: ns}}
	if err := edit.Create(f.ctx, req.DeepCopy()); !apierrors.IsForbidden(err) {
		t.Fatalf("a tenant with edit created a CNIRemediation: %v", err)
	}

	granted := f.user(ns, role.Name, "cniremediations")
	if err := granted.Create(f.ctx, req); err != nil {
		t.Fatalf("a user granted %s could not create a request: %v", role.Name, err)
	}
	_, nr := f.opened(client.ObjectKeyFromObject(req))
	f.neverActs(nr.Name, node.Name)
	// Nor can the tenant approve it itself: the approve annotation is the approvers' (docs/security.md, rule 6),
	// and the tenant cannot even write NodeRemediations.
	if err := granted.Patch(f.ctx, nr, client.RawPatch(types.MergePatchType, []byte(`{"metadata":{"annotations":{"cnimedic.io/approve":"true"}}}`))); !apierrors.IsForbidden(err) {
		t.Fatalf("the tenant approved remediation %s: %v", nr.Name, err)
	}
}

// externalRole reads the ClusterRole NHC's and Cluster API's aggregation pick up, as config/rbac ships it.
func externalRole(t *testing.T) *rbacv1.ClusterRole {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repo.Root(), "config", "rbac", "external_remediation_role.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	role := &rbacv1.ClusterRole{}
	if err := yaml.Unmarshal(b, role); err != nil {
		t.Fatal(err)
	}
	if role.Labels[v1alpha1.LabelNHCAggregate] != "true" {
		t.Fatalf("ClusterRole %s lacks NHC's aggregation label %s", role.Name, v1alpha1.LabelNHCAggregate)
	}
	return role
}

// user is a real user (client certificate) bound to the ClusterRole in the namespace, once the API server's RBAC
// lets it create the resource... or, for edit, pods. edit arrives empty from envtest (no clusterrole-aggregation
// controller runs): its rules are filled as that controller would, from the roles labelled aggregate-to-edit.
func (f *fixture) user(ns, clusterRole, probe string) client.Client {
	f.t.Helper()
	if clusterRole == "edit" {
		aggregateEdit(f)
	}
	name := "user-" + ns + "-" + clusterRole
	f.create(&rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: clusterRole, Namespace: ns},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: clusterRole},
		Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: name}},
	})
	cfg, err := env.AddUser(name, "tenants")
	if err != nil {
		f.t.Fatal(err)
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme.Scheme})
	if err != nil {
		f.t.Fatal(err)
	}
	group := ""
	if probe == "cniremediations" {
		group = v1alpha1.GroupVersion.Group
	}
	f.eventually("RBAC lets "+name+" create "+probe, func() error {
		review := &authorizationv1.SelfSubjectAccessReview{Spec: authorizationv1.SelfSubjectAccessReviewSpec{
			ResourceAttributes: &authorizationv1.ResourceAttributes{Namespace: ns, Verb: "create", Group: group, Resource: probe}}}
		if err := c.Create(f.ctx, review); err != nil {
			return err
		}
		if !review.Status.Allowed {
			return fmt.Errorf("not allowed yet")
		}
		return nil
	})
	return c
}

// aggregateEdit fills the built-in edit ClusterRole from the ClusterRoles its aggregation rule selects.
func aggregateEdit(f *fixture) {
	f.t.Helper()
	edit := &rbacv1.ClusterRole{}
	if err := f.c.Get(f.ctx, types.NamespacedName{Name: "edit"}, edit); err != nil {
		f.t.Fatal(err)
	}
	if edit.AggregationRule == nil {
		f.t.Fatal("the built-in edit ClusterRole is not aggregated")
	}
	var rules []rbacv1.PolicyRule
	for _, sel := range edit.AggregationRule.ClusterRoleSelectors {
		matching := &rbacv1.ClusterRoleList{}
		if err := f.c.List(f.ctx, matching, client.MatchingLabels(sel.MatchLabels)); err != nil {
			f.t.Fatal(err)
		}
		sort.Slice(matching.Items, func(i, j int) bool { return matching.Items[i].Name < matching.Items[j].Name })
		for _, m := range matching.Items {
			for _, r := range m.Rules {
				dup := false
				for _, o := range rules {
					dup = dup || equality.Semantic.DeepEqual(o, r)
				}
				if !dup {
					rules = append(rules, r)
				}
			}
		}
	}
	edit.Rules = rules
	if err := f.c.Update(f.ctx, edit); err != nil {
		f.t.Fatal(err)
	}
}
