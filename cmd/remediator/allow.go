package main

import (
	"fmt"

	"github.com/cnimedic/cnimedic/remediator/step"
	"github.com/cnimedic/cnimedic/remediator/units"
)

// nodeUnits are the node's runtime and kubelet units as the flags give them: the only units a plan may stop and
// start (executor.Validate), and the ones started on every path out.
func (f *NodeFlags) nodeUnits() []string { return []string{f.RuntimeUnit, f.KubeletUnit} }

// checkAllowlist checks the flags that name what the remediator may touch against its own allowlist (remediator/units
// and remediator/step): the kubelet and runtime units must be ones cnimedic knows, and the CNI dirs and containerd's
// config must lie under the known roots. The error names the flag. Dirs left empty come from containerd's config;
// the executor checks those itself (step.NewPaths) before it changes anything.
func (f *NodeFlags) checkAllowlist() error {
	if err := units.CheckLayout(f.KubeletUnit, f.RuntimeUnit); err != nil {
		return badInput(err)
	}
	if f.ConfDir != "" {
		if err := step.CheckCNIDir(f.ConfDir); err != nil {
			return badInput(fmt.Errorf("--conf-dir: %w", err))
		}
	}
	for _, d := range f.BinDirs {
		if err := step.CheckCNIDir(d); err != nil {
			return badInput(fmt.Errorf("--bin-dir: %w", err))
		}
	}
	if f.ContainerdConfig == "" {
		return nil // containerd's default, runtimecfg.DefaultPath
	}
	if err := step.CheckRuntimeConfig(f.ContainerdConfig); err != nil {
		return badInput(fmt.Errorf("--containerd-config: %w", err))
	}
	return nil
}
