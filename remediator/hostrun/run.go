package hostrun

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
	"github.com/cnimedic/cnimedic/remediator/cri"
	"github.com/cnimedic/cnimedic/remediator/diagnose"
	"github.com/cnimedic/cnimedic/remediator/executor"
	"github.com/cnimedic/cnimedic/remediator/host"
	"github.com/cnimedic/cnimedic/remediator/journal"
	"github.com/cnimedic/cnimedic/remediator/node"
	"github.com/cnimedic/cnimedic/remediator/runtimecfg"
	"github.com/cnimedic/cnimedic/remediator/step"
	"github.com/cnimedic/cnimedic/remediator/units"
)

// Deps are the parts of the host-side run that the binary links in: the read side's resolvers and verifier.
type Deps struct {
	Resolvers map[v1alpha1.StepType]step.Resolver
	Verifier  executor.Verifier
	// Hook is the executor's fault-injection hook (tests only).
	Hook func(point string)
}

// privateBus is systemd's own socket: it needs no bus daemon, so the run keeps working if dbus-daemon is
// restarted or broken on the node.
const privateBus = "unix:path=/run/systemd/private"

// connectHost connects to the host's systemd: the configured address, else the private socket, else the system
// bus.
func connectHost(ctx context.Context, root host.Root, bus string) (*units.Manager, error) {
	if bus != "" {
		return units.Connect(ctx, bus)
	}
	if root == "" || root == "/" {
		if m, err := units.Connect(ctx, privateBus); err == nil {
			return m, nil
		}
	}
	return units.Connect(ctx, "")
}

func (d Deps) executor(root host.Root, stateDir string, cfg Config, m *units.Manager) *executor.Executor {
	if cfg.Settle > 0 {
		m.Settle = cfg.Settle
	}
	return &executor.Executor{
		Env:           cfg.Env(root),
		JournalBase:   JournalBase(stateDir),
		Units:         m,
		Resolvers:     d.Resolvers,
		Verifier:      d.Verifier,
		CriticalUnits: cfg.CriticalUnits,
		OnInterrupted: cfg.OnInterrupted,
		Hook:          d.Hook,
	}
}

// HostRun is the body of the run unit: it executes the plan stored in the journal and disarms the guard. root
// is "/" when it runs as a unit on the host.
func HostRun(ctx context.Context, root host.Root, stateDir, id string, deps Deps) v1alpha1.ExecutorResult {
	cfg, err := ReadConfig(root, stateDir, id)
	if err != nil {
		return v1alpha1.ExecutorResult{RemediationID: id, Outcome: v1alpha1.OutcomeFailed, Message: err.Error()}
	}
	m, err := connectHost(ctx, root, cfg.Bus)
	if err != nil {
		// Nothing was stopped; the ExecStopPost recovery and the guard will try again.
		return v1alpha1.ExecutorResult{RemediationID: id, Outcome: v1alpha1.OutcomeFailed, Message: err.Error()}
	}
	defer m.Close()
	// To the unit's log (the host's journal): which way the run reached systemd.
	fmt.Fprintf(os.Stderr, "remediation %s: systemd on %s\n", id, m.Address())
	plan, err := readPlan(root, stateDir, id)
	if err != nil {
		return v1alpha1.ExecutorResult{RemediationID: id, Outcome: v1alpha1.OutcomeFailed, Message: err.Error()}
	}
	confFromRuntime, binFromRuntime := cfg.ConfDir == "", len(cfg.BinDirs) == 0
	cfg = fillFromHost(ctx, root, cfg)
	if cfg.UnitsContradict {
		// Before anything is stopped: the units the run would stop and start are not the ones this node runs its
		// kubelet and runtime in.
		return v1alpha1.ExecutorResult{RemediationID: id, Outcome: v1alpha1.OutcomeFailed,
			Message: "nothing was changed on the node: " + strings.Join(cfg.Contradictions, "; ")}
	}
	ex := deps.executor(root, stateDir, cfg, m)
	ex.RefreshEnv = currentDirs(root, cfg.ContainerdConfig, confFromRuntime, binFromRuntime)
	res := ex.Run(ctx, id, plan)
	disarm(context.WithoutCancel(ctx), m, id)
	return res
}

// currentDirs makes every step after a repair of containerd's CNI settings, and the verification, look at the CNI
// dirs containerd reads after it, for the dirs that were taken from containerd's config.toml at the start (found on
// the lab: for cni-not-initialized, conf_dir pointing elsewhere, verifying the old conf_dir rolled back a repair that
// had worked). Dirs given explicitly are left alone.
func currentDirs(root host.Root, containerdConfig string, conf, bin bool) func(step.Env) step.Env {
	if !conf && !bin {
		return nil
	}
	return func(env step.Env) step.Env {
		s := runtimecfg.Read(root, containerdConfig).Settings
		if conf && s.ConfDir != "" {
			env.ConfDir = s.ConfDir
		}
		if bin && len(s.BinDirs) > 0 {
			env.BinDirs = s.BinDirs
		}
		return env
	}
}

