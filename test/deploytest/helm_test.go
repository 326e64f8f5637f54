package deploytest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"

	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/engine"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
	"github.com/cnimedic/cnimedic/test/manifests"
	"github.com/cnimedic/cnimedic/test/repo"
)

// The chart is rendered with Helm's own library (helm.sh/helm/v3: chart loader, values coalescing and template
// engine), which is what `helm template` and `helm install` run, and the result is applied to a real API server.

const chartNamespace = "cnimedic-system"

func chartDir() string { return filepath.Join(repo.Root(), "deploy", "helm", "cnimedic") }

func loadChart(t *testing.T) *chart.Chart {
	t.Helper()
	ch, err := loader.Load(chartDir())
	if err != nil {
		t.Fatal(err)
	}
	return ch
}

// renderChart renders the chart as `helm template cnimedic deploy/helm/cnimedic -n cnimedic-system --set ...`
// would, and returns its objects, CRDs first (Helm creates CustomResourceDefinitions before the other kinds the
// chart has).
func renderChart(t *testing.T, ch *chart.Chart, values string) []*unstructured.Unstructured {
	t.Helper()
	objs, err := tryRenderChart(ch, values)
	if err != nil {
		t.Fatal(err)
	}
	return objs
}

// tryRenderChart is renderChart returning helm's error: the values schema's (values.schema.json, checked by the
// same call helm install and helm template make) or the templates'.
func tryRenderChart(ch *chart.Chart, values string) ([]*unstructured.Unstructured, error) {
	vals, err := chartutil.ReadValues([]byte(values))
	if err != nil {
		return nil, err
	}
	if err := chartutil.ProcessDependenciesWithMerge(ch, vals); err != nil {
		return nil, err
	}
	top, err := chartutil.ToRenderValues(ch, vals, chartutil.ReleaseOptions{Name: "cnimedic", Namespace: chartNamespace, IsInstall: true, Revision: 1},
		chartutil.DefaultCapabilities)
	if err != nil {
		return nil, err
	}
	out, err := engine.Render(ch, top)
	if err != nil {
		return nil, fmt.Errorf("helm template: %w", err)
	}
	var stream bytes.Buffer
	names := make([]string, 0, len(out))
	for name := range out {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		if strings.HasSuffix(name, "NOTES.txt") {
			continue
		}
		stream.WriteString(out[name])
		stream.WriteString("\n---\n")
	}
	objs, err := Objects(stream.Bytes())
	if err != nil {
		return nil, fmt.Errorf("the rendered chart is not YAML: %w\n%s", err, stream.String())
	}
	sort.SliceStable(objs, func(i, j int) bool {
		return objs[i].GetKind() == "CustomResourceDefinition" && objs[j].GetKind() != "CustomResourceDefinition"
	})
	return objs, nil
}

func find(objs []*unstructured.Unstructured, kind, name string) *unstructured.Unstructured {
	for _, o := range objs {
		if o.GetKind() == kind && o.GetName() == name {
			return o
		}
	}
	return nil
}

// TestChartInstallsOnARealAPIServer renders the chart with its default values and applies every object to the
// API server (CRDs first): what `helm install` would send, accepted as a whole.
func TestChartInstallsOnARealAPIServer(t *testing.T) {
	env := apiServer(t)
	ctx := context.Background()
	if err := env.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: chartNamespace}}); client.IgnoreAlreadyExists(err) != nil {
		t.Fatal(err)
	}
	objs := renderChart(t, loadChart(t), "")
	kinds := map[string]int{}
	for _, o := range objs {
		kinds[o.GetKind()]++
		if err := env.Client.Patch(ctx, o, client.Apply, client.FieldOwner("helm"), client.ForceOwnership); err != nil {
			t.Fatalf("applying %s %s: %v", o.GetKind(), o.GetName(), err)
		}
	}
	for kind, want := range map[string]int{"CustomResourceDefinition": 4, "Deployment": 1, "ServiceAccount": 2, "PriorityClass": 1,
		"RemediationPolicy": 1, "ValidatingAdmissionPolicy": 2, "ValidatingAdmissionPolicyBinding": 2, "ConfigMap": 1, "Service": 1, "Role": 3,
		"Namespace": 1} {
		if kinds[kind] != want {
			t.Errorf("the chart renders %d %s, want %d", kinds[kind], kind, want)
		}
	}
	if kinds["ServiceMonitor"]+kinds["PrometheusRule"] != 0 || find(objs, "Namespace", chartNamespace) != nil {
		t.Error("monitoring objects and the release namespace are opt-in")
	}
	if ns := find(objs, "Namespace", "medik8s-leases"); ns == nil || ns.GetAnnotations()["helm.sh/resource-policy"] != "keep" {
		t.Error("the chart must make the node leases' namespace, kept on uninstall (other tools' leases live there)")
	}

	// The default policy, as the API server stored and defaulted it: Manual approval, one node at a time.
	p := &v1alpha1.RemediationPolicy{}
	if err := env.Client.Get(ctx, client.ObjectKey{Name: "default"}, p); err != nil {
		t.Fatal(err)
	}
	if p.Spec.Approval.Mode != v1alpha1.ApprovalManual || p.Spec.MaxConcurrent.String() != "1" || p.Spec.Paused || p.Spec.DryRun {
		t.Errorf("default policy: approval %s, maxConcurrent %s", p.Spec.Approval.Mode, p.Spec.MaxConcurrent)
	}
	if err := env.Client.Delete(ctx, p); err != nil {
		t.Fatal(err)
	}
}

