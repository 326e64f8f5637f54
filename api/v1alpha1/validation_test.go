package v1alpha1_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/controller-runtime/pkg/client"
	sigsyaml "sigs.k8s.io/yaml"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
	policypkg "github.com/cnimedic/cnimedic/internal/policy"
	"github.com/cnimedic/cnimedic/test/repo"
	"github.com/cnimedic/cnimedic/test/testenv"
)

var env *testenv.Env

func TestMain(m *testing.M) { testenv.Main(m, &env, nil) }

// object parses one YAML document into an unstructured object.
func object(t *testing.T, doc string) *unstructured.Unstructured {
	t.Helper()
	u := &unstructured.Unstructured{}
	if err := sigsyaml.Unmarshal([]byte(doc), &u.Object); err != nil {
		t.Fatalf("bad test YAML: %v\n%s", err, doc)
	}
	return u
}

func policy(name, spec string) string {
	return fmt.Sprintf("apiVersion: cnimedic.io/v1alpha1\nkind: RemediationPolicy\nmetadata:\n  name: %s\nspec:\n%s", name, indent(spec))
}

func remediation(name, spec string) string {
	return fmt.Sprintf("apiVersion: cnimedic.io/v1alpha1\nkind: NodeRemediation\nmetadata:\n  name: %s\nspec:\n%s", name, indent(spec))
}

func indent(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	for i, l := range lines {
		lines[i] = "  " + l
	}
	return strings.Join(lines, "\n") + "\n"
}

