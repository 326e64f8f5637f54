package deploytest

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"

	"helm.sh/helm/v3/pkg/chartutil"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	"github.com/cnimedic/cnimedic/test/repo"
)

// The chart's values.schema.json is checked by the call helm install, helm upgrade and helm template make before
// they render (chartutil.ToRenderValues, which tryRenderChart runs); helmcli_test.go runs the helm CLI itself.

// TestAWronglyTypedOrMisspeltValueFailsWithAMessageNamingIt gives the chart one bad value at a time and expects
// helm's schema error to name that value's path, before anything is rendered.
func TestAWronglyTypedOrMisspeltValueFailsWithAMessageNamingIt(t *testing.T) {
	ch := loadChart(t)
	for _, c := range []struct{ values, names string }{
		{`replicas: two`, `'/replicas': got string, want integer`},
		{`metrics: {port: "18443"}`, `'/metrics/port': got string, want integer`},
		{`metrics: {port: 70000}`, `'/metrics/port'`},
		{`policy: {approvalMode: manual}`, `'/policy/approvalMode': value must be one of 'Manual', 'Automatic'`},
		{`policy: {maxConcurrent: 0}`, `'/policy/maxConcurrent'`},
		{`policy: {maxConcurrent: "150%"}`, `'/policy/maxConcurrent'`},
		{`policy: {approvalExpiry: 1 day}`, `'/policy/approvalExpiry'`},
		{`policy: {dryRun: "yes"}`, `'/policy/dryRun': got string, want boolean`},
		{`polcy: {create: false}`, `additional properties 'polcy' not allowed`},
		{`crds: {instal: false}`, `additional properties 'instal' not allowed`},
		{`image: {pullPolicy: Sometimes}`, `'/image/pullPolicy'`},
		{`tolerations: {key: a}`, `'/tolerations': got object, want array`},
		{`tolerations: [{key: a, effect: NoSchedul}]`, `'/tolerations/0/effect'`},
		{`nodeSelector: {disktype: 1}`, `'/nodeSelector/disktype': got number, want string`},
		{`affinity: {nodeAfinity: {}}`, `additional properties 'nodeAfinity' not allowed`},
		{`imagePullSecrets: [regcred]`, `'/imagePullSecrets/0': got string, want object`},
		{`executorImagePullSecrets: [{secret: regcred}]`, `'/executorImagePullSecrets/0'`},
		{`podAnnotations: {prometheus.io/scrape: true}`, `'/podAnnotations/prometheus.io~1scrape': got boolean, want string`},
		{`podLabels: {app.kubernetes.io/component: other}`, `'/podLabels/app.kubernetes.io~1component'`},
		{`priorityClassName: 5`, `'/priorityClassName': got number, want string`},
		{`extraArgs: --zap-log-level=debug`, `'/extraArgs': got string, want array`},
		{`extraArgs: [zap-log-level=debug]`, `'/extraArgs/0': 'zap-log-level=debug' does not match pattern '^-'`},
		{`extraEnv: [{value: x}]`, `'/extraEnv/0': missing property 'name'`},
		{`resources: {limits: {memory: lots}}`, `'/resources/limits/memory'`},
		{`admission: {approverGroups: "sre,oncall"}`, `'/admission/approverGroups': got string, want array`},
		{`metrics: {serviceMonitor: {interval: 30}}`, `'/metrics/serviceMonitor/interval'`},
	} {
		_, err := tryRenderChart(ch, c.values)
		if err == nil {
			t.Errorf("%s: the chart rendered, want the schema to refuse it", c.values)
			continue
		}
		if !strings.Contains(err.Error(), "values don't meet the specifications of the schema") || !strings.Contains(err.Error(), c.names) {
			t.Errorf("%s: %v\nwant a schema error containing %q", c.values, err, c.names)
		}
	}
}

