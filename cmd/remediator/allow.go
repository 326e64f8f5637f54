package main

import (
	"fmt"
	"slices"
	"strings"

	"github.com/cnimedic/cnimedic/api/v1alpha1"

	"github.com/cnimedic/cnimedic/remediator/step"
	"github.com/cnimedic/cnimedic/remediator/units"
)

// nodeUnits are the node's runtime and kubelet units, the runtime's first (the order they start in): the ones the
// flags name, else the detected layout's (one unit on k3s and RKE2). They are the only units a plan may stop and
// start (executor.Validate), and the ones started on every path out.
func (f *NodeFlags) nodeUnits() []string {
	u := slices.Clone(f.Env().Units)
	slices.Reverse(u)
	return u
}

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

// checkRepairable is plan's and apply's check of the node itself, after the flags': a layout whose runtime
// cnimedic does not repair (CRI-O, MicroK8s) is refused with the layout's reason, and so are units that are not the
// ones the node runs its kubelet and runtime in (stopping "kubelet.service" on a k3s node, where k3s.service runs
// both, stops nothing that matters and starts nothing back). The units in effect must be ones cnimedic knows.
func (f *NodeFlags) checkRepairable() error {
	env := f.Env()
	if l := env.Layout; l != nil && (l.Kind == v1alpha1.LayoutCRIO || l.Kind == v1alpha1.LayoutMicroK8s) {
		return badInput(fmt.Errorf("this node's layout is %s, which cnimedic does not repair: %s", l.Kind, l.Reason))
	}
	if env.UnitsContradict {
		return badInput(fmt.Errorf("--kubelet-unit/--runtime-unit: %s", strings.Join(env.Contradictions, "; ")))
	}
	if _, err := units.NewAllowlist(env.Units...); err != nil {
		return badInput(fmt.Errorf("the node's units: %w", err))
	}
	return nil
}
