package classify

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
	"github.com/cnimedic/cnimedic/internal/signature"
)

var update = flag.Bool("update", false, "rewrite the golden files from the current output")

// golden compares got with testdata/name, or rewrites it with -update.
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("output differs from %s (go test -update rewrites it after review)\n--- got:\n%s\n--- want:\n%s", path, got, want)
	}
}

func run(t *testing.T, input string, o Options) (string, string) {
	t.Helper()
	f, err := os.Open(filepath.Join("testdata", input))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out, errOut bytes.Buffer
	if err := Run(f, &out, &errOut, o); err != nil {
		t.Fatal(err)
	}
	return out.String(), errOut.String()
}

func TestGoldenOutputs(t *testing.T) {
	cases := []struct{ input, output, golden string }{
		{"events.json", OutputTable, "events.table.golden"},
		{"events.json", OutputJSONL, "events.jsonl.golden"},
		{"messages.jsonl", OutputTable, "messages.table.golden"},
		{"messages.jsonl", OutputJSONL, "messages.jsonl.golden"},
		{"messages.txt", OutputJSONL, "text.jsonl.golden"},
	}
	for _, c := range cases {
		out, _ := run(t, c.input, Options{Output: c.output})
		golden(t, c.golden, []byte(out))
	}
}

// The golden files are reviewed once; these assertions say what in them matters, so that an -update cannot
// quietly bless a regression.
func TestEventListIsGroupedByNode(t *testing.T) {
	f, err := os.Open("testdata/events.json")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	recs, format, err := Read(f)
	if err != nil || format != FormatJSON || len(recs) != 11 {
		t.Fatalf("Read: %d records, format %q, err %v", len(recs), format, err)
	}
	// Where the node comes from: source.host; a Node event's object; kubelet's reportingInstance; nothing for
	// the scheduler.
	for i, want := range map[int]string{0: "worker-1", 7: "worker-4", 8: "", 9: "worker-5"} {
		if recs[i].Node != want {
			t.Errorf("record %d: node %q, want %q", i+1, recs[i].Node, want)
		}
	}
	sums := Summarize(Classify(signature.Default(), signature.DefaultAllowedActions, recs))
	want := []NodeSummary{
		{Node: "worker-1", Signature: "cni-daemon-unavailable", Events: 2, Occurrences: 23, Pods: 2, Action: v1alpha1.ActionEscalate, Preferred: v1alpha1.ActionRestartCNIAgentPod},
		{Node: "worker-2", Signature: "cni-version-incompatible", Events: 2, Occurrences: 8, Pods: 2, Action: v1alpha1.ActionSetCNIVersion},
		{Node: "worker-3", Signature: "ipam-exhausted", Events: 1, Occurrences: 37, Pods: 1, Action: v1alpha1.ActionReclaimIPAM},
		{Node: "worker-5", Signature: "cni-apiserver-access", Events: 1, Occurrences: 6, Pods: 1, Action: v1alpha1.ActionEscalate, Preferred: v1alpha1.ActionRestartCNIAgentPod},
		{Node: "worker-6", Signature: "cni-not-initialized", Events: 1, Occurrences: 2, Pods: 1, Action: v1alpha1.ActionRepairRuntimeCNIConfig},
	}
	if len(sums) != len(want) {
		t.Fatalf("got %d node summaries, want %d: %+v", len(sums), len(want), sums)
	}
	for i := range want {
		if sums[i] != want[i] {
			t.Errorf("summary %d: got %+v, want %+v", i, sums[i], want[i])
		}
	}
}