// HostRecover is the body of the run unit's ExecStopPost and of the guard service: see executor.Recover. reason
// is what the caller knows; systemd's EXIT_CODE/EXIT_STATUS/SERVICE_RESULT (set for ExecStopPost) are added.
func HostRecover(ctx context.Context, root host.Root, stateDir, id, reason string, deps Deps) v1alpha1.ExecutorResult {
	reason = strings.TrimSpace(reason + " " + exitFromEnv())
	if reason == "" {
		reason = "unknown cause"
	}
	cfg, err := ReadConfig(root, stateDir, id)
	if err != nil {
		// Without settings, start the default critical units all the same.
		cfg = Config{}
	}
	// A resumed run reads the node where the pod's settings left a value to the node (the socket, the dirs).
	cfg = completeOnHost(root, cfg)
	m, err := connectHost(ctx, root, cfg.Bus)
	if err != nil {
		return v1alpha1.ExecutorResult{RemediationID: id, Outcome: v1alpha1.OutcomeFailed, Message: err.Error()}
	}
	defer m.Close()
	res := deps.executor(root, stateDir, cfg, m).Recover(ctx, id, reason)
	disarm(context.WithoutCancel(ctx), m, id)
	return res
}

// fillFromHost completes what the pod could not know without mounting more of the host, once: the node's layout
// and containerd's CNI conf and bin dirs from its config, drop-ins merged (node.Complete; values the pod was given
// stay, a contradiction is recorded), and the CNI spec version its libcni implements (asked now, before the plan
// stops it; a resumed run whose runtime is already down goes without that ceiling).
func fillFromHost(ctx context.Context, root host.Root, cfg Config) Config {
	cfg = completeOnHost(root, cfg)
	if cfg.CNISpecCeiling == "" && cfg.CRIEndpoint != "" {
		if c, err := cri.Dial(root.Path(cfg.CRIEndpoint)); err == nil {
			if v, _, err := c.ContainerdVersion(ctx); err == nil {
				cfg.CNISpecCeiling = diagnose.RuntimeSpecCeiling(v)
			}
			_ = c.Close()
		}
	}
	return cfg
}

// completeOnHost completes the run's settings from the node it runs on (node.Complete): the units the pod was
// given, in the order a repair stops them, are checked against the layout's; with none given, the layout's are
// the units started on every path out.
func completeOnHost(root host.Root, cfg Config) Config {
	s := cfg.Settings
	s.Root = root
	if len(s.Units) == 0 && len(cfg.CriticalUnits) > 0 {
		s.Units = slices.Clone(cfg.CriticalUnits)
		slices.Reverse(s.Units)
	}
	cfg.Settings = node.Complete(s)
	if len(cfg.CriticalUnits) == 0 {
		// Settings lost or never given: the layout's units are the ones to start on the way out (k3s's one unit,
		// not kubeadm's two, on a k3s node).
		cfg.CriticalUnits = slices.Clone(cfg.Units)
		slices.Reverse(cfg.CriticalUnits)
	}
	return cfg
}

// HostRollback is the body of the rollback unit: see executor.Undo.
func HostRollback(ctx context.Context, root host.Root, stateDir, id string, deps Deps) v1alpha1.ExecutorResult {
	cfg, err := ReadConfig(root, stateDir, id)
	if err != nil {
		cfg = Config{}
	}
	cfg = completeOnHost(root, cfg)
	m, err := connectHost(ctx, root, cfg.Bus)
	if err != nil {
		return v1alpha1.ExecutorResult{RemediationID: id, Outcome: v1alpha1.OutcomeFailed, Message: err.Error()}
	}
	defer m.Close()
	fmt.Fprintf(os.Stderr, "remediation %s: rollback, systemd on %s\n", id, m.Address())
	res := deps.executor(root, stateDir, cfg, m).Undo(ctx, id, "the manager's verification did not accept the repair")
	disarm(context.WithoutCancel(ctx), m, id)
	return res
}

// disarm stops the guard timer once the remediation has a result: from then on nothing needs recovering.
func disarm(ctx context.Context, m *units.Manager, id string) {
	_ = m.StopIfLoaded(ctx, GuardTimer(id))
}

func exitFromEnv() string {
	var parts []string
	for _, k := range []string{"SERVICE_RESULT", "EXIT_CODE", "EXIT_STATUS"} {
		if v := os.Getenv(k); v != "" {
			parts = append(parts, fmt.Sprintf("%s=%s", k, v))
		}
	}
	return strings.Join(parts, " ")
}

func readPlan(root host.Root, stateDir, id string) (v1alpha1.Plan, error) {
	// Opened (and locked) only to read the plan; the executor opens it again for the run.
	j, err := journal.Open(root, JournalBase(stateDir), id)
	if err != nil {
		return v1alpha1.Plan{}, err
	}
	defer func() { _ = j.Close() }()
	return j.LoadPlan()
}
