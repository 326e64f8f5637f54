package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
	"github.com/cnimedic/cnimedic/remediator/diagnose"
	"github.com/cnimedic/cnimedic/remediator/executor"
	"github.com/cnimedic/cnimedic/remediator/host"
	"github.com/cnimedic/cnimedic/remediator/hostrun"
	"github.com/cnimedic/cnimedic/remediator/resolve"
	"github.com/cnimedic/cnimedic/remediator/step"
	"github.com/cnimedic/cnimedic/remediator/units"
)

func init() {
	subcommands = append(subcommands, newApply, newRollback, newHostRun, newHostRollback, newHostRecover)
}

type applyOptions struct {
	planFile         string
	planDigest       string
	id               string
	termination      string
	stateDir         string
	inProcess        bool
	runTimeout       time.Duration
	settle           time.Duration
	onInterrupted    string
	binarySHA256     string
	binarySHA256File string
	verifyDeadline   time.Duration
}

func newApply(flags *NodeFlags) *cobra.Command {
	var o applyOptions
	cmd := &cobra.Command{
		Use:   "apply --plan FILE [--remediation-id ID] [--termination-message-path PATH]",
		Short: "Carry out a plan on this node, with journal, backups, atomic writes and rollback; the result as JSON on stdout",
		Long: `apply runs a plan's stop → repair → start sequence on the host side, as a transient systemd unit started over
D-Bus, so that it survives this process (the executor pod) and the kubelet and containerd restarts it causes. It
places a sha256-verified copy of this binary and the plugin bundle under --state-dir on the host, writes the plan
into the remediation's journal there, arms a guard timer, starts the run and follows it until its result.

The result goes to stdout as JSON, and shortened to Kubernetes' 4096 bytes to --termination-message-path.
Running apply again with the same --remediation-id follows the run still going or reports its stored result.

` + exitCodesHelp,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runApply(cmd, flags, o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.planFile, "plan", "", `the plan as JSON (a v1alpha1.Plan); "-" reads stdin`)
	f.StringVar(&o.planDigest, "plan-digest", "", "the approved plan's digest (sha256:..., v1alpha1.PlanDigest): a plan file with another digest is refused and nothing is done; the manager always sets it")
	f.StringVar(&o.id, "remediation-id", "", "the NodeRemediation this run belongs to; names its journal (default: derived from the plan's content)")
	f.StringVar(&o.termination, "termination-message-path", "", "also write the result, shortened to 4096 bytes, here (the pod's terminationMessagePath)")
	f.StringVar(&o.stateDir, "state-dir", hostrun.DefaultStateDir, "host directory of the remediator's binaries, bundles and journals")
	f.BoolVar(&o.inProcess, "in-process", false, "run the plan in this process instead of a transient unit (it then dies with this process; for debugging)")
	f.DurationVar(&o.runTimeout, "run-timeout", hostrun.DefaultRunMax, "the host-side run's limit (systemd RuntimeMaxSec); past it the run is stopped and rolled back")
	f.DurationVar(&o.settle, "settle", units.DefaultSettle, "how long a started unit must stay active before its start counts")
	f.StringVar(&o.onInterrupted, "on-interrupted", string(executor.Resume), "what a run does with the journal of an earlier run of the same id that died: resume or rollback")
	f.StringVar(&o.binarySHA256, "binary-sha256", "", "the sha256 this binary must have before it is placed on the host; empty: the one the image's build recorded in --binary-sha256-file, when that file exists")
	f.StringVar(&o.binarySHA256File, "binary-sha256-file", "/opt/cnimedic/remediator.sha256", "where the executor image records the remediator's sha256 (sha256sum format)")
	f.DurationVar(&o.verifyDeadline, "verify-timeout", defaultVerifyDeadline, "how long VerifyNode waits for the runtime to report the network ready")
	_ = cmd.MarkFlagRequired("plan")
	return cmd
}

// readPlan reads and checks a plan file (bad input when it does not read, decode or validate), as apply, plan
// --plan and the tests all do.
func readPlan(name string, stdin io.Reader, nodeUnits []string) (v1alpha1.Plan, []byte, error) {
	var plan v1alpha1.Plan
	var raw []byte
	var err error
	if name == "-" {
		raw, err = host.ReadAll("stdin", stdin, host.MaxPlan)
	} else {
		raw, err = host.ReadFile(name, host.MaxPlan)
	}
	if err != nil {
		return plan, nil, badInput(fmt.Errorf("--plan: %w", err))
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&plan); err != nil {
		return plan, nil, badInput(fmt.Errorf("--plan %s: %w", name, err))
	}
	if err := validatePlan(plan, nodeUnits); err != nil {
		return plan, nil, badInput(fmt.Errorf("--plan %s: %w", name, err))
	}
	canonical, err := json.Marshal(plan)
	return plan, canonical, err
}

// validatePlan is the one check of a plan's shape that apply and plan --plan share, so that a preview never
// accepts a plan apply refuses: step types, the node's own units and the known roots of containerd's settings
// (executor.Validate, which the host-side run repeats) and the names steps join onto directories
// (step.ValidatePlanNames).
func validatePlan(plan v1alpha1.Plan, nodeUnits []string) error {
	if err := executor.Validate(plan, nodeUnits); err != nil {
		return err
	}
	return step.ValidatePlanNames(plan)
}

func runApply(cmd *cobra.Command, flags *NodeFlags, o applyOptions) error {
	ctx := cmd.Context()
	if err := flags.checkAllowlist(); err != nil {
		return err
	}
	if err := flags.checkRepairable(); err != nil {
		return err
	}
	plan, canonical, err := readPlan(o.planFile, cmd.InOrStdin(), flags.nodeUnits())
	if err != nil {
		return err
	}
	// The plan file comes from the pod's annotation, which can change after the pod was created; the digest is an
	// argument, which cannot: what runs is the plan that was approved.
	if got := v1alpha1.PlanDigest(plan); o.planDigest != "" && got != o.planDigest {
		return badInput(fmt.Errorf("--plan %s: its digest is %s, not the approved %s (--plan-digest): refusing to run it; nothing was changed", o.planFile, got, o.planDigest))
	}
	if o.id == "" {
		sum := sha256.Sum256(canonical)
		o.id = "plan-" + hex.EncodeToString(sum[:8])
	}
	mode := executor.Interrupted(o.onInterrupted)
	if mode != executor.Resume && mode != executor.RollBack {
		return badInput(fmt.Errorf("--on-interrupted: want resume or rollback, got %q", o.onInterrupted))
	}
	env := flags.Env()
	// Asked now, while the runtime is up: the run stops it. (A pod without the CRI socket leaves it to the
	// host-side run, which asks before it stops anything.)
	env.CNISpecCeiling = specCeiling(cmd, flags)
	critical := flags.nodeUnits()

	var res v1alpha1.ExecutorResult
	if o.inProcess {
		res = applyInProcess(ctx, flags, o, env, critical, plan, mode)
	} else {
		cfg := hostrun.EnvConfig(flags.given())
		// The pod mounts only the state dir, the bus and the runtime's socket: the host-side run detects the layout
		// and reads containerd's config itself for what no flag gave (node.Complete, once), sees the host's own
		// /proc, and gets the bundle's staged copy (set by the launcher).
		cfg.Units = nil
		cfg.CNISpecCeiling = env.CNISpecCeiling
		cfg.ProcDir = "/proc"
		cfg.BundleDir = ""
		cfg.CriticalUnits = critical
		cfg.Settle = o.settle
		cfg.OnInterrupted = mode
		cfg.VerifyTimeout = o.verifyDeadline
		l := &hostrun.Launcher{
			Root:         flags.Root(),
			StateDir:     o.stateDir,
			Bus:          flags.DBusAddress,
			ExpectSHA256: expectedSHA256(o),
			Config:       cfg,
			RunMax:       o.runTimeout,
			Log:          cmd.ErrOrStderr(),
		}
		if _, err := os.Stat(flags.BundleDir); err == nil {
			l.BundleDir = flags.BundleDir
		}
		fctx, cancel := context.WithTimeout(ctx, o.runTimeout+hostrun.DefaultStopWindow+2*time.Minute)
		defer cancel()
		res = l.Apply(fctx, o.id, plan)
	}
	return report(cmd.OutOrStdout(), o.termination, res)
}

func applyInProcess(ctx context.Context, flags *NodeFlags, o applyOptions, env step.Env, critical []string, plan v1alpha1.Plan, mode executor.Interrupted) v1alpha1.ExecutorResult {
	m, err := units.Connect(ctx, flags.DBusAddress)
	if err != nil {
		return v1alpha1.ExecutorResult{RemediationID: o.id, Outcome: v1alpha1.OutcomeFailed, Message: "nothing was changed on the node: " + err.Error()}
	}
	defer m.Close()
	m.Settle = o.settle
	ex := &executor.Executor{
		Env:           env,
		JournalBase:   hostrun.JournalBase(o.stateDir),
		Units:         m,
		Resolvers:     resolve.Resolvers,
		Verifier:      diagnoseVerifier(o.verifyDeadline),
		CriticalUnits: critical,
		OnInterrupted: mode,
	}
	return ex.Run(ctx, o.id, plan)
}

// report writes the full result to stdout and the shortened one to the termination message file. A result other
// than Succeeded or NoChange makes the command fail, so the pod's status says so too.
func report(stdout io.Writer, termination string, res v1alpha1.ExecutorResult) error {
	full, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return err
	}
	if _, err := stdout.Write(append(full, '\n')); err != nil {
		return err
	}
	if termination != "" {
		if err := os.WriteFile(termination, executor.TerminationMessage(res, executor.TerminationMessageLimit), 0o644); err != nil {
			return fmt.Errorf("termination message: %w", err)
		}
	}
	switch res.Outcome {
	case v1alpha1.OutcomeSucceeded, v1alpha1.OutcomeNoChange:
		return nil
	}
	return fmt.Errorf("remediation %s: %s: %s", res.RemediationID, res.Outcome, res.Message)
}

