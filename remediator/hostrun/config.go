package hostrun

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/cnimedic/cnimedic/remediator/executor"
	"github.com/cnimedic/cnimedic/remediator/host"
	"github.com/cnimedic/cnimedic/remediator/journal"
	"github.com/cnimedic/cnimedic/remediator/node"
	"github.com/cnimedic/cnimedic/remediator/step"
)

// ConfigFile is the host-side run's settings, in the remediation's journal directory next to the plan.
const ConfigFile = "run.json"

// Config is what the executor pod hands the host-side run besides the plan: the node's paths as the pod's flags
// gave them (host paths), the units, and the timings. It is typed data in a file, never a command line to parse.
type Config struct {
	// Settings are the node's settings the pod parsed (their JSON names are this file's): the host-side run
	// completes what the pod could not read (the layout, containerd's config) once, on the host.
	node.Settings
	// CriticalUnits are started on every path out, in order.
	CriticalUnits []string `json:"criticalUnits"`
	// Bus is the D-Bus address the host-side run talks to systemd on; empty means systemd's private socket, then
	// the system bus.
	Bus string `json:"bus,omitempty"`
	// Settle is how long a started unit must stay up.
	Settle time.Duration `json:"settle"`
	// OnInterrupted is what a run does with the journal of one that died.
	OnInterrupted executor.Interrupted `json:"onInterrupted"`
	// VerifyTimeout bounds VerifyNode's wait for the node to verify (the verifier's default when zero).
	VerifyTimeout time.Duration `json:"verifyTimeout,omitempty"`
}

// Env is the step.Env of the run, for a process that sees the host's files at root.
func (c Config) Env(root host.Root) step.Env {
	env := c.Settings
	env.Root = root
	return env
}

// EnvConfig is the Config of an Env (BundleDir as given; the Launcher replaces it with the staged copy).
func EnvConfig(env step.Env) Config {
	env.Root = ""
	env.Backups = nil
	return Config{Settings: env}
}

func writeConfig(root host.Root, stateDir, id string, c Config) error {
	data, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return err
	}
	return host.WriteFileAtomic(filepath.Join(journal.Dir(root, JournalBase(stateDir), id), ConfigFile), append(data, '\n'), 0o600)
}

// ReadConfig reads a remediation's run settings.
func ReadConfig(root host.Root, stateDir, id string) (Config, error) {
	var c Config
	data, err := os.ReadFile(filepath.Join(journal.Dir(root, JournalBase(stateDir), id), ConfigFile))
	if err != nil {
		return c, fmt.Errorf("settings of remediation %s: %w", id, err)
	}
	if err := json.Unmarshal(data, &c); err != nil {
		return c, fmt.Errorf("settings of remediation %s: %w", id, err)
	}
	return c, nil
}