// TestEveryValueOfValuesYAMLIsInTheSchemaAndValidates walks values.yaml: each key is declared by the schema (down to
// the maps and lists whose items the schema types), every key the schema requires is in values.yaml, and the
// file as a whole validates, so the schema neither misses a value nor refuses the defaults.
func TestEveryValueOfValuesYAMLIsInTheSchemaAndValidates(t *testing.T) {
	ch := loadChart(t)
	if ch.Schema == nil {
		t.Fatal("the chart has no values.schema.json")
	}
	if err := chartutil.ValidateAgainstSingleSchema(ch.Values, ch.Schema); err != nil {
		t.Fatalf("values.yaml does not validate against values.schema.json: %v", err)
	}
	var schema map[string]any
	if err := json.Unmarshal(ch.Schema, &schema); err != nil {
		t.Fatal(err)
	}
	if schema["$schema"] != "http://json-schema.org/draft-07/schema#" {
		t.Errorf("values.schema.json's $schema is %v, want draft 7", schema["$schema"])
	}
	defs, _ := schema["definitions"].(map[string]any)
	resolve := func(node map[string]any) map[string]any {
		if ref, ok := node["$ref"].(string); ok {
			def, _ := defs[strings.TrimPrefix(ref, "#/definitions/")].(map[string]any)
			if def == nil {
				t.Fatalf("values.schema.json: %s resolves to nothing", ref)
			}
			return def
		}
		return node
	}
	var walk func(path string, values map[string]any, node map[string]any)
	walk = func(path string, values map[string]any, node map[string]any) {
		node = resolve(node)
		props, _ := node["properties"].(map[string]any)
		if _, typed := node["additionalProperties"].(map[string]any); typed {
			return // a map of typed values (labels, nodeSelector...), some keys perhaps forbidden
		}
		if props == nil {
			t.Errorf("%s: the schema leaves its keys untyped", path)
			return
		}
		if node["additionalProperties"] != false {
			t.Errorf("%s: the schema accepts keys it does not know (additionalProperties is not false)", path)
		}
		for key, v := range values {
			sub, ok := props[key].(map[string]any)
			if !ok {
				t.Errorf("%s.%s is in values.yaml but not in values.schema.json", path, key)
				continue
			}
			if m, ok := v.(map[string]any); ok {
				walk(path+"."+key, m, sub)
			}
		}
		req, _ := node["required"].([]any)
		for _, r := range req {
			if _, ok := values[r.(string)]; !ok {
				t.Errorf("%s.%s is required by values.schema.json but not in values.yaml", path, r)
			}
		}
		var keys []string
		for key := range props {
			if _, ok := values[key]; !ok && key != "global" {
				keys = append(keys, key)
			}
		}
		// Every object of values.yaml lists all its keys, so that values.yaml documents them all.
		if len(keys) > 0 && path != ".resources" && path != ".affinity" {
			sort.Strings(keys)
			t.Errorf("%s: values.schema.json declares %v, which values.yaml does not set", path, keys)
		}
	}
	walk("", ch.Values, schema)
}

// TestTheSchedulingAndPullSecretValuesReachTheManagersPodAndTheExecutorsServiceAccount renders the chart with each
// scheduling and pull-secret value set and finds it in the manager's pod template (the selector's labels kept)
// or on the executor's ServiceAccount.
func TestTheSchedulingAndPullSecretValuesReachTheManagersPodAndTheExecutorsServiceAccount(t *testing.T) {
	objs := renderChart(t, loadChart(t), `
nodeSelector: {node-role.kubernetes.io/infra: ""}
affinity:
  nodeAffinity:
    requiredDuringSchedulingIgnoredDuringExecution:
      nodeSelectorTerms: [{matchExpressions: [{key: kubernetes.io/arch, operator: In, values: [amd64]}]}]
tolerations: [{key: dedicated, operator: Equal, value: infra, effect: NoSchedule}]
priorityClassName: infra-critical
podAnnotations: {prometheus.io/scrape: "false"}
podLabels: {team: platform}
imagePullSecrets: [{name: regcred}]
executorImagePullSecrets: [{name: node-regcred}]
`)
	dep := find(objs, "Deployment", "cnimedic-manager")
	if dep == nil {
		t.Fatal("no manager Deployment")
	}
	pod, _, _ := unstructured.NestedMap(dep.Object, "spec", "template")
	for field, want := range map[string]string{
		"spec.nodeSelector":      `{"node-role.kubernetes.io/infra":""}`,
		"spec.affinity":          `{"nodeAffinity":{"requiredDuringSchedulingIgnoredDuringExecution":{"nodeSelectorTerms":[{"matchExpressions":[{"key":"kubernetes.io/arch","operator":"In","values":["amd64"]}]}]}}}`,
		"spec.tolerations":       `[{"effect":"NoSchedule","key":"dedicated","operator":"Equal","value":"infra"}]`,
		"spec.priorityClassName": `"infra-critical"`,
		"spec.imagePullSecrets":  `[{"name":"regcred"}]`,
		"metadata.annotations":   `{"prometheus.io/scrape":"false"}`,
		"metadata.labels":        `{"app.kubernetes.io/component":"manager","app.kubernetes.io/name":"cnimedic","team":"platform"}`,
	} {
		v, _, _ := unstructured.NestedFieldNoCopy(pod, strings.Split(field, ".")...)
		got, _ := json.Marshal(v)
		if string(got) != want {
			t.Errorf("the manager pod's %s is %s, want %s", field, got, want)
		}
	}
	sa := find(objs, "ServiceAccount", "cnimedic-executor")
	if got, _ := json.Marshal(sa.Object["imagePullSecrets"]); string(got) != `[{"name":"node-regcred"}]` {
		t.Errorf("the executor ServiceAccount's imagePullSecrets are %s, want node-regcred", got)
	}
	if got, _ := json.Marshal(find(objs, "ServiceAccount", "cnimedic-manager").Object["imagePullSecrets"]); string(got) != "null" {
		t.Errorf("the manager's ServiceAccount got pull secrets %s; the manager's are on its pod", got)
	}

	// The node leases: the default namespace is the manager's default (no flag), another one is passed to it and
	// gets the Role, none takes no leases and grants nothing.
	for _, c := range []struct {
		values, flag, roleNS string
	}{
		{"", "", "medik8s-leases"},
		{"nodeLeases: {namespace: node-leases}", "--node-lease-namespace=node-leases", "node-leases"},
		{`nodeLeases: {namespace: ""}`, "--node-lease-namespace=", ""},
	} {
		objs := renderChart(t, loadChart(t), c.values)
		args, _ := json.Marshal(find(objs, "Deployment", "cnimedic-manager").Object["spec"].(map[string]any)["template"])
		hasFlag := strings.Contains(string(args), "--node-lease-namespace")
		if (c.flag != "") != hasFlag || (c.flag != "" && !strings.Contains(string(args), `"`+c.flag+`"`)) {
			t.Errorf("%q: the manager's args %s, want flag %q", c.values, args, c.flag)
		}
		if ns := find(objs, "Namespace", c.roleNS); c.roleNS != "" && ns == nil {
			t.Errorf("%q: no Namespace %s for the leases", c.values, c.roleNS)
		}
		role := find(objs, "Role", "cnimedic-manager-node-leases")
		if c.roleNS == "" && role != nil || c.roleNS != "" && (role == nil || role.GetNamespace() != c.roleNS) {
			t.Errorf("%q: the node leases' Role %v, want it in %q", c.values, role, c.roleNS)
		}
	}

	for _, o := range renderChart(t, loadChart(t), `nodeLeases: {createNamespace: false}`) {
		if o.GetKind() == "Namespace" {
			t.Errorf("nodeLeases.createNamespace=false rendered Namespace %s", o.GetName())
		}
	}

	// Empty values leave the fields out rather than rendering them empty.
	objs = renderChart(t, loadChart(t), `{priorityClassName: "", tolerations: []}`)
	spec, _, _ := unstructured.NestedMap(find(objs, "Deployment", "cnimedic-manager").Object, "spec", "template", "spec")
	for _, field := range []string{"priorityClassName", "tolerations", "nodeSelector", "affinity", "imagePullSecrets"} {
		if _, ok := spec[field]; ok {
			t.Errorf("the manager pod has %s = %v although its value is empty", field, spec[field])
		}
	}
}