func newRollback(flags *NodeFlags) *cobra.Command {
	var id, termination, stateDir string
	var inProcess bool
	var runTimeout time.Duration
	cmd := &cobra.Command{
		Use:   "rollback --remediation-id ID [--termination-message-path PATH]",
		Short: "Undo a remediation that ran on this node, from its journal (when the cluster did not accept the repair)",
		Long: `rollback undoes a finished remediation: it stops the units the plan stopped, restores every file from the
journal's backups byte for byte (mode and owner included), removes what the repair created and starts the units
again, as a transient systemd unit on the host like apply. The result (Outcome RolledBack, or Failed saying what
is left) goes to stdout and, shortened, to --termination-message-path. Asking again reports the same result.

` + exitCodesHelp,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := flags.checkAllowlist(); err != nil {
				return err
			}
			var res v1alpha1.ExecutorResult
			if inProcess {
				m, err := units.Connect(cmd.Context(), flags.DBusAddress)
				if err != nil {
					res = v1alpha1.ExecutorResult{RemediationID: id, Outcome: v1alpha1.OutcomeFailed, Message: "nothing was changed on the node: " + err.Error()}
				} else {
					defer m.Close()
					ex := &executor.Executor{Env: flags.Env(), JournalBase: hostrun.JournalBase(stateDir), Units: m,
						CriticalUnits: flags.nodeUnits()}
					res = ex.Undo(cmd.Context(), id, "asked on the command line")
				}
			} else {
				l := &hostrun.Launcher{Root: flags.Root(), StateDir: stateDir, Bus: flags.DBusAddress, RunMax: runTimeout, Log: cmd.ErrOrStderr()}
				ctx, cancel := context.WithTimeout(cmd.Context(), runTimeout+hostrun.DefaultStopWindow+2*time.Minute)
				defer cancel()
				res = l.Rollback(ctx, id)
			}
			if err := report(cmd.OutOrStdout(), termination, res); err != nil && res.Outcome != v1alpha1.OutcomeRolledBack {
				return err
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&id, "remediation-id", "", "the remediation to undo")
	f.StringVar(&termination, "termination-message-path", "", "also write the result, shortened to 4096 bytes, here")
	f.StringVar(&stateDir, "state-dir", hostrun.DefaultStateDir, "host directory of the remediator's binaries, bundles and journals")
	f.BoolVar(&inProcess, "in-process", false, "roll back in this process instead of a transient unit (for debugging)")
	f.DurationVar(&runTimeout, "run-timeout", hostrun.DefaultRunMax, "the host-side rollback's limit (systemd RuntimeMaxSec)")
	_ = cmd.MarkFlagRequired("remediation-id")
	return cmd
}

// hostFlags are the hidden subcommands' own flags: everything else the run needs is in its journal directory.
type hostFlags struct {
	stateDir string
	id       string
	reason   string
}

func (h *hostFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&h.stateDir, "state-dir", hostrun.DefaultStateDir, "host directory of the remediator's state")
	cmd.Flags().StringVar(&h.id, "remediation-id", "", "the remediation to run")
	_ = cmd.MarkFlagRequired("remediation-id")
}

