package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
	"github.com/cnimedic/cnimedic/internal/diagnosepod"
	"github.com/cnimedic/cnimedic/remediator/diagnose"
	"github.com/cnimedic/cnimedic/remediator/executor"
	"github.com/cnimedic/cnimedic/remediator/resolve"
)

// repo is the repository's top directory.
func repo() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// pluginDir is a set built by hack/build-cni-plugins.sh (test/nodetest is out of cmd's reach).
func pluginDir(t *testing.T, set string) string {
	dir := filepath.Join(repo(), "bin", "cni-"+set)
	if _, err := os.Stat(filepath.Join(dir, "bridge")); err != nil {
		t.Fatalf("plugin set %s is not built (%v); run: hack/build-cni-plugins.sh %s", set, err, set)
	}
	return dir
}

func write(t *testing.T, root, p string, b []byte, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(filepath.Join(root, p)), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, p), b, mode); err != nil {
		t.Fatal(err)
	}
}

const seedConflist = `{
  "cniVersion": "1.0.0",
  "name": "containerd-net",
  "plugins": [
    {"type": "bridge", "bridge": "cni0", "isGateway": true,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.88.0.0/16"}]]}},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
`

func runCLI(t *testing.T, args ...string) []byte {
	t.Helper()
	cmd := newRoot()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetArgs(args)
	if err := cmd.Execute(); err != nil {
		t.Fatalf("remediator %s: %v", strings.Join(args, " "), err)
	}
	return out.Bytes()
}