// TestTheCRDsAreTemplatesThatHelmKeepsAndEqualConfig: the chart has nothing in crds/ (which Helm never upgrades);
// its templates render the two CRDs of config/crd/bases unchanged but for the chart's labels and
// helm.sh/resource-policy: keep, and crds.install=false leaves them out.
func TestTheCRDsAreTemplatesThatHelmKeepsAndEqualConfig(t *testing.T) {
	ch := loadChart(t)
	if crds := ch.CRDObjects(); len(crds) != 0 {
		t.Errorf("the chart has %d CRDs in crds/, which helm upgrade never upgrades and which would collide with templates/crds.yaml", len(crds))
	}
	objs := renderChart(t, ch, "")
	for _, name := range []string{"cnimedic.io_noderemediations.yaml", "cnimedic.io_remediationpolicies.yaml"} {
		raw, err := os.ReadFile(filepath.Join(repo.Root(), "config", "crd", "bases", name))
		if err != nil {
			t.Fatal(err)
		}
		want := &unstructured.Unstructured{}
		if err := yaml.Unmarshal(raw, &want.Object); err != nil {
			t.Fatal(err)
		}
		got := find(objs, "CustomResourceDefinition", want.GetName())
		if got == nil {
			t.Errorf("the chart does not render CRD %s", want.GetName())
			continue
		}
		if !reflect.DeepEqual(got.Object["spec"], want.Object["spec"]) {
			t.Errorf("CRD %s: the chart's spec differs from config/crd/bases/%s (run make helm-sync)", want.GetName(), name)
		}
		if got.GetAnnotations()["helm.sh/resource-policy"] != "keep" {
			t.Errorf("CRD %s lacks helm.sh/resource-policy: keep: helm uninstall would delete every object of its kind", want.GetName())
		}
		for k, v := range want.GetAnnotations() {
			if got.GetAnnotations()[k] != v {
				t.Errorf("CRD %s lost its annotation %s=%s", want.GetName(), k, v)
			}
		}
		if got.GetLabels()["app.kubernetes.io/managed-by"] != "Helm" || got.GetLabels()["helm.sh/chart"] != "cnimedic-"+ch.Metadata.Version {
			t.Errorf("CRD %s's labels %v: want the chart's", want.GetName(), got.GetLabels())
		}
	}
	for _, o := range renderChart(t, ch, `crds: {install: false}`) {
		if o.GetKind() == "CustomResourceDefinition" {
			t.Errorf("crds.install=false rendered CRD %s", o.GetName())
		}
	}
}
