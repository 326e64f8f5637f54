package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cnimedic/cnimedic/remediator/host"
	"github.com/cnimedic/cnimedic/remediator/hostrun"
	"github.com/cnimedic/cnimedic/remediator/journal"
	"github.com/cnimedic/cnimedic/remediator/resolve"
)

// cliRoot is an empty host root under .lab/tmp (sockets need a short path; t.TempDir's can pass 108 bytes).
func cliRoot(t *testing.T) string {
	t.Helper()
	base := filepath.Join(repo(), ".lab", "tmp")
	if err := os.MkdirAll(base, 0o755); err != nil {
		t.Fatal(err)
	}
	root, err := os.MkdirTemp(base, "bad-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(root) })
	return root
}

// remediator runs this test binary as the remediator (TestMain) and returns its stdout, its stderr and its exit
// code; it fails the test when the command has not ended within limit.
func remediator(t *testing.T, limit time.Duration, stdin string, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdin, cmd.Stdout, cmd.Stderr = strings.NewReader(stdin), &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return wait(t, cmd, limit, &stdout, &stderr)
}

func wait(t *testing.T, cmd *exec.Cmd, limit time.Duration, stdout, stderr *bytes.Buffer) (string, string, int) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		var exit *exec.ExitError
		if err != nil && !errors.As(err, &exit) {
			t.Fatal(err)
		}
		return stdout.String(), stderr.String(), cmd.ProcessState.ExitCode()
	case <-time.After(limit):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("remediator %s still runs after %s; stderr:\n%s", strings.Join(cmd.Args[1:], " "), limit, stderr)
		return "", "", 0
	}
}

// oneLineError checks that stderr is a single "remediator: " line that says want.
func oneLineError(t *testing.T, what, stderr string, want ...string) {
	t.Helper()
	line := strings.TrimSuffix(stderr, "\n")
	if !strings.HasPrefix(line, "remediator: ") || strings.Contains(line, "\n") {
		t.Errorf("%s: want one line starting \"remediator: \" on stderr, got %q", what, stderr)
	}
	for _, w := range want {
		if !strings.Contains(line, w) {
			t.Errorf("%s: stderr %q does not say %q", what, line, w)
		}
	}
}

// offline are the flags that keep a command off the machine's own runtime, bus and links.
func offline(root string) []string {
	return []string{"--host-root", root, "--cri-socket", "/run/none.sock", "--link", "cnmnone0", "--dbus-address", "unix:path=/run/none-bus"}
}

// The plans apply refuses are refused by plan --plan with the same words, before the node is read, with exit
// code 2, and the preview's termination message says the plan was refused.
func TestPlanRefusesEveryPlanApplyRefusesWithExitCode2(t *testing.T) {
	root := cliRoot(t)
	plans := map[string]string{
		`{"steps":[]}`:                "the plan has no steps",
		`{}`:                          "the plan has no steps",
		`{"steps":[{"type":"Nope"}]}`: `step 1: unknown type "Nope"`,
		`{"steps":[{"type":"StopUnit","unit":"../x"}]}`:                   `invalid unit "../x"`,
		`{"steps":[{"type":"StopUnit","unit":".."}]}`:                     `step 1 (StopUnit): unit: ".." names a directory`,
		`{"steps":[{"type":"SetCNIVersion","confList":"."}]}`:             `step 1 (SetCNIVersion): confList: "." names a directory`,
		`{"steps":[{"type":"InstallReferencePlugins","plugins":[".."]}]}`: `plugins[0]: ".." names a directory`,
		`{"steps":[{"type":"ReclaimIPAM","network":"../../etc"}]}`:        `network: "../../etc" has a "/"`,
		`{"steps":[{"type":"DeleteLink","link":"a b"}]}`:                  `link: "a b" has whitespace`,
		`{"steps":[{"type":"VerifyNode","bogus":1}]}`:                     `unknown field "bogus"`,
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
			oneLineError(t, cmd[0]+" "+plan, stderr, "--plan -: ", want)
		}
		raw, err := os.ReadFile(term)
		if err != nil || !bytes.Contains(raw, []byte(`"outcome":"Failed"`)) {
			t.Errorf("plan %s: termination message %s (%v)", plan, raw, err)
		}
	}
	if ents, _ := os.ReadDir(root); len(ents) != 1 {
		t.Errorf("the refused commands left files in the host root: %v", ents)
	}
}