func TestJSONLKeepsInputOrderAndShape(t *testing.T) {
	out, _ := run(t, "messages.jsonl", Options{Output: OutputJSONL})
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	want := []string{
		`{"signature":"cni-plugin-binary-missing","params":{"path":"/opt/cni/bin","plugin":"flannel","sandboxID":"adf18a2d394b3355e50ce339b2ec0c52e05a71e727f11a043e7e967ecf2ac9f6"},"action":"Escalate","reason":"FailedCreatePodSandBox","node":"worker-7"}`,
		`{"signature":"cni-plugin-binary-missing","params":{"path":"/opt/cni/bin","plugin":"bridge","pluginType":"flannel"},"action":"InstallReferencePlugins","reason":"FailedCreatePodSandBox","node":"worker-8"}`,
		`{"signature":"cni-plugin-binary-missing","params":{"path":"/opt/flannel/bin,/opt/cni/bin","plugin":"portmap"},"action":"InstallReferencePlugins"}`,
		`{"signature":"cni-not-initialized","params":{},"action":"RepairRuntimeCNIConfig","node":"worker-9"}`,
		`{"signature":"","params":{},"reason":"FailedMount","node":"worker-7"}`,
		// A CNI message under a reason that never carries sandbox errors is not evidence.
		`{"signature":"","params":{},"reason":"Pulled"}`,
	}
	if len(lines) != len(want) {
		t.Fatalf("got %d lines, want %d:\n%s", len(lines), len(want), out)
	}
	for i := range want {
		if lines[i] != want[i] {
			t.Errorf("line %d:\n got %s\nwant %s", i+1, lines[i], want[i])
		}
	}
}

func TestPolicyChangesSignaturesAndActions(t *testing.T) {
	spec, err := LoadPolicy("testdata/policy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	out, warnings := run(t, "events.json", Options{Output: OutputJSONL, Policy: spec})
	if !strings.Contains(warnings, `custom signature "broken-pattern": pattern`) {
		t.Errorf("the invalid custom signature must be reported by name, got warnings %q", warnings)
	}
	lines := strings.Split(out, "\n")
	// The policy allows restarting the CNI agent pod: the flannel agent being down now restarts it.
	if !strings.Contains(lines[0], `"signature":"cni-daemon-unavailable"`) || !strings.Contains(lines[0], `"action":"RestartCNIAgentPod"`) {
		t.Errorf("line 1: %s", lines[0])
	}
	// A custom signature names what the catalog leaves alone, with its named group as a parameter.
	if !strings.Contains(lines[6], `"signature":"pause-image-unreachable","params":{"image":"rancher/mirrored-pause:3.6"},"action":"Diagnose","custom":true`) {
		t.Errorf("line 7: %s", lines[6])
	}
	// RepairRuntimeCNIConfig is not allowed by this policy: escalate.
	if !strings.Contains(lines[10], `"signature":"cni-not-initialized"`) || !strings.Contains(lines[10], `"action":"Escalate"`) {
		t.Errorf("line 11: %s", lines[10])
	}
}

func TestReadFormats(t *testing.T) {
	cases := []struct {
		name, input string
		format      Format
		want        []Record
	}{
		{"empty", "  \n", FormatText, nil},
		{"text", "first\r\n\n  second line  \n", FormatText, []Record{{Message: "first", Count: 1}, {Message: "  second line  ", Count: 1}}},
		{"array of events.k8s.io/v1 events", `[{"reason":"FailedKillPod","note":"n1","regarding":{"kind":"Pod","namespace":"ns","name":"p"},"reportingController":"kubelet","reportingInstance":"w1","series":{"count":4}}]`,
			FormatJSON, []Record{{Reason: "FailedKillPod", Message: "n1", Node: "w1", Pod: "ns/p", Count: 4}}},
		{"JSON log line without message", `{"level":"error","msg":"RunPodSandbox failed","error":"x"}`,
			FormatJSON, []Record{{Message: `{"level":"error","msg":"RunPodSandbox failed","error":"x"}`, Count: 1}}},
		{"reportingInstance of another controller is not a node", `{"reason":"r","message":"m","reportingComponent":"default-scheduler","reportingInstance":"default-scheduler-cp1"}`,
			FormatJSON, []Record{{Reason: "r", Message: "m", Count: 1}}},
		{"two lists in a row", `{"kind":"List","items":[{"message":"a"}]}{"kind":"List","items":[{"message":"b","count":2}]}`,
			FormatJSON, []Record{{Message: "a", Count: 1}, {Message: "b", Count: 2}}},
	}
	for _, c := range cases {
		got, format, err := Read(strings.NewReader(c.input))
		if err != nil || format != c.format || len(got) != len(c.want) {
			t.Errorf("%s: %v %q %+v", c.name, err, format, got)
			continue
		}
		for i := range got {
			if got[i] != c.want[i] {
				t.Errorf("%s: record %d = %+v, want %+v", c.name, i, got[i], c.want[i])
			}
		}
	}
}

func TestReadRejectsBrokenJSON(t *testing.T) {
	for _, input := range []string{`{"reason": "x", "message": `, `{"message":"a"} 42`, `{"items":[1]}`} {
		if _, _, err := Read(strings.NewReader(input)); err == nil {
			t.Errorf("Read(%q) accepted it", input)
		}
	}
}

func TestRunRejectsBadOptions(t *testing.T) {
	var out, errOut bytes.Buffer
	if err := Run(strings.NewReader("x"), &out, &errOut, Options{Output: "yaml"}); err == nil {
		t.Error("unknown output format accepted")
	}
	if err := Run(strings.NewReader("x"), &out, &errOut, Options{AllowedActions: []v1alpha1.RepairAction{"Reboot"}}); err == nil {
		t.Error("unknown action accepted")
	}
	if _, err := LoadPolicy("testdata/events.json"); err == nil {
		t.Error("an EventList loaded as a policy")
	}
}

// An event message is written by whoever can create events: ESC [2J in one (clear the screen) comes out of the
// table as visible text that a terminal does not obey, and the JSONL output keeps the message as it was.
func TestAnEscapeInAnEventMessageComesOutOfTheTableVisibleAndInert(t *testing.T) {
	msg := "Failed to create pod sandbox: \x1b[2J\x1b[Hplugin type=\"bridge\" failed (add): incompatible CNI versions"
	in := `{"reason":"FailedCreatePodSandBox","node":"worker-\u001b]0;owned\u0007","message":` + jsonQuote(msg) + "}\n"
	var out, errOut bytes.Buffer
	if err := Run(strings.NewReader(in), &out, &errOut, Options{Output: OutputTable}); err != nil {
		t.Fatal(err)
	}
	table := out.String()
	if strings.ContainsAny(table, "\x1b\a") {
		t.Fatalf("the table holds raw escapes:\n%q", table)
	}
	for _, want := range []string{`\x1b[2J\x1b[H`, `worker-\x1b]0;owned\x07`, "cni-version-incompatible"} {
		if !strings.Contains(table, want) {
			t.Errorf("the table does not show %q:\n%s", want, table)
		}
	}
}

func jsonQuote(s string) string {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s)
	return strings.TrimSpace(b.String())
}

