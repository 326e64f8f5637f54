package main

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestAPlanOrFlagsOutsideTheNodesAllowlistAreRefusedByPlanAndApplyAlike: issue 13 finding 1 from the command
// line. A plan that stops sshd or starts auditd, or points containerd's bin_dir at /etc/cron.d, and flags that name
// another unit or a dir outside the known roots, are bad input for plan --plan, apply and rollback: one line
// naming the step or flag, exit code 2, nothing read or written (the preview's termination message says Failed).
func TestAPlanOrFlagsOutsideTheNodesAllowlistAreRefusedByPlanAndApplyAlike(t *testing.T) {
	root := cliRoot(t)
	plans := map[string]string{
		`{"steps":[{"type":"StopUnit","unit":"sshd.service"}]}`:                                                       "step 1 (StopUnit): unit sshd.service is not this node's kubelet or runtime unit",
		`{"steps":[{"type":"StartUnit","unit":"auditd"}]}`:                                                            "step 1 (StartUnit): unit auditd is not this node's kubelet or runtime unit",
		`{"steps":[{"type":"RepairRuntimeCNIConfig","runtime":{"binDir":"/etc/cron.d","confDir":"/etc/cni/net.d"}}]}`: "step 1 (RepairRuntimeCNIConfig): bin_dir: /etc/cron.d is not under a CNI directory cnimedic knows",
	}
	for plan, want := range plans {
		term := filepath.Join(root, "termination-log")
		_ = os.Remove(term)
		for _, cmd := range [][]string{
			append([]string{"plan", "--plan", "-", "--termination-message-path", term}, offline(root)...),
			append([]string{"apply", "--plan", "-", "--state-dir", "/var/lib/cnimedic"}, offline(root)...),
		} {
			out, stderr, code := remediator(t, 10*time.Second, plan, cmd...)
			if code != ExitBadInput || out != "" {
				t.Errorf("%s %s: exit code %d (want %d), stdout %q", cmd[0], plan, code, ExitBadInput, out)
			}
			oneLineError(t, cmd[0]+" "+plan, stderr, want)
		}
		if raw, err := os.ReadFile(term); err != nil || !bytes.Contains(raw, []byte(`"outcome":"Failed"`)) {
			t.Errorf("plan %s: termination message %s (%v)", plan, raw, err)
		}
	}
	good := `{"steps":[{"type":"VerifyNode"}]}`
	flags := map[string][]string{
		"--kubelet-unit sshd.service: not one cnimedic knows":                                  {"--kubelet-unit", "sshd.service"},
		"--runtime-unit auditd.service: not one cnimedic knows":                                {"--runtime-unit", "auditd.service"},
		"--bin-dir: /etc/cron.d is not under a CNI directory":                                  {"--bin-dir", "/etc/cron.d"},
		"--conf-dir: /etc/cron.d is not under a CNI directory":                                 {"--conf-dir", "/etc/cron.d"},
		"--containerd-config: /etc/cron.d/x is not a file under a containerd config directory": {"--containerd-config", "/etc/cron.d/x"},
	}
	for want, extra := range flags {
		for _, cmd := range [][]string{
			{"plan", "--plan", "-"},
			{"apply", "--plan", "-", "--state-dir", "/var/lib/cnimedic"},
			{"rollback", "--remediation-id", "rem-x", "--state-dir", "/var/lib/cnimedic"},
		} {
			args := append(append(cmd, offline(root)...), extra...)
			out, stderr, code := remediator(t, 10*time.Second, good, args...)
			if code != ExitBadInput || out != "" {
				t.Errorf("%v: exit code %d (want %d), stdout %q", args, code, ExitBadInput, out)
			}
			oneLineError(t, cmd[0]+" "+extra[0], stderr, want)
		}
	}
	if entries, _ := os.ReadDir(root); len(entries) > 1 {
		t.Errorf("the host root was written: %v", entries)
	}
}

// TestDiagnoseReadsOnlyTheNodesCNIAndRuntimeFiles: a diagnosis pod mounts what a policy names (an operator may
// create a Manual policy naming /etc as its conf dir); the remediator refuses to read outside the known roots, as
// plan and apply do, and reports nothing of it.
func TestDiagnoseReadsOnlyTheNodesCNIAndRuntimeFiles(t *testing.T) {
	root := cliRoot(t)
	for _, extra := range [][]string{{"--conf-dir", "/etc"}, {"--bin-dir", "/root"}, {"--containerd-config", "/etc/shadow"}} {
		args := append(append([]string{"diagnose"}, offline(root)...), extra...)
		out, stderr, code := remediator(t, 10*time.Second, "", args...)
		if code != ExitBadInput || out != "" {
			t.Errorf("%v: exit code %d (want %d), stdout %q", extra, code, ExitBadInput, out)
		}
		oneLineError(t, "diagnose "+extra[0], stderr, extra[0])
	}
}