// An unknown signature, a host root that is not there, an unknown versionStrategy, bad JSON and unknown flags
// are bad input: one line naming the flag, exit code 2, nothing on stdout.
func TestBadFlagsAreOneLineErrorsNamingTheFlagWithExitCode2(t *testing.T) {
	root := cliRoot(t)
	cases := []struct {
		args []string
		want string
	}{
		{append([]string{"plan", "--signature", "nope"}, offline(root)...), `--signature: unknown signature "nope"`},
		{[]string{"plan", "--signature", "cni-version-incompatible", "--host-root", filepath.Join(root, "missing")}, "--host-root: "},
		{[]string{"diagnose", "--host-root", filepath.Join(root, "missing")}, "--host-root: "},
		{append([]string{"plan", "--signature", "cni-version-incompatible", "--policy-repair", `{"versionStrategy":"Nope"}`}, offline(root)...), `--policy-repair: versionStrategy "Nope": want RewriteConfig or UpgradePlugins`},
		{append([]string{"plan", "--signature", "cni-version-incompatible", "--policy-repair", `{"versionStrategie":"RewriteConfig"}`}, offline(root)...), `--policy-repair: `},
		{append([]string{"plan", "--signature", "cni-version-incompatible", "--params", `[1]`}, offline(root)...), `--params: `},
		{append([]string{"plan", "--signature", "cni-daemon-unavailable"}, offline(root)...), `--signature cni-daemon-unavailable: no node repair`},
		{append([]string{"plan", "--signature", "cni-version-incompatible", "-o", "yaml"}, offline(root)...), `--output: unknown format "yaml"`},
		{append([]string{"diagnose", "-o", "yaml"}, offline(root)...), `--output: unknown format "yaml"`},
		{append([]string{"plan"}, offline(root)...), "give --signature or --plan"},
		{[]string{"plan", "--bogus"}, "unknown flag: --bogus"},
		{[]string{"apply"}, `required flag(s) "plan" not set`},
		{[]string{"rollback"}, `required flag(s) "remediation-id" not set`},
		{[]string{"nope"}, `unknown command "nope"`},
		{append([]string{"apply", "--plan", filepath.Join(root, "missing.json")}, offline(root)...), "--plan: open "},
	}
	for _, c := range cases {
		out, stderr, code := remediator(t, 10*time.Second, "", c.args...)
		what := strings.Join(c.args, " ")
		if code != ExitBadInput || out != "" {
			t.Errorf("%s: exit code %d (want %d), stdout %q", what, code, ExitBadInput, out)
		}
		oneLineError(t, what, stderr, c.want)
	}
}