// A sandbox network failure that no signature names is shown as the family, with what would happen to it: the
// diagnosis on the node decides, not the message.
func TestAnUnnamedCNIFailureIsShownAsTheFamilyAndWhatWouldHappen(t *testing.T) {
	// From https://github.com/coredns/coredns/issues/6091 (the plugin was killed: no cause in the message).
	msg := `failed to setup network for sandbox "f1f5708a3613e62a4d38161c36417538dbc3b1e46020bea2a4a7c4cca87603a0": plugin type="calico" failed (add): netplugin failed with no error message: signal: killed`
	recs := []Record{
		{Reason: signature.ReasonFailedCreatePodSandBox, Message: msg, Node: "worker-1", Pod: "kube-system/coredns-1", Count: 3},
		{Reason: "Pulled", Message: "Successfully pulled image", Node: "worker-1", Count: 1},
	}
	cs := Classify(signature.Default(), signature.DefaultAllowedActions, recs)
	if !cs[0].Matched || cs[0].Result.Signature != string(v1alpha1.SignatureCNIUnclassified) || cs[0].Action != v1alpha1.ActionDiagnose {
		t.Fatalf("got %+v, want %s with Diagnose", cs[0], v1alpha1.SignatureCNIUnclassified)
	}
	if cs[1].Matched {
		t.Fatalf("an unrelated event matched %s", cs[1].Result.Signature)
	}
	var out bytes.Buffer
	if err := WriteTable(&out, cs); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"cni-unclassified: a CNI failure no signature names: " + signature.FamilyOutcome + ".",
		"Diagnose (" + signature.FamilyOutcome + ")",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, out.String())
		}
	}
	sums := Summarize(cs)
	if len(sums) != 1 || !sums[0].Family || sums[0].Signature != string(v1alpha1.SignatureCNIUnclassified) {
		t.Errorf("summary %+v, want one cni-unclassified family row", sums)
	}
}
