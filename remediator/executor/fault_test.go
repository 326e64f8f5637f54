package executor

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"time"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
	"github.com/cnimedic/cnimedic/remediator/host"
	"github.com/cnimedic/cnimedic/remediator/step"
	"github.com/cnimedic/cnimedic/remediator/units"
	"github.com/cnimedic/cnimedic/test/testresolve"
)

// The SIGKILL tests run the executor in a child process: this test binary, re-executed with faultEnv set to a
// childSpec. The child kills itself with SIGKILL when its hook reaches the given point, which is the one way to
// die exactly there; the parent then runs the same remediation id again.
const faultEnv = "CNIMEDIC_EXECUTOR_FAULT_CHILD"

type childSpec struct {
	Root       string        `json:"root"`
	Bus        string        `json:"bus"`
	Bundle     string        `json:"bundle"`
	ID         string        `json:"id"`
	Plan       v1alpha1.Plan `json:"plan"`
	VerifyWant string        `json:"verifyWant"`
	Mode       Interrupted   `json:"mode"`
	KillAt     string        `json:"killAt,omitempty"`
	KillN      int           `json:"killN,omitempty"`
	Units      []string      `json:"units"`
}

// childExecutor builds the executor the child and the parent both use against a real node.
func childExecutor(spec childSpec, m *units.Manager) *Executor {
	return &Executor{
		Env: step.Env{
			Root:      host.Root(spec.Root),
			ConfDir:   "/etc/cni/net.d",
			BinDirs:   []string{binDir},
			BundleDir: spec.Bundle,
		},
		Units:         m,
		Resolvers:     testresolve.Resolvers(),
		Verifier:      testresolve.VerifyVersion(confList, spec.VerifyWant, "bridge", "host-local"),
		CriticalUnits: spec.Units,
		OnInterrupted: spec.Mode,
	}
}

// faultChild runs the child's part when this binary was started as one, and reports whether it was.
func faultChild() bool {
	raw := os.Getenv(faultEnv)
	if raw == "" {
		return false
	}
	var spec childSpec
	if err := json.Unmarshal([]byte(raw), &spec); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(3)
	}
	ctx := context.Background()
	m, err := units.Connect(ctx, spec.Bus)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(3)
	}
	m.Settle = 300 * time.Millisecond
	ex := childExecutor(spec, m)
	seen := 0
	ex.Hook = func(p string) {
		// Every point goes to stderr so the parent can list them from a clean run.
		fmt.Fprintln(os.Stderr, "point", p)
		if p == spec.KillAt {
			seen++
			if seen == spec.KillN {
				_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
				select {}
			}
		}
	}
	res := ex.Run(ctx, spec.ID, spec.Plan)
	_ = json.NewEncoder(os.Stdout).Encode(res)
	os.Exit(0)
	return true
}

// childCommand is the command that runs a child.
func childCommand(ctx context.Context, spec childSpec) (*exec.Cmd, error) {
	raw, err := json.Marshal(spec)
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), faultEnv+"="+string(raw))
	return cmd, nil
}