// A FIFO (it used to hang plan and diagnose forever), a link to /dev/zero (it ran the remediator out of memory)
// and a 60 MB conflist (a 125 MB preview) are each reported by name within a second, and nothing changes.
func TestAFIFOADevZeroLinkAndAHugeConflistAreNamedWithinASecond(t *testing.T) {
	root := cliRoot(t)
	dir := filepath.Join(root, "etc/cni/net.d")
	if err := os.MkdirAll(filepath.Join(root, "dev"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(filepath.Join(dir, "10-fifo.conflist"), 0o644); err != nil {
		t.Fatal(err)
	}
	// The link's target is resolved inside the host root: give the root a /dev/zero (root may make the device;
	// otherwise a FIFO stands in for it, another file that never ends).
	if err := syscall.Mknod(filepath.Join(root, "dev/zero"), syscall.S_IFCHR|0o666, 1<<8|5); err != nil {
		if err := syscall.Mkfifo(filepath.Join(root, "dev/zero"), 0o666); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("/dev/zero", filepath.Join(dir, "20-zero.conflist")); err != nil {
		t.Fatal(err)
	}
	// A conflist that loads, padded with 60 MB of blanks: without the cap, SetCNIVersion would diff all of it.
	huge := append([]byte(strings.Replace(seedConflist, "1.0.0", "1.1.0", 1)), bytes.Repeat([]byte(" \n"), 30<<20)...)
	if err := os.WriteFile(filepath.Join(dir, "30-huge.conflist"), huge, 0o644); err != nil {
		t.Fatal(err)
	}
	huge = nil
	names := map[string]string{
		"10-fifo.conflist": "not a regular file (a named pipe)",
		"20-zero.conflist": "not a regular file",
		"30-huge.conflist": "file too large: larger than 1 MiB",
	}
	for name, want := range names {
		start := time.Now()
		out, stderr, code := remediator(t, 5*time.Second, "", append([]string{"plan", "--signature", "cni-version-incompatible",
			"--params", `{"configFile":"` + name + `"}`}, offline(root)...)...)
		if d := time.Since(start); d > time.Second {
			t.Errorf("plan on %s took %s", name, d)
		}
		var p resolve.PlanPreview
		if err := json.Unmarshal([]byte(out), &p); err != nil || code != ExitOK {
			t.Fatalf("plan on %s: exit code %d, %v\nstdout %.2000s\nstderr %s", name, code, err, out, stderr)
		}
		if len(out) > 64<<10 {
			t.Errorf("plan on %s: a %d-byte preview", name, len(out))
		}
		// Only the file the runtime loads (the first in name order) is ever a step's target: naming another one is
		// refused, after every file of the conf dir was read within the same bounds.
		if name != "10-fifo.conflist" {
			want = "is not the file the runtime loads (/etc/cni/net.d/10-fifo.conflist"
		}
		if len(p.Steps) < 3 || !strings.Contains(p.Steps[2].Error, "/etc/cni/net.d/"+name) || !strings.Contains(p.Steps[2].Error, want) {
			t.Errorf("plan on %s: step 3 says %q, want the file and %q", name, p.Steps[2].Error, want)
		}
	}
	start := time.Now()
	out, stderr, code := remediator(t, 20*time.Second, "", append([]string{"diagnose", "-o", "text"}, offline(root)...)...)
	if d := time.Since(start); d > 5*time.Second || code != ExitOK {
		t.Fatalf("diagnose: exit code %d after %s; stderr %s", code, d, stderr)
	}
	for name, want := range names {
		if !strings.Contains(out, "/etc/cni/net.d/"+name+" (mode ") || !strings.Contains(out, want) {
			t.Errorf("diagnose does not report %s as %q:\n%s", name, want, out)
		}
	}
	if st, err := os.Stat(filepath.Join(dir, "30-huge.conflist")); err != nil || st.Size() < 60<<20 {
		t.Errorf("the huge conflist changed: %v", err)
	}
}

// wedged listens on a unix socket and never answers: a runtime or a bus that hangs. accepted reports the first
// connection, so the caller knows the command is blocked on it.
func wedged(t *testing.T, path string) <-chan struct{} {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	accepted := make(chan struct{})
	var conns []net.Conn
	go func() {
		for i := 0; ; i++ {
			c, err := l.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c)
			if i == 0 {
				close(accepted)
			}
		}
	}()
	t.Cleanup(func() {
		_ = l.Close()
		for _, c := range conns {
			_ = c.Close()
		}
	})
	return accepted
}

// SIGTERM ends every command within a second, with exit code 3 and one line on stderr, whatever it was blocked
// on: here a runtime socket and a bus that accept and never answer, on a node whose conf dir holds a FIFO.
func TestSIGTERMEndsEveryCommandWithinASecond(t *testing.T) {
	root := cliRoot(t)
	if err := os.MkdirAll(filepath.Join(root, "etc/cni/net.d"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(filepath.Join(root, "etc/cni/net.d/10-fifo.conflist"), 0o644); err != nil {
		t.Fatal(err)
	}
	plan := filepath.Join(root, "plan.json")
	if err := os.WriteFile(plan, []byte(`{"steps":[{"type":"StopUnit","unit":"kubelet.service"},{"type":"SetCNIVersion"},{"type":"StartUnit","unit":"kubelet.service"}]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	// rollback asks the bus only about a remediation with a journal.
	journalDir := journal.Dir(host.Root(root), hostrun.JournalBase("/var/lib/cnimedic"), "sigterm-rb")
	if err := os.MkdirAll(journalDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(journalDir, journal.PlanFile), []byte(`{"steps":[{"type":"VerifyNode"}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	node := []string{"--host-root", root, "--cri-socket", "/run/wedged-cri.sock", "--dbus-address", "unix:path=" + filepath.Join(root, "run/wedged-bus"), "--link", "cnmnone0"}
	for _, args := range [][]string{
		{"plan", "--signature", "cni-version-incompatible"},
		{"plan", "--plan", plan},
		{"diagnose"},
		{"apply", "--plan", plan, "--remediation-id", "sigterm", "--state-dir", "/var/lib/cnimedic", "--bundle-dir", filepath.Join(root, "no-bundle")},
		{"rollback", "--remediation-id", "sigterm-rb", "--state-dir", "/var/lib/cnimedic"},
	} {
		t.Run(strings.Join(args[:min(2, len(args))], " "), func(t *testing.T) {
			cri := wedged(t, filepath.Join(root, "run/wedged-cri.sock"))
			bus := wedged(t, filepath.Join(root, "run/wedged-bus"))
			t.Cleanup(func() {
				_ = os.Remove(filepath.Join(root, "run/wedged-cri.sock"))
				_ = os.Remove(filepath.Join(root, "run/wedged-bus"))
			})
			cmd := exec.Command(os.Args[0], append(args, node...)...)
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			select {
			case <-cri:
			case <-bus:
			case <-time.After(20 * time.Second):
				_ = cmd.Process.Kill()
				_ = cmd.Wait()
				t.Fatalf("%s never reached the runtime or the bus; stderr:\n%s", args[0], stderr.String())
			}
			if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			_, errOut, code := wait(t, cmd, 5*time.Second, &stdout, &stderr)
			if d := time.Since(start); d > time.Second {
				t.Errorf("%s ended %s after SIGTERM", args[0], d)
			}
			if code != ExitInterrupted {
				t.Errorf("%s: exit code %d, want %d", args[0], code, ExitInterrupted)
			}
			oneLineError(t, args[0], errOut, "interrupted by SIGTERM or SIGINT")
		})
	}
}