func hostDeps(root host.Root, stateDir, id string) hostrun.Deps {
	verify := defaultVerifyDeadline
	if cfg, err := hostrun.ReadConfig(root, stateDir, id); err == nil && cfg.VerifyTimeout > 0 {
		verify = cfg.VerifyTimeout
	}
	return hostrun.Deps{Resolvers: resolve.Resolvers, Verifier: diagnoseVerifier(verify)}
}

// newHostRun is what the transient run unit executes on the host: the plan and settings come from the journal
// directory the pod prepared.
func newHostRun(flags *NodeFlags) *cobra.Command {
	var h hostFlags
	cmd := &cobra.Command{
		Use:    hostrun.CmdHostRun,
		Short:  "Run a staged remediation on the host (started by apply as a transient systemd unit)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			res := hostrun.HostRun(cmd.Context(), flags.Root(), h.stateDir, h.id, hostDeps(flags.Root(), h.stateDir, h.id))
			return report(cmd.OutOrStdout(), "", res)
		},
	}
	h.register(cmd)
	return cmd
}

// newHostRollback is what the transient rollback unit executes on the host.
func newHostRollback(flags *NodeFlags) *cobra.Command {
	var h hostFlags
	cmd := &cobra.Command{
		Use:    hostrun.CmdHostRollback,
		Short:  "Roll back a remediation on the host (started by rollback as a transient systemd unit)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			res := hostrun.HostRollback(cmd.Context(), flags.Root(), h.stateDir, h.id, hostDeps(flags.Root(), h.stateDir, h.id))
			full, _ := json.Marshal(res)
			fmt.Fprintln(cmd.OutOrStdout(), string(full))
			if res.Outcome == v1alpha1.OutcomeFailed {
				return errors.New(res.Message)
			}
			return nil
		},
	}
	h.register(cmd)
	return cmd
}