// badCreates are objects the API server must refuse, each with the message a user sees. Every validation rule of
// the CRDs has at least one case here (TestEveryRuleIsTested checks that), so removing a rule fails this table.
var badCreates = []struct {
	name string
	doc  string
	want string
}{
	{"maxConcurrent zero", policy("mc-zero", "maxConcurrent: 0"),
		"maxConcurrent must be a whole number of at least 1 or a percentage from 1% to 100%, such as 1 or 10%"},
	{"maxConcurrent over 100%", policy("mc-150", `maxConcurrent: "150%"`),
		"maxConcurrent must be a whole number of at least 1 or a percentage from 1% to 100%, such as 1 or 10%"},
	{"maxConcurrent words", policy("mc-words", `maxConcurrent: "two"`),
		"maxConcurrent must be a whole number of at least 1 or a percentage from 1% to 100%, such as 1 or 10%"},
	{"unknown signature id", policy("unknown-sig", "signatures: [cni-is-sad]"),
		`spec.signatures[0]: Unsupported value: "cni-is-sad"`},
	{"selector and names together", policy("both", "nodeSelector:\n  matchLabels: {pool: a}\nnodeNames: [worker-1]"),
		"set either nodeSelector or nodeNames, not both"},
	{"custom signature without action", policy("no-action", "customSignatures:\n- name: mine\n  pattern: boom"),
		"spec.customSignatures[0].action: Required value"},
	{"custom signature with empty pattern", policy("empty-pattern", "customSignatures:\n- name: mine\n  pattern: \"\"\n  action: Diagnose"),
		"spec.customSignatures[0].pattern: Invalid value: \"\": spec.customSignatures[0].pattern in body should be at least 1 chars long"},
	{"custom signature named like a built-in", policy("builtin-name", "customSignatures:\n- name: ipam-exhausted\n  pattern: boom\n  action: Diagnose"),
		"name is a built-in signature id; choose another name for a custom signature"},
	{"custom signature with a bad name", policy("bad-name", "customSignatures:\n- name: My_Signature\n  pattern: boom\n  action: Diagnose"),
		"spec.customSignatures[0].name in body should match"},
	{"custom signature with an unknown action", policy("bad-action", "customSignatures:\n- name: mine\n  pattern: boom\n  action: Reboot"),
		`spec.customSignatures[0].action: Unsupported value: "Reboot"`},
	{"two custom signatures with one name", policy("dup-custom", "customSignatures:\n- name: mine\n  pattern: a\n  action: Diagnose\n- name: mine\n  pattern: b\n  action: Escalate"),
		`spec.customSignatures[1]: Duplicate value: {"name":"mine"}`},
	{"negative stuck duration", policy("neg-stuck", "detection: {minStuckDuration: -1m}"),
		"spec.detection.minStuckDuration: Invalid value: \"-1m\": must be a non-negative duration such as 90s, 5m or 1h30m"},
	{"negative window", policy("neg-window", "detection: {window: -5m}"),
		"window must be a positive duration such as 10m"},
	{"zero window", policy("zero-window", "detection: {window: 0s, evidenceExpiry: 15m}"),
		"window must be a positive duration such as 10m"},
	{"expiry shorter than window", policy("short-expiry", "detection: {window: 30m, evidenceExpiry: 10m}"),
		"evidenceExpiry must be at least as long as window, or evidence expires before it can count"},
	{"expiry not a duration", policy("words-expiry", "detection: {evidenceExpiry: ten minutes}"),
		"evidenceExpiry must be a positive duration such as 15m"},
	{"node condition rule for Ready", policy("cond-ready", "detection:\n  nodeConditions:\n  - type: Ready\n    status: \"False\""),
		"the Ready condition is read by the built-in signatures already (its message names the failure); map another condition type"},
	{"node condition rule with a bad signature name", policy("cond-bad-sig", "detection:\n  nodeConditions:\n  - type: NetworkUnavailable\n    signature: No_Route"),
		"signature must be a built-in signature id or a custom signature's name (lowercase letters, digits and dashes), or empty for the cni-unclassified family"},
	{"node condition rule with an unknown status", policy("cond-bad-status", "detection:\n  nodeConditions:\n  - type: NetworkUnavailable\n    status: Maybe"),
		`spec.detection.nodeConditions[0].status: Unsupported value: "Maybe"`},
	{"two node condition rules for one type", policy("cond-dup", "detection:\n  nodeConditions:\n  - type: CNIProblem\n  - type: CNIProblem\n    reason: Other"),
		`spec.detection.nodeConditions[1]: Duplicate value: {"type":"CNIProblem"}`},
	{"zero occurrences", policy("zero-occ", "detection: {minOccurrences: 0}"),
		"spec.detection.minOccurrences: Invalid value: 0: spec.detection.minOccurrences in body should be greater than or equal to 1"},
	{"negative boot grace", policy("neg-boot", "detection: {bootGracePeriod: -3m}"),
		"spec.detection.bootGracePeriod: Invalid value: \"-3m\": must be a non-negative duration"},
	{"unknown approval mode", policy("bad-mode", "approval: {mode: Sometimes}"),
		`spec.approval.mode: Unsupported value: "Sometimes"`},
	{"negative approval expiry", policy("neg-approval", "approval: {expiry: -1h}"),
		"expiry must be a positive duration such as 24h"},
	{"storm threshold zero", policy("storm-zero", "storm: {thresholdPercent: 0}"),
		"spec.storm.thresholdPercent in body should be greater than or equal to 1"},
	{"storm threshold over 100", policy("storm-101", "storm: {thresholdPercent: 101}"),
		"spec.storm.thresholdPercent in body should be less than or equal to 100"},
	{"negative storm cooldown", policy("neg-cooldown", "storm: {cooldown: -30m}"),
		"spec.storm.cooldown: Invalid value: \"-30m\": must be a non-negative duration"},
	{"negative drain grace period", policy("neg-grace", "drain: {gracePeriodSeconds: -1}"),
		"spec.drain.gracePeriodSeconds in body should be greater than or equal to 0"},
	{"negative drain timeout", policy("neg-drain", "drain: {timeout: -10m}"),
		"timeout must be a positive duration such as 10m"},
	{"unknown drain escape", policy("bad-escape", "drain: {onTimeout: DeleteEverything}"),
		`spec.drain.onTimeout: Unsupported value: "DeleteEverything"`},
	{"cniVersion not a version", policy("bad-version", "repair: {cniVersion: v1.0}"),
		"spec.repair.cniVersion in body should match"},
	{"relative containerd config path", policy("rel-path", "repair:\n  containerd: {configPath: etc/containerd/config.toml}"),
		"spec.repair.containerd.configPath in body should match '^/'"},
	{"unit name without .service", policy("bad-unit", "repair:\n  units: {kubelet: kubelet}"),
		"spec.repair.units.kubelet in body should match"},
	{"unknown allowed action", policy("bad-allowed", "allowedActions: [Reboot]"),
		`spec.allowedActions[0]: Unsupported value: "Reboot"`},
	{"zero retries", policy("zero-retry", "retry: {maxAttempts: 0}"),
		"spec.retry.maxAttempts in body should be greater than or equal to 1"},
	{"negative retry cooldown", policy("neg-retry", "retry: {cooldown: -1h}"),
		"spec.retry.cooldown: Invalid value: \"-1h\": must be a non-negative duration"},
	{"zero verification timeout", policy("zero-verify", "verification: {timeout: 0s}"),
		"timeout must be a positive duration such as 5m"},
	{"zero executor timeout", policy("zero-exec", "executor: {timeout: 0s}"),
		"timeout must be a positive duration such as 10m"},
	{"remediation without node", remediation("no-node", "policyName: default\nsignature: ipam-exhausted"),
		"spec.nodeName: Required value"},
	{"remediation with a bad signature name", remediation("bad-sig", "nodeName: worker-1\npolicyName: default\nsignature: Bad_Sig"),
		"spec.signature in body should match"},
}