// TestChartValues renders with every knob turned and checks that each lands where it should.
func TestChartValues(t *testing.T) {
	objs := renderChart(t, loadChart(t), `
namespace: {create: true}
image: {repository: registry.example/cnimedic/manager, tag: v0.1.0, pullPolicy: Always}
executorImage: registry.example/cnimedic/executor:v0.1.0
canaryImage: registry.example/cnimedic/canary:v0.1.0
resources: {requests: {cpu: 50m, memory: 100Mi}, limits: {memory: 300Mi}}
extraArgs: [--zap-log-level=debug]
extraEnv: [{name: HTTPS_PROXY, value: "http://proxy.example:3128"}]
policy: {approvalMode: Automatic, maxConcurrent: "10%", dryRun: true}
admission: {approverGroups: [sre, oncall]}
metrics: {port: 9443, serviceMonitor: {enabled: true, labels: {release: prom}}, prometheusRule: {enabled: true}}
`)
	dep := find(objs, "Deployment", "cnimedic-manager")
	if dep == nil {
		t.Fatal("no manager Deployment")
	}
	ctrs, _, _ := unstructured.NestedSlice(dep.Object, "spec", "template", "spec", "containers")
	ctr := ctrs[0].(map[string]any)
	var args []string
	for _, a := range ctr["args"].([]any) {
		args = append(args, a.(string))
	}
	for _, want := range []string{"--executor-image=registry.example/cnimedic/executor:v0.1.0", "--canary-image=registry.example/cnimedic/canary:v0.1.0",
		"--metrics-bind-address=:9443", "--zap-log-level=debug"} {
		if !slices.Contains(args, want) {
			t.Errorf("manager args %q lack %q", args, want)
		}
	}
	env, _ := json.Marshal(ctr["env"])
	if !strings.Contains(string(env), `{"name":"HTTPS_PROXY","value":"http://proxy.example:3128"}`) || !strings.Contains(string(env), `"POD_NAMESPACE"`) {
		t.Errorf("manager env %s: want POD_NAMESPACE and the extraEnv", env)
	}
	if ctr["image"] != "registry.example/cnimedic/manager:v0.1.0" || ctr["imagePullPolicy"] != "Always" {
		t.Errorf("image %v pull %v", ctr["image"], ctr["imagePullPolicy"])
	}
	if mem, _, _ := unstructured.NestedString(ctr, "resources", "limits", "memory"); mem != "300Mi" {
		t.Errorf("memory limit %q", mem)
	}
	pol := find(objs, "RemediationPolicy", "default")
	mode, _, _ := unstructured.NestedString(pol.Object, "spec", "approval", "mode")
	mc, _, _ := unstructured.NestedFieldNoCopy(pol.Object, "spec", "maxConcurrent")
	dry, _, _ := unstructured.NestedBool(pol.Object, "spec", "dryRun")
	if mode != "Automatic" || mc != "10%" || !dry {
		t.Errorf("policy: mode %q maxConcurrent %v dryRun %v", mode, mc, dry)
	}
	if groups, _, _ := unstructured.NestedString(find(objs, "ConfigMap", "cnimedic-approval").Object, "data", "groups"); groups != "sre,oncall" {
		t.Errorf("approver groups %q", groups)
	}
	ns := find(objs, "Namespace", chartNamespace)
	if ns == nil || ns.GetLabels()["pod-security.kubernetes.io/enforce"] != "privileged" {
		t.Error("namespace.create must template the namespace with the privileged Pod Security label")
	}
	sm := find(objs, "ServiceMonitor", "cnimedic-manager")
	if sm == nil || sm.GetLabels()["release"] != "prom" {
		t.Error("serviceMonitor.enabled must render a ServiceMonitor with its labels")
	}
	if svc := find(objs, "Service", "cnimedic-manager-metrics"); svc == nil {
		t.Error("no metrics Service")
	} else if ports, _, _ := unstructured.NestedSlice(svc.Object, "spec", "ports"); fmt.Sprint(ports[0].(map[string]any)["port"]) != "9443" {
		t.Errorf("metrics Service port %v", ports[0].(map[string]any)["port"])
	}
	rule := find(objs, "PrometheusRule", "cnimedic")
	if rule == nil {
		t.Fatal("prometheusRule.enabled must render the PrometheusRule")
	}
	// The alerts reach Prometheus untouched by Helm's templating: their {{ $labels }} survive.
	raw, _ := yaml.Marshal(rule.Object)
	if !strings.Contains(string(raw), "{{ $labels.signature }}") {
		t.Error("the PrometheusRule's Prometheus templates were altered by Helm")
	}

	// Off switches.
	objs = renderChart(t, loadChart(t), `{policy: {create: false}, admission: {enabled: false}, metrics: {service: {enabled: false}}}`)
	for _, kind := range []string{"RemediationPolicy", "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding", "Service"} {
		for _, o := range objs {
			if o.GetKind() == kind {
				t.Errorf("%s rendered although switched off", kind)
			}
		}
	}
}