// newHostRecover is the run unit's ExecStopPost and the guard timer's service: it rolls back a run that died and
// starts the units.
func newHostRecover(flags *NodeFlags) *cobra.Command {
	var h hostFlags
	cmd := &cobra.Command{
		Use:    hostrun.CmdHostRecover,
		Short:  "Recover the node after a host-side run ended (rolls back an unfinished one, starts the units)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			res := hostrun.HostRecover(cmd.Context(), flags.Root(), h.stateDir, h.id, h.reason, hostDeps(flags.Root(), h.stateDir, h.id))
			full, _ := json.Marshal(res)
			fmt.Fprintln(cmd.OutOrStdout(), string(full))
			if res.Outcome == v1alpha1.OutcomeFailed {
				return errors.New(res.Message)
			}
			return nil
		},
	}
	h.register(cmd)
	cmd.Flags().StringVar(&h.reason, "reason", "", "what is known of why the run ended")
	return cmd
}

const defaultVerifyDeadline = 60 * time.Second

// verifyView is what the verification reads of the run's settings: the files and the runtime, not the links (the
// run's netns is for DeleteLink), and containerd's config read again, since the repair may have changed it.
func verifyView(env step.Env) step.Env {
	v := env
	v.NetNS, v.Links, v.Runtime, v.FlannelSubnetEnv = "", nil, nil, ""
	return v
}

// diagnoseVerifier verifies a node with the read side's diagnosis: no finding of severity error (conflists parse,
// the plugins of the chosen chain are present and support its cniVersion, containerd's CNI settings hold), and
// the runtime reports NetworkReady over CRI. containerd loads the CNI config a moment after it starts, so this
// polls until the deadline before it fails.
func diagnoseVerifier(deadline time.Duration) executor.Verifier {
	return func(ctx context.Context, env step.Env) (string, error) {
		ctx, cancel := context.WithTimeout(ctx, deadline)
		defer cancel()
		for {
			rep := diagnose.Run(ctx, diagnose.Options{Settings: verifyView(env)})
			var problems []string
			for _, f := range rep.Findings {
				if f.Severity == diagnose.Error {
					problems = append(problems, f.Summary)
				}
			}
			switch {
			case rep.Runtime == nil:
				problems = append(problems, "The runtime does not answer over CRI: "+rep.RuntimeError+".")
			case !rep.Runtime.NetworkReady:
				problems = append(problems, fmt.Sprintf("The runtime reports the network not ready (%s: %s).", rep.Runtime.NetworkReason, rep.Runtime.NetworkMessage))
			}
			if len(problems) == 0 {
				return fmt.Sprintf("the node verifies: %d network configuration(s) load, the runtime reports NetworkReady", len(rep.ConfLists)), nil
			}
			select {
			case <-ctx.Done():
				return "", errors.New(strings.Join(problems, " "))
			case <-time.After(time.Second):
			}
		}
	}
}

// expectedSHA256 is the sha256 the binary must have before it is placed on the host: the flag's, or the one the
// executor image's build recorded. A binary corrupted in the image is then refused before it runs as root on the
// host. Outside the image (tests, a binary run by hand) there is no record and only the copy itself is verified.
func expectedSHA256(o applyOptions) string {
	if o.binarySHA256 != "" || o.binarySHA256File == "" {
		return o.binarySHA256
	}
	raw, err := host.ReadFile(o.binarySHA256File, host.MaxSmallFile)
	if err != nil {
		return ""
	}
	sum, _, _ := strings.Cut(strings.TrimSpace(string(raw)), " ")
	return sum
}