// The plan command previews the exact conflist diff on a node laid out like the seed, and changes nothing.
func TestPlanShowsTheExactDiffAndChangesNothing(t *testing.T) {
	if err := os.MkdirAll(filepath.Join(repo(), ".lab", "tmp"), 0o755); err != nil {
		t.Fatal(err)
	}
	root, err := os.MkdirTemp(filepath.Join(repo(), ".lab", "tmp"), "cli-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(root) })
	old := pluginDir(t, "old")
	for _, p := range []string{"bridge", "host-local", "portmap", "loopback"} {
		raw, err := os.ReadFile(filepath.Join(old, p))
		if err != nil {
			t.Fatal(err)
		}
		write(t, root, "/opt/cni/bin/"+p, raw, 0o755)
	}
	conf := []byte(seedConflist)
	write(t, root, "/etc/cni/net.d/10-containerd-net.conflist", conf, 0o644)
	// The runtime is absent (plan and diagnose must work without it) and only a link that does not exist is read.
	common := []string{"--host-root", root, "--cri-socket", "/run/none.sock", "--link", "cnmnone0", "--dbus-address", "unix:path=/run/none-bus"}

	var p resolve.PlanPreview
	out := runCLI(t, append([]string{"plan", "--signature", "cni-version-incompatible", "--params", `{"configFile":"10-containerd-net.conflist"}`}, common...)...)
	if err := json.Unmarshal(out, &p); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if len(p.Steps) != 6 || p.Steps[2].Type != "SetCNIVersion" || len(p.Steps[2].Changes) != 1 {
		t.Fatalf("preview: %s", out)
	}
	diff := p.Steps[2].Changes[0].Diff
	for _, want := range []string{
		"--- a/etc/cni/net.d/10-containerd-net.conflist\n+++ b/etc/cni/net.d/10-containerd-net.conflist\n",
		"-  \"cniVersion\": \"1.0.0\",\n+  \"cniVersion\": \"0.4.0\",\n",
	} {
		if !strings.Contains(diff, want) {
			t.Fatalf("diff lacks %q:\n%s", want, diff)
		}
	}
	if strings.Count(diff, "\n-") != 1 || strings.Count(diff, "\n+") != 1+1 { // one line out, one in (plus the +++ header)
		t.Fatalf("diff touches more than the version:\n%s", diff)
	}
	after, err := os.ReadFile(filepath.Join(root, "etc/cni/net.d/10-containerd-net.conflist"))
	if err != nil || !bytes.Equal(after, conf) {
		t.Fatal("plan changed the conflist")
	}

	text := string(runCLI(t, append([]string{"plan", "--signature", "cni-plugin-binary-missing", "--params", `{"plugin":"portmap"}`, "--bundle-dir", pluginDir(t, "bundle"), "-o", "text"}, common...)...))
	if !strings.Contains(text, "3. InstallReferencePlugins") || !strings.Contains(text, "write /opt/cni/bin/portmap (") || !strings.Contains(text, "sha256") {
		t.Fatalf("text preview:\n%s", text)
	}

	var r diagnose.Report
	if err := json.Unmarshal(runCLI(t, append([]string{"diagnose"}, common...)...), &r); err != nil {
		t.Fatal(err)
	}
	if len(r.Findings) == 0 || r.Findings[0].Signature != "cni-version-incompatible" {
		t.Fatalf("diagnose findings: %+v", r.Findings)
	}

	// For a Diagnose action the workflow reads a summary from the termination message: the findings in words,
	// as a result that changed nothing.
	term := filepath.Join(root, "termination-log")
	runCLI(t, append([]string{"diagnose", "--remediation-id", "nr-1", "--termination-message-path", term}, common...)...)
	raw, err := os.ReadFile(term)
	if err != nil {
		t.Fatal(err)
	}
	var res struct {
		RemediationID string `json:"remediationID"`
		Outcome       string `json:"outcome"`
		Message       string `json:"message"`
	}
	if err := json.Unmarshal(raw, &res); err != nil || len(raw) > 4096 {
		t.Fatalf("termination message (%d bytes): %v\n%s", len(raw), err, raw)
	}
	if res.RemediationID != "nr-1" || res.Outcome != "NoChange" ||
		!strings.Contains(res.Message, "error: ") || !strings.Contains(res.Message, "asks for CNI version 1.0.0") {
		t.Fatalf("diagnosis summary: %+v", res)
	}
}

// The manager's dry run hands the executor its plan as a file: the preview comes back as an executor result in
// the termination message (outcome NoChange, the exact diff), and nothing on the node changes.
func TestPlanFilePreviewIsReportedAsAResult(t *testing.T) {
	if err := os.MkdirAll(filepath.Join(repo(), ".lab", "tmp"), 0o755); err != nil {
		t.Fatal(err)
	}
	root, err := os.MkdirTemp(filepath.Join(repo(), ".lab", "tmp"), "cli-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(root) })
	old := pluginDir(t, "old")
	for _, p := range []string{"bridge", "host-local", "portmap", "loopback"} {
		raw, err := os.ReadFile(filepath.Join(old, p))
		if err != nil {
			t.Fatal(err)
		}
		write(t, root, "/opt/cni/bin/"+p, raw, 0o755)
	}
	conf := []byte(seedConflist)
	write(t, root, "/etc/cni/net.d/10-containerd-net.conflist", conf, 0o644)
	plan := filepath.Join(root, "plan.json")
	write(t, root, "/plan.json", []byte(`{"steps":[{"type":"StopUnit","unit":"kubelet.service"},{"type":"SetCNIVersion"},{"type":"StartUnit","unit":"kubelet.service"}]}`), 0o644)
	term := filepath.Join(root, "termination-log")
	runCLI(t, "plan", "--plan", plan, "--termination-message-path", term, "--host-root", root, "--cri-socket", "/run/none.sock",
		"--link", "cnmnone0", "--dbus-address", "unix:path=/run/none-bus")

	raw, err := os.ReadFile(term)
	if err != nil {
		t.Fatal(err)
	}
	var res struct {
		Outcome string `json:"outcome"`
		Steps   []struct {
			Type    string `json:"type"`
			Outcome string `json:"outcome"`
		} `json:"steps"`
		Changes []struct {
			Path string `json:"path"`
			Diff string `json:"diff"`
		} `json:"changes"`
	}
	if err := json.Unmarshal(raw, &res); err != nil {
		t.Fatalf("%v\n%s", err, raw)
	}
	if res.Outcome != "NoChange" || len(res.Steps) != 3 || res.Steps[1].Outcome != "Skipped" {
		t.Fatalf("result %s", raw)
	}
	if len(res.Changes) != 1 || res.Changes[0].Path != "/etc/cni/net.d/10-containerd-net.conflist" ||
		!strings.Contains(res.Changes[0].Diff, `+  "cniVersion": "0.4.0",`) {
		t.Fatalf("changes %s", raw)
	}
	if after, err := os.ReadFile(filepath.Join(root, "etc/cni/net.d/10-containerd-net.conflist")); err != nil || !bytes.Equal(after, conf) {
		t.Fatal("the preview changed the conflist")
	}
}

// TestAPreviewOfAHugeDiffFitsTheTerminationMessage: the preview an approver reads comes back in the pod's
// termination message, which Kubernetes cuts at 4096 bytes. A conflist written on one long line gives a diff of
// two huge lines: the result still fits, still names the file and why, keeps the start of the diff, and says the
// diff was cut.
func TestAPreviewOfAHugeDiffFitsTheTerminationMessage(t *testing.T) {
	if err := os.MkdirAll(filepath.Join(repo(), ".lab", "tmp"), 0o755); err != nil {
		t.Fatal(err)
	}
	root, err := os.MkdirTemp(filepath.Join(repo(), ".lab", "tmp"), "cli-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(root) })
	old := pluginDir(t, "old")
	for _, p := range []string{"bridge", "host-local", "portmap", "loopback"} {
		raw, err := os.ReadFile(filepath.Join(old, p))
		if err != nil {
			t.Fatal(err)
		}
		write(t, root, "/opt/cni/bin/"+p, raw, 0o755)
	}
	conf := []byte(`{"cniVersion":"1.0.0","name":"containerd-net","comment":"` + strings.Repeat("x", 20000) +
		`","plugins":[{"type":"bridge","bridge":"cni0","isGateway":true,"ipam":{"type":"host-local","ranges":[[{"subnet":"10.88.0.0/16"}]]}},{"type":"portmap","capabilities":{"portMappings":true}}]}` + "\n")
	write(t, root, "/etc/cni/net.d/10-containerd-net.conflist", conf, 0o644)
	write(t, root, "/plan.json", []byte(`{"steps":[{"type":"StopUnit","unit":"kubelet.service"},{"type":"SetCNIVersion"},{"type":"StartUnit","unit":"kubelet.service"}]}`), 0o644)
	term := filepath.Join(root, "termination-log")
	stdout := runCLI(t, "plan", "--plan", filepath.Join(root, "plan.json"), "--termination-message-path", term, "--host-root", root,
		"--cri-socket", "/run/none.sock", "--link", "cnmnone0", "--dbus-address", "unix:path=/run/none-bus")

	var full resolve.PlanPreview
	if err := json.Unmarshal(stdout, &full); err != nil || len(full.Steps) != 3 || len(full.Steps[1].Changes) != 1 || len(full.Steps[1].Changes[0].Diff) < 40000 {
		t.Fatalf("the pod's log should carry the whole diff: %v\n%.400s", err, stdout)
	}
	raw, err := os.ReadFile(term)
	if err != nil {
		t.Fatal(err)
	}
	if len(raw) > executor.TerminationMessageLimit {
		t.Fatalf("termination message of %d bytes; Kubernetes keeps %d", len(raw), executor.TerminationMessageLimit)
	}
	var res v1alpha1.ExecutorResult
	if err := json.Unmarshal(raw, &res); err != nil {
		t.Fatalf("%v\n%s", err, raw)
	}
	if res.Outcome != v1alpha1.OutcomeNoChange || len(res.Changes) != 1 {
		t.Fatalf("result %s", raw)
	}
	c := res.Changes[0]
	if c.Path != "/etc/cni/net.d/10-containerd-net.conflist" || c.Why == "" || !c.Truncated ||
		!strings.HasPrefix(c.Diff, "--- a/etc/cni/net.d/10-containerd-net.conflist\n") {
		t.Errorf("change %+v: want the path, why, the start of the diff and the truncated mark", c)
	}
	if after, err := os.ReadFile(filepath.Join(root, "etc/cni/net.d/10-containerd-net.conflist")); err != nil || !bytes.Equal(after, conf) {
		t.Fatal("the preview changed the conflist")
	}
}

// TestThePreviewPodsCommandLineIsOneRemediatorPlanRuns: the manager previews a plan for its approver in the
// read-only diagnosis pod (internal/diagnosepod, ModePlan). Its arguments, with the pod's paths moved to a node laid
// out in a directory, and its plan annotation as the plan file (what the downward API gives the pod), run here as
// `remediator plan` does in the pod: a NoChange result with the exact diff in the termination message.
func TestThePreviewPodsCommandLineIsOneRemediatorPlanRuns(t *testing.T) {
	if err := os.MkdirAll(filepath.Join(repo(), ".lab", "tmp"), 0o755); err != nil {
		t.Fatal(err)
	}
	root, err := os.MkdirTemp(filepath.Join(repo(), ".lab", "tmp"), "cli-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(root) })
	old := pluginDir(t, "old")
	for _, p := range []string{"bridge", "host-local", "portmap", "loopback"} {
		raw, err := os.ReadFile(filepath.Join(old, p))
		if err != nil {
			t.Fatal(err)
		}
		write(t, root, "/opt/cni/bin/"+p, raw, 0o755)
	}
	conf := []byte(seedConflist)
	write(t, root, "/etc/cni/net.d/10-containerd-net.conflist", conf, 0o644)
	plan := `{"steps":[{"type":"StopUnit","unit":"kubelet.service"},{"type":"SetCNIVersion"},{"type":"StartUnit","unit":"kubelet.service"}]}`
	pod := diagnosepod.Pod(diagnosepod.Spec{Node: "w1", Name: "preview", Image: "executor:test", Mode: diagnosepod.ModePlan, Plan: plan, Output: "json",
		KubeletUnit: "kubelet.service", RuntimeUnit: "containerd.service"})
	c := pod.Spec.Containers[0]
	if c.TerminationMessagePath != diagnosepod.TerminationMessagePath {
		t.Fatalf("termination message path %q", c.TerminationMessagePath)
	}
	write(t, root, "/plan.json", []byte(pod.Annotations[diagnosepod.PlanAnnotation]), 0o644)
	term := filepath.Join(root, "termination-log")
	var args []string
	for _, a := range c.Args {
		switch {
		case a == "--host-root="+diagnosepod.HostRoot:
			a = "--host-root=" + root
		case strings.HasPrefix(a, "--plan="):
			a = "--plan=" + filepath.Join(root, "plan.json")
		case a == "--termination-message-path="+diagnosepod.TerminationMessagePath:
			a = "--termination-message-path=" + term
		}
		args = append(args, a)
	}
	if args[0] != "plan" {
		t.Fatalf("the preview pod runs %v", c.Args)
	}
	// No runtime here, and no links to read.
	runCLI(t, append(args, "--cri-socket", "/run/none.sock", "--link", "cnmnone0")...)

	raw, err := os.ReadFile(term)
	if err != nil {
		t.Fatal(err)
	}
	var res v1alpha1.ExecutorResult
	if err := json.Unmarshal(raw, &res); err != nil {
		t.Fatalf("%v\n%s", err, raw)
	}
	if res.Outcome != v1alpha1.OutcomeNoChange || len(res.Changes) != 1 || res.Changes[0].Why == "" ||
		!strings.Contains(res.Changes[0].Diff, `+  "cniVersion": "0.4.0",`) {
		t.Fatalf("result %s", raw)
	}
	if after, err := os.ReadFile(filepath.Join(root, "etc/cni/net.d/10-containerd-net.conflist")); err != nil || !bytes.Equal(after, conf) {
		t.Fatal("the preview changed the conflist")
	}
}