// TestChartMatchesConfig keeps the chart and config/ from drifting: the CRDs, the manager's generated rules and
// the alerts are copies (make helm-sync), and the admission policy is the same policy.
func TestChartMatchesConfig(t *testing.T) {
	root := repo.Root()
	for copyPath, source := range map[string]string{
		"files/crds/cnimedic.io_noderemediations.yaml":        "config/crd/bases/cnimedic.io_noderemediations.yaml",
		"files/crds/cnimedic.io_remediationpolicies.yaml":     "config/crd/bases/cnimedic.io_remediationpolicies.yaml",
		"files/crds/cnimedic.io_cniremediations.yaml":         "config/crd/bases/cnimedic.io_cniremediations.yaml",
		"files/crds/cnimedic.io_cniremediationtemplates.yaml": "config/crd/bases/cnimedic.io_cniremediationtemplates.yaml",
		"files/manager-role.yaml":                             "config/rbac/role.yaml",
		"files/prometheusrule.yaml":                           "config/prometheus/prometheusrule.yaml",
	} {
		a, err := os.ReadFile(filepath.Join(chartDir(), copyPath))
		if err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(filepath.Join(root, source))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(a, b) {
			t.Errorf("deploy/helm/cnimedic/%s differs from %s: run make helm-sync", copyPath, source)
		}
	}

	objs := renderChart(t, loadChart(t), "")
	rendered, err := manifests.Render(filepath.Join(root, "config", "default"))
	if err != nil {
		t.Fatal(err)
	}
	configObjs, err := Objects(rendered)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range configObjs {
		switch want.GetKind() {
		case "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding", "ClusterRole", "Role", "PriorityClass":
		default:
			continue
		}
		got := find(objs, want.GetKind(), want.GetName())
		if got == nil {
			t.Errorf("the chart lacks %s %s", want.GetKind(), want.GetName())
			continue
		}
		for _, field := range []string{"spec", "rules", "value"} {
			if !reflect.DeepEqual(got.Object[field], want.Object[field]) {
				a, _ := yaml.Marshal(got.Object[field])
				b, _ := yaml.Marshal(want.Object[field])
				t.Errorf("%s %s: the chart's %s differs from config/'s\nchart:\n%s\nconfig:\n%s", want.GetKind(), want.GetName(), field, a, b)
			}
		}
	}
	// The manager Deployment's pod is the same but for what values set.
	gotDep, wantDep := find(objs, "Deployment", "cnimedic-manager"), find(configObjs, "Deployment", "cnimedic-manager")
	gotPod, _, _ := unstructured.NestedMap(gotDep.Object, "spec", "template", "spec")
	wantPod, _, _ := unstructured.NestedMap(wantDep.Object, "spec", "template", "spec")
	if !reflect.DeepEqual(gotPod, wantPod) {
		a, _ := yaml.Marshal(gotPod)
		b, _ := yaml.Marshal(wantPod)
		t.Errorf("the chart's manager pod differs from config/manager's\nchart:\n%s\nconfig:\n%s", a, b)
	}
}