// A NodeRemediation a person writes is a request: the action and the plan are the manager's (status), so a spec
// that names them keeps neither (the API server prunes fields the schema does not have).
func TestARequestCannotCarryItsOwnActionOrPlan(t *testing.T) {
	ctx := context.Background()
	obj := object(t, remediation("carries-plan", "nodeName: worker-1\npolicyName: default\nsignature: ipam-exhausted\naction: SetCNIVersion\nplan:\n  steps:\n  - type: StopUnit\n    unit: sshd.service"))
	if err := env.Client.Create(ctx, obj); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = env.Client.Delete(ctx, obj) }()
	got := &unstructured.Unstructured{}
	got.SetGroupVersionKind(obj.GroupVersionKind())
	if err := env.Client.Get(ctx, client.ObjectKeyFromObject(obj), got); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"action", "plan"} {
		if _, found, _ := unstructured.NestedFieldNoCopy(got.Object, "spec", f); found {
			t.Errorf("spec.%s was kept: a request must not choose what runs", f)
		}
	}
}

func TestBadObjectsAreRejected(t *testing.T) {
	ctx := context.Background()
	for _, tc := range badCreates {
		t.Run(tc.name, func(t *testing.T) {
			obj := object(t, tc.doc)
			err := env.Client.Create(ctx, obj)
			if err == nil {
				_ = env.Client.Delete(ctx, obj)
				t.Fatalf("the API server accepted an invalid object; want an error containing %q", tc.want)
			}
			if !apierrors.IsInvalid(err) {
				t.Fatalf("want an Invalid error, got %v", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error does not say what to fix:\n got: %v\nwant: …%s…", err, tc.want)
			}
		})
	}
}

// badUpdates are changes to a valid NodeRemediation the API server must refuse.
var badUpdates = []struct {
	name   string
	mutate func(u *unstructured.Unstructured)
	status bool
	want   string
}{
	{"node is immutable", func(u *unstructured.Unstructured) {
		_ = unstructured.SetNestedField(u.Object, "worker-2", "spec", "nodeName")
	}, false, "nodeName is immutable: open a new NodeRemediation for another node"},
	{"signature is immutable", func(u *unstructured.Unstructured) {
		_ = unstructured.SetNestedField(u.Object, "ipam-exhausted", "spec", "signature")
	}, false, "signature is immutable: open a new NodeRemediation for another failure"},
	{"policy is immutable", func(u *unstructured.Unstructured) {
		_ = unstructured.SetNestedField(u.Object, "other", "spec", "policyName")
	}, false, "policyName is immutable"},
	{"phase must be a phase of the design", func(u *unstructured.Unstructured) {
		_ = unstructured.SetNestedField(u.Object, "Exploded", "status", "phase")
	}, true, `status.phase: Unsupported value: "Exploded"`},
}

func TestBadUpdatesAreRejected(t *testing.T) {
	ctx := context.Background()
	for i, tc := range badUpdates {
		t.Run(tc.name, func(t *testing.T) {
			obj := object(t, remediation(fmt.Sprintf("update-%d", i), "nodeName: worker-1\npolicyName: default\nsignature: cni-version-missing"))
			if err := env.Client.Create(ctx, obj); err != nil {
				t.Fatalf("creating the valid object: %v", err)
			}
			t.Cleanup(func() { _ = env.Client.Delete(ctx, obj) })
			tc.mutate(obj)
			var err error
			if tc.status {
				err = env.Client.Status().Update(ctx, obj)
			} else {
				err = env.Client.Update(ctx, obj)
			}
			if err == nil {
				t.Fatalf("the API server accepted an invalid update; want an error containing %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error does not say what to fix:\n got: %v\nwant: …%s…", err, tc.want)
			}
		})
	}
}

// TestSamplesAreAccepted applies every sample of config/samples and checks the defaults the API server fills in.
func TestSamplesAreAccepted(t *testing.T) {
	ctx := context.Background()
	files, err := filepath.Glob(filepath.Join(repo.Root(), "config", "samples", "cnimedic_*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no samples found: %v", err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			obj := &unstructured.Unstructured{}
			if err := yaml.Unmarshal(data, &obj.Object); err != nil {
				t.Fatal(err)
			}
			obj.SetName("sample-" + obj.GetName())
			if err := env.Client.Create(ctx, obj); err != nil {
				t.Fatalf("sample rejected: %v", err)
			}
			t.Cleanup(func() { _ = env.Client.Delete(ctx, obj) })
		})
	}
}

