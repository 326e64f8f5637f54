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
	"github.com/cnimedic/cnimedic/remediator/step"
)

// ConfigFile is the host-side run's settings, in the remediation's journal directory next to the plan.
const ConfigFile = "run.json"

// Config is what the executor pod hands the host-side run besides the plan: the node's paths as the pod's flags
// gave them (host paths), the units, and the timings. It is typed data in a file, never a command line to parse.
type Config struct {
	ConfDir          string   `json:"confDir"`
	BinDirs          []string `json:"binDirs"`
	ContainerdConfig string   `json:"containerdConfig"`
	IPAMDataDir      string   `json:"ipamDataDir"`
	NetnsDir         string   `json:"netnsDir"`
	// FlannelSubnetEnv is flanneld's subnet.env (see step.Env.FlannelSubnetEnv).
	FlannelSubnetEnv string `json:"flannelSubnetEnv,omitempty"`
	// BundleDir is the host directory of the staged plugin bundle ("" when none was staged).
	BundleDir   string `json:"bundleDir,omitempty"`
	CRIEndpoint string `json:"criEndpoint"`
	// CNISpecCeiling is the highest CNI spec version the runtime implements, read by the pod while the runtime
	// was still up (the run stops it).
	CNISpecCeiling string `json:"cniSpecCeiling,omitempty"`
	// ProcDir is the host's /proc as the run sees it ("" skips the netns-in-use check).
	ProcDir string `json:"procDir,omitempty"`
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
	return step.Env{
		Root:             root,
		ConfDir:          c.ConfDir,
		BinDirs:          c.BinDirs,
		ContainerdConfig: c.ContainerdConfig,
		IPAMDataDir:      c.IPAMDataDir,
		NetnsDir:         c.NetnsDir,
		FlannelSubnetEnv: c.FlannelSubnetEnv,
		BundleDir:        c.BundleDir,
		CRIEndpoint:      c.CRIEndpoint,
		CNISpecCeiling:   c.CNISpecCeiling,
		ProcDir:          c.ProcDir,
	}
}

// EnvConfig is the Config of an Env (BundleDir as given; the Launcher replaces it with the staged copy).
func EnvConfig(env step.Env) Config {
	return Config{
		ConfDir:          env.ConfDir,
		BinDirs:          env.BinDirs,
		ContainerdConfig: env.ContainerdConfig,
		IPAMDataDir:      env.IPAMDataDir,
		NetnsDir:         env.NetnsDir,
		FlannelSubnetEnv: env.FlannelSubnetEnv,
		BundleDir:        env.BundleDir,
		CRIEndpoint:      env.CRIEndpoint,
		CNISpecCeiling:   env.CNISpecCeiling,
		ProcDir:          env.ProcDir,
	}
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
