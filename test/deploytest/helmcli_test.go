package deploytest

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/yaml"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
	"github.com/cnimedic/cnimedic/internal/diagnosepod"
	"github.com/cnimedic/cnimedic/test/repo"
	"github.com/cnimedic/cnimedic/test/testenv"
)

// The helm CLI itself (bin/helm, built from the helm.sh/helm/v3 module at the version hack/versions.env pins; make
// test-deps builds it for make test) against a real API server: helm lint, helm install, helm upgrade from the
// previous chart version and helm uninstall, as a user runs them.

// previousChart is chart 0.1.0 as it was released, packaged by helm package: its CRDs in crds/, which Helm installs
// once and never upgrades.
const previousChart = "testdata/cnimedic-0.1.0.tgz"

// helmCluster is a fresh API server with nothing installed, with the ServiceAccount admission plugin that real
// clusters run (envtest turns it off), and a kubeconfig for the helm CLI.
type helmCluster struct {
	c          client.Client
	kubeconfig string
	home       string
}

func newHelmCluster(t *testing.T) *helmCluster {
	t.Helper()
	if _, err := os.Stat(helmBinary()); err != nil {
		t.Fatalf("the helm CLI is built from its Go module into bin/helm by `make test-deps` (%v)", err)
	}
	ctrllog.SetLogger(zap.New(zap.WriteTo(io.Discard)))
	env := &envtest.Environment{BinaryAssetsDirectory: testenv.AssetsDir()}
	env.ControlPlane.GetAPIServer().Configure().Disable("disable-admission-plugins")
	cfg, err := env.Start()
	if err != nil {
		t.Fatalf("starting a fresh control plane from %s (make controlplane): %v", testenv.AssetsDir(), err)
	}
	t.Cleanup(func() { _ = env.Stop() })
	admin, err := env.AddUser(envtest.User{Name: "helm-admin", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	kc, err := admin.KubeConfig()
	if err != nil {
		t.Fatal(err)
	}
	home := t.TempDir()
	kubeconfig := filepath.Join(home, "kubeconfig")
	if err := os.WriteFile(kubeconfig, kc, 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	return &helmCluster{c: c, kubeconfig: kubeconfig, home: home}
}

func helmBinary() string { return filepath.Join(repo.Root(), "bin", "helm") }

// helm runs the helm CLI in the repository root (so the docs' relative paths hold) against the cluster.
func (h *helmCluster) helm(args ...string) (string, error) {
	cmd := exec.Command(helmBinary(), args...)
	cmd.Dir = repo.Root()
	cmd.Env = append(os.Environ(), "KUBECONFIG="+h.kubeconfig, "HELM_CACHE_HOME="+filepath.Join(h.home, "cache"),
		"HELM_CONFIG_HOME="+filepath.Join(h.home, "config"), "HELM_DATA_HOME="+filepath.Join(h.home, "data"))
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if err != nil {
		err = fmt.Errorf("helm %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return out.String(), err
}

func (h *helmCluster) crd(t *testing.T, name string) *apiextensionsv1.CustomResourceDefinition {
	t.Helper()
	crd := &apiextensionsv1.CustomResourceDefinition{}
	if err := h.c.Get(context.Background(), client.ObjectKey{Name: name}, crd); err != nil {
		t.Fatalf("CRD %s: %v", name, err)
	}
	return crd
}

// chartCRDSpec is the spec of the CRD the chart in deploy/helm/cnimedic carries (files/crds).
func chartCRDSpec(t *testing.T, file string) apiextensionsv1.CustomResourceDefinitionSpec {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(chartDir(), "files", "crds", file))
	if err != nil {
		t.Fatal(err)
	}
	crd := &apiextensionsv1.CustomResourceDefinition{}
	if err := yaml.Unmarshal(raw, crd); err != nil {
		t.Fatal(err)
	}
	return crd.Spec
}

var chartCRDs = map[string]string{
	"noderemediations.cnimedic.io":    "cnimedic.io_noderemediations.yaml",
	"remediationpolicies.cnimedic.io": "cnimedic.io_remediationpolicies.yaml",
}

// TestHelmInstallsTheChartOnAFreshClusterAndKeepsTheCRDsOnUninstall runs the helm CLI: helm lint passes; helm
// install with a wrongly typed value fails with the schema's message and creates nothing; helm install on a cluster
// without cnimedic's CRDs creates them (the release's, kept on uninstall) and then the default policy (a post-install
// hook, outside the release); the executor's pull secrets reach the pods the manager creates; helm upgrade leaves
// the policy to the operator; helm uninstall keeps the CRDs, the remediations and the policy; a second install
// takes the CRDs and leaves the policy as it is.
func TestHelmInstallsTheChartOnAFreshClusterAndKeepsTheCRDsOnUninstall(t *testing.T) {
	h := newHelmCluster(t)
	ctx := context.Background()
	if out, err := h.helm("lint", "deploy/helm/cnimedic", "--strict", "--kube-version", "1.37.0"); err != nil {
		t.Fatalf("helm lint: %v", err)
	} else if !strings.Contains(out, "0 chart(s) failed") {
		t.Fatalf("helm lint: %s", out)
	}

	out, err := h.helm("install", "cnimedic", "deploy/helm/cnimedic", "-n", chartNamespace, "--create-namespace", "--set", "replicas=two")
	if err == nil || !strings.Contains(out, "values don't meet the specifications of the schema") || !strings.Contains(out, "at '/replicas': got string, want integer") {
		t.Fatalf("helm install --set replicas=two: %v\n%s\nwant the schema's message naming /replicas", err, out)
	}
	if err := h.c.Get(ctx, client.ObjectKey{Name: "noderemediations.cnimedic.io"}, &apiextensionsv1.CustomResourceDefinition{}); !apierrors.IsNotFound(err) {
		t.Fatalf("a refused install created the CRD anyway: %v", err)
	}

	// A medik8s operator made the node leases' namespace first: the chart uses it and does not take it.
	if err := h.c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "medik8s-leases"}}); err != nil {
		t.Fatal(err)
	}

	// The docs' install command without --wait, which would wait for a manager Deployment that no controller
	// manager or kubelet runs here (the lab's end-to-end suite installs with --wait), and with a pull secret for the
	// executor. The hook's policy is created right after the CRDs, which one API server establishes at once.
	out, err = h.helm("install", "cnimedic", "deploy/helm/cnimedic", "-n", chartNamespace, "--create-namespace",
		"--set-json", `executorImagePullSecrets=[{"name":"node-regcred"}]`)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("helm install:\n%s", out)
	for name := range chartCRDs {
		crd := h.crd(t, name)
		if crd.Annotations["helm.sh/resource-policy"] != "keep" || crd.Annotations["meta.helm.sh/release-name"] != "cnimedic" {
			t.Errorf("CRD %s annotations %v: want the release's, with helm.sh/resource-policy: keep", name, crd.Annotations)
		}
	}
	leasesNS := &corev1.Namespace{}
	if err := h.c.Get(ctx, client.ObjectKey{Name: "medik8s-leases"}, leasesNS); err != nil || leasesNS.Annotations["meta.helm.sh/release-name"] != "" {
		t.Errorf("the node leases' namespace another tool made: %v, annotations %v: want it left to that tool", err, leasesNS.Annotations)
	}
	if err := h.c.Get(ctx, client.ObjectKey{Namespace: "medik8s-leases", Name: "cnimedic-manager-node-leases"}, &rbacv1.Role{}); err != nil {
		t.Errorf("the node leases' Role: %v", err)
	}
	p := &v1alpha1.RemediationPolicy{}
	if err := h.c.Get(ctx, client.ObjectKey{Name: "default"}, p); err != nil {
		t.Fatalf("the chart's default policy after helm install: %v", err)
	}
	if p.Spec.Approval.Mode != v1alpha1.ApprovalManual || p.Annotations["helm.sh/hook"] != "post-install" {
		t.Errorf("the default policy: approval %s, annotations %v: want Manual, made by the post-install hook", p.Spec.Approval.Mode, p.Annotations)
	}
	if manifest, err := h.helm("get", "manifest", "cnimedic", "-n", chartNamespace); err != nil {
		t.Fatal(err)
	} else if strings.Contains(manifest, "templates/policy.yaml") || !strings.Contains(manifest, "templates/crds.yaml") {
		t.Errorf("the release's manifest: want the CRDs in it and the hook's policy not:\n%s", manifest)
	}

	// A diagnosis pod as the manager builds it, in the release namespace, as the executor's ServiceAccount.
	pod := diagnosepod.Pod(diagnosepod.Spec{Node: "worker-1", Namespace: chartNamespace, Name: "cnimedic-diagnose-worker-1",
		Image: "registry.example/cnimedic/executor:v0.2.0", ServiceAccount: "cnimedic-executor", Output: "json"})
	if len(pod.Spec.ImagePullSecrets) != 0 {
		t.Fatalf("the manager's diagnosis pod names pull secrets itself: %v", pod.Spec.ImagePullSecrets)
	}
	if err := h.c.Create(ctx, pod); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(pod.Spec.ImagePullSecrets, []corev1.LocalObjectReference{{Name: "node-regcred"}}) {
		t.Errorf("the diagnosis pod as the API server stored it pulls with %v, want node-regcred from the executor's ServiceAccount", pod.Spec.ImagePullSecrets)
	}

	nr := &v1alpha1.NodeRemediation{ObjectMeta: metav1.ObjectMeta{Name: "nr-kept"},
		Spec: v1alpha1.NodeRemediationSpec{NodeName: "w1", PolicyName: "default", Signature: "ipam-exhausted"}}
	if err := h.c.Create(ctx, nr); err != nil {
		t.Fatal(err)
	}

	// The policy is the operator's from now on: an upgrade neither changes it nor takes it into the release.
	if _, err := h.helm("upgrade", "cnimedic", "deploy/helm/cnimedic", "-n", chartNamespace, "--reuse-values", "--set", "policy.approvalMode=Automatic"); err != nil {
		t.Fatal(err)
	}
	if manifest, err := h.helm("get", "manifest", "cnimedic", "-n", chartNamespace); err != nil {
		t.Fatal(err)
	} else if strings.Contains(manifest, "templates/policy.yaml") {
		t.Errorf("helm upgrade took the install's policy into the release:\n%s", manifest)
	}
	if err := h.c.Get(ctx, client.ObjectKey{Name: "default"}, p); err != nil || p.Spec.Approval.Mode != v1alpha1.ApprovalManual {
		t.Errorf("the default policy after helm upgrade --set policy.approvalMode=Automatic: %v %s, want it unchanged (Manual)", err, p.Spec.Approval.Mode)
	}

	if _, err := h.helm("uninstall", "cnimedic", "-n", chartNamespace, "--wait"); err != nil {
		t.Fatal(err)
	}
	for name := range chartCRDs {
		if crd := h.crd(t, name); crd.DeletionTimestamp != nil {
			t.Errorf("helm uninstall is deleting CRD %s", name)
		}
	}
	if err := h.c.Get(ctx, client.ObjectKey{Name: nr.Name}, nr); err != nil {
		t.Errorf("the NodeRemediation after helm uninstall: %v", err)
	}
	if err := h.c.Get(ctx, client.ObjectKey{Name: "default"}, p); err != nil {
		t.Errorf("the install's policy after helm uninstall: %v, want it left", err)
	}

	// Installed again over the kept CRDs and policy: the CRDs are the new release's, the policy stays as it is.
	if _, err := h.helm("install", "cnimedic", "deploy/helm/cnimedic", "-n", chartNamespace, "--set", "policy.approvalMode=Automatic"); err != nil {
		t.Fatal(err)
	}
	if err := h.c.Get(ctx, client.ObjectKey{Name: "default"}, p); err != nil || p.Spec.Approval.Mode != v1alpha1.ApprovalManual {
		t.Errorf("the policy after a second install: %v %s, want the first one, unchanged", err, p.Spec.Approval.Mode)
	}
}

// TestHelmUpgradeFromTheCRDsDirChartUpgradesTheCRDs installs chart 0.1.0 (CRDs in crds/, created by Helm without
// its ownership labels) and upgrades to this chart with the command docs/operations.md gives, run verbatim: the
// CRDs become the release's and are upgraded to this chart's, and the remediations stay. Without the documented
// flag the upgrade fails on the CRDs' ownership, which is why the docs give it.
func TestHelmUpgradeFromTheCRDsDirChartUpgradesTheCRDs(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join(repo.Root(), "docs", "operations.md"))
	if err != nil {
		t.Fatal(err)
	}
	upgrade := markedCommands(t, string(doc), "helm-upgrade-from-0.1")
	h := newHelmCluster(t)
	ctx := context.Background()

	if _, err := h.helm("install", "cnimedic", filepath.Join("test", "deploytest", previousChart), "-n", chartNamespace, "--create-namespace"); err != nil {
		t.Fatal(err)
	}
	for name, file := range chartCRDs {
		crd := h.crd(t, name)
		if crd.Labels["app.kubernetes.io/managed-by"] == "Helm" {
			t.Fatalf("chart 0.1.0 created CRD %s with Helm's labels %v: it is not the chart this test upgrades from", name, crd.Labels)
		}
		if name == "noderemediations.cnimedic.io" && reflect.DeepEqual(crd.Spec.Versions, chartCRDSpec(t, file).Versions) {
			t.Fatalf("chart 0.1.0's CRD %s equals this chart's: the test would not see an upgrade", name)
		}
	}
	nr := &v1alpha1.NodeRemediation{ObjectMeta: metav1.ObjectMeta{Name: "nr-from-0-1"},
		Spec: v1alpha1.NodeRemediationSpec{NodeName: "w1", PolicyName: "default", Signature: "ipam-exhausted"}}
	if err := h.c.Create(ctx, nr); err != nil {
		t.Fatal(err)
	}

	if out, err := h.helm("upgrade", "cnimedic", "deploy/helm/cnimedic", "-n", chartNamespace); err == nil || !strings.Contains(out, "invalid ownership metadata") {
		t.Errorf("a plain helm upgrade from chart 0.1.0: %v\n%s\nwant Helm's refusal to adopt the CRDs (the reason the docs give a flag)", err, out)
	}
	for _, cmd := range upgrade {
		if cmd[0] != "helm" {
			t.Fatalf("the docs' upgrade block runs %q; the test runs only helm", strings.Join(cmd, " "))
		}
		if out, err := h.helm(cmd[1:]...); err != nil {
			t.Fatalf("%s: %v", strings.Join(cmd, " "), err)
		} else {
			t.Logf("%s:\n%s", strings.Join(cmd, " "), out)
		}
	}
	for name, file := range chartCRDs {
		crd := h.crd(t, name)
		if crd.Labels["helm.sh/chart"] != "cnimedic-0.2.0" || crd.Annotations["helm.sh/resource-policy"] != "keep" {
			t.Errorf("CRD %s after the upgrade: labels %v annotations %v, want chart 0.2.0's with keep", name, crd.Labels, crd.Annotations)
		}
		want := chartCRDSpec(t, file)
		if !reflect.DeepEqual(crd.Spec.Versions, want.Versions) {
			t.Errorf("CRD %s after the upgrade: its versions are not this chart's", name)
		}
	}
	if err := h.c.Get(ctx, client.ObjectKey{Name: nr.Name}, nr); err != nil {
		t.Errorf("the NodeRemediation after the upgrade: %v", err)
	}
	leasesNS := &corev1.Namespace{}
	if err := h.c.Get(ctx, client.ObjectKey{Name: "medik8s-leases"}, leasesNS); err != nil || leasesNS.Annotations["helm.sh/resource-policy"] != "keep" {
		t.Errorf("the node leases' namespace nobody had made: %v, annotations %v: want the chart's, kept", err, leasesNS.Annotations)
	}
	// From now on the CRDs are the release's: a plain upgrade works. The policy chart 0.1.0 made in the release
	// stays in it, and follows the values.
	if _, err := h.helm("upgrade", "cnimedic", "deploy/helm/cnimedic", "-n", chartNamespace, "--set", "policy.approvalMode=Automatic"); err != nil {
		t.Fatal(err)
	}
	if manifest, err := h.helm("get", "manifest", "cnimedic", "-n", chartNamespace); err != nil {
		t.Fatal(err)
	} else if !strings.Contains(manifest, "templates/policy.yaml") {
		t.Errorf("the upgrade from chart 0.1.0 dropped the policy from the release:\n%s", manifest)
	}
	p := &v1alpha1.RemediationPolicy{}
	if err := h.c.Get(ctx, client.ObjectKey{Name: "default"}, p); err != nil || p.Spec.Approval.Mode != v1alpha1.ApprovalAutomatic {
		t.Errorf("chart 0.1.0's policy after helm upgrade --set policy.approvalMode=Automatic: %v %s", err, p.Spec.Approval.Mode)
	}
}

// markedCommands returns the commands of the shell block between <!-- NAME:begin --> and <!-- NAME:end -->.
func markedCommands(t *testing.T, doc, name string) [][]string {
	t.Helper()
	_, rest, ok := strings.Cut(doc, "<!-- "+name+":begin -->")
	if !ok {
		t.Fatalf("docs/operations.md has no <!-- %s:begin --> marker", name)
	}
	block, _, ok := strings.Cut(rest, "<!-- "+name+":end -->")
	if !ok {
		t.Fatalf("docs/operations.md has no <!-- %s:end --> marker", name)
	}
	var cmds [][]string
	for _, line := range strings.Split(block, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "```") || strings.HasPrefix(line, "#") {
			continue
		}
		cmds = append(cmds, strings.Fields(line))
	}
	if len(cmds) == 0 {
		t.Fatalf("docs/operations.md's %s block has no command", name)
	}
	return cmds
}