// TestDefaults checks that an empty policy gets the safe defaults: manual approval, one node at a time, all
// built-in node actions but the agent pod restart.
func TestDefaults(t *testing.T) {
	ctx := context.Background()
	obj := object(t, "apiVersion: cnimedic.io/v1alpha1\nkind: RemediationPolicy\nmetadata:\n  name: empty\n")
	if err := env.Client.Create(ctx, obj); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Client.Delete(ctx, obj) })
	want := map[string]any{
		"approval.mode":                  "Manual",
		"approval.expiry":                "24h",
		"maxConcurrent":                  int64(1),
		"detection.window":               "10m",
		"detection.minOccurrences":       int64(3),
		"storm.thresholdPercent":         int64(25),
		"drain.onTimeout":                "Abort",
		"repair.versionStrategy":         "RewriteConfig",
		"repair.installReferencePlugins": true,
		"repair.units.kubelet":           "kubelet.service",
		"verification.canary":            true,
		"retry.maxAttempts":              int64(3),
		"executor.priorityClassName":     "cnimedic-executor",
	}
	for path, v := range want {
		got, found, err := unstructured.NestedFieldNoCopy(obj.Object, append([]string{"spec"}, strings.Split(path, ".")...)...)
		if err != nil || !found || got != v {
			t.Errorf("spec.%s = %v (found %v), want %v", path, got, found, v)
		}
	}
	actions, _, _ := unstructured.NestedStringSlice(obj.Object, "spec", "allowedActions")
	for _, a := range actions {
		if a == "RestartCNIAgentPod" {
			t.Errorf("RestartCNIAgentPod must be off by default; allowedActions = %v", actions)
		}
	}
}

// A node condition rule that names only a type maps the condition's True status (node-problem-detector's "problem
// present") to the cni-unclassified family.
func TestANodeConditionRuleMapsTheTrueStatusByDefault(t *testing.T) {
	ctx := context.Background()
	obj := object(t, policy("cond-default", "detection:\n  nodeConditions:\n  - type: NetworkUnavailable"))
	if err := env.Client.Create(ctx, obj); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Client.Delete(ctx, obj) })
	rules, _, _ := unstructured.NestedSlice(obj.Object, "spec", "detection", "nodeConditions")
	if len(rules) != 1 || rules[0].(map[string]any)["status"] != "True" {
		t.Fatalf("spec.detection.nodeConditions = %v, want status True by default", rules)
	}
	if sig, found := rules[0].(map[string]any)["signature"]; found {
		t.Errorf("signature defaulted to %v: empty means the cni-unclassified family", sig)
	}
}

// TestEveryRuleIsTested reads the generated CRDs and fails when a CEL rule's message has no case in the tables
// above: a rule nobody tries to break is a rule nobody notices is gone.
func TestEveryRuleIsTested(t *testing.T) {
	var tested strings.Builder
	for _, c := range badCreates {
		tested.WriteString(c.want + "\n")
	}
	for _, c := range badUpdates {
		tested.WriteString(c.want + "\n")
	}
	files, _ := filepath.Glob(filepath.Join(repo.Root(), "config", "crd", "bases", "*.yaml"))
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var crd map[string]any
		if err := sigsyaml.Unmarshal(data, &crd); err != nil {
			t.Fatal(err)
		}
		for _, msg := range celMessages(crd) {
			// Messages shared by several fields are tested once; the table's wants quote them whole or by
			// their distinctive start.
			if !strings.Contains(tested.String(), strings.TrimSuffix(msg, " such as 90s, 5m or 1h30m")) {
				t.Errorf("%s: the rule with message %q has no case in the bad-object tables", filepath.Base(f), msg)
			}
		}
	}
}

func celMessages(v any) []string {
	var out []string
	switch x := v.(type) {
	case map[string]any:
		if rules, ok := x["x-kubernetes-validations"].([]any); ok {
			for _, r := range rules {
				if m, ok := r.(map[string]any)["message"].(string); ok {
					out = append(out, m)
				}
			}
		}
		for _, child := range x {
			out = append(out, celMessages(child)...)
		}
	case []any:
		for _, child := range x {
			out = append(out, celMessages(child)...)
		}
	}
	return out
}

// TestGoDefaultsMatchTheCRD keeps policy.DefaultSpec, which finishes repairs whose policy was deleted, equal to
// what the API server gives an empty policy.
func TestGoDefaultsMatchTheCRD(t *testing.T) {
	ctx := context.Background()
	p := &v1alpha1.RemediationPolicy{ObjectMeta: metav1.ObjectMeta{Name: "defaults"}}
	if err := env.Client.Create(ctx, p); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Client.Delete(ctx, p) })
	if want := policypkg.DefaultSpec(); !equality.Semantic.DeepEqual(p.Spec, want) {
		t.Fatalf("policy.DefaultSpec differs from the CRD's defaults:\n%s", cmp.Diff(want, p.Spec))
	}
}
