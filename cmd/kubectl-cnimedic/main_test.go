package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/cli-runtime/pkg/genericiooptions"
)

// execute runs the plugin as kubectl would, with args and stdin, and returns what it printed.
func execute(t *testing.T, stdin string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var out, errOut bytes.Buffer
	root := newRootCommand(genericiooptions.IOStreams{In: strings.NewReader(stdin), Out: &out, ErrOut: &errOut})
	root.SetArgs(args)
	err = root.Execute()
	return out.String(), errOut.String(), err
}

func TestClassifyReadsStdinByDefault(t *testing.T) {
	stdin := "failed to set bridge addr: \"cni0\" already has an IP address different from 10.244.1.1/24\nnothing to see here\n"
	out, _, err := execute(t, stdin, "classify", "-o", "jsonl")
	if err != nil {
		t.Fatal(err)
	}
	want := `{"signature":"netns-or-stale-state","params":{"address":"10.244.1.1/24","bridge":"cni0"},"action":"CleanStaleNetwork"}` + "\n" +
		`{"signature":"","params":{}}` + "\n"
	if out != want {
		t.Errorf("got\n%s\nwant\n%s", out, want)
	}
}

func TestClassifyReadsFileAndAllowedActions(t *testing.T) {
	path := filepath.Join(t.TempDir(), "events.jsonl")
	line := `{"reason":"FailedCreatePodSandBox","message":"plugin type=\"calico\" failed (add): error getting ClusterInformation: connection is unauthorized: Unauthorized","node":"w1"}` + "\n"
	if err := os.WriteFile(path, []byte(line), 0o600); err != nil {
		t.Fatal(err)
	}
	out, _, err := execute(t, "ignored", "classify", "-f", path, "--allowed-actions", "RestartCNIAgentPod,Escalate")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"cni-apiserver-access", "RestartCNIAgentPod", "w1"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
}

func TestClassifyErrors(t *testing.T) {
	cases := [][]string{
		{"classify", "-o", "yaml"},
		{"classify", "-f", "/nonexistent/events.json"},
		{"classify", "--allowed-actions", "Reboot"},
		{"classify", "extra-argument"},
		{"classify", "--policy", "/nonexistent/policy.yaml"},
	}
	for _, args := range cases {
		_, stderr, err := execute(t, "x\n", args...)
		if err == nil {
			t.Errorf("%v: no error", args)
			continue
		}
		if !strings.Contains(stderr, "Error: ") {
			t.Errorf("%v: the error must reach the user on stderr, got %q", args, stderr)
		}
	}
}

func TestHelpSpeaksAsAKubectlPlugin(t *testing.T) {
	out, _, err := execute(t, "", "classify", "--help")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "kubectl cnimedic classify") {
		t.Errorf("usage must read as invoked through kubectl:\n%s", out)
	}
}
