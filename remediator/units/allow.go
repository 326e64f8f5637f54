package units

import (
	"fmt"
	"path"
	"slices"
	"strings"
)

// The units a remediation may stop and start, whatever a plan or a policy says: the unit half of the remediator's
// own allowlist on the node (the file half is step.Paths). Each is the unit name the node layout's own installer
// gives it.
var (
	// KubeletUnits run kubelet: kubeadm and distribution packages (kubelet.service), and the single-binary
	// distributions whose one unit runs kubelet and containerd together (k3s: k3s.service on servers,
	// k3s-agent.service on agents; RKE2: rke2-server.service and rke2-agent.service).
	KubeletUnits = []string{"kubelet.service", "k3s.service", "k3s-agent.service", "rke2-server.service", "rke2-agent.service"}
	// RuntimeUnits run the container runtime: containerd's own containerd.service, or the single-binary
	// distributions' unit. CRI-O (crio.service) is not listed: no repair here speaks to CRI-O's configuration.
	RuntimeUnits = []string{"containerd.service", "k3s.service", "k3s-agent.service", "rke2-server.service", "rke2-agent.service"}
)

// Canonical returns the full unit name systemd uses for name: a name without a unit type gets ".service", as
// systemctl completes it. Names that are no unit name at all (empty, ".", "..", a path, whitespace, control
// characters, an option-like leading "-") are refused.
func Canonical(name string) (string, error) {
	switch {
	case name == "":
		return "", fmt.Errorf("empty unit name")
	case name == "." || name == ".." || strings.HasPrefix(name, ".") || strings.HasPrefix(name, "-"):
		return "", fmt.Errorf("invalid unit name %q", name)
	case strings.ContainsFunc(name, func(r rune) bool { return !unitNameRune(r) }):
		return "", fmt.Errorf("invalid unit name %q: only letters, digits and :-_.@ may appear in a unit name", name)
	}
	if path.Ext(name) == "" {
		name += ".service"
	}
	return name, nil
}

// unitNameRune reports whether r may appear in a systemd unit name (systemd.unit(5): ASCII letters, digits,
// ":", "-", "_", ".", "\" and "@"; the backslash of escapes is left out, no unit here needs it).
func unitNameRune(r rune) bool {
	return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune(":-_.@", r)
}

// Allowlist is the set of units a remediation may stop and start on this node: the node's kubelet and runtime
// units (the remediator's --kubelet-unit and --runtime-unit, which are also the units it starts on every path
// out).
type Allowlist struct {
	units []string
}

// NewAllowlist checks that each of the node's units is a kubelet or runtime unit that cnimedic knows and returns
// the allowlist of those units.
func NewAllowlist(nodeUnits ...string) (Allowlist, error) {
	var a Allowlist
	for _, u := range nodeUnits {
		c, err := Canonical(u)
		if err != nil {
			return Allowlist{}, err
		}
		if !slices.Contains(KubeletUnits, c) && !slices.Contains(RuntimeUnits, c) {
			return Allowlist{}, fmt.Errorf("unit %s is not a kubelet or container runtime unit cnimedic knows (%s)", u, knownWords())
		}
		if !slices.Contains(a.units, c) {
			a.units = append(a.units, c)
		}
	}
	return a, nil
}

// CheckLayout checks the node's kubelet and runtime units as the remediator's flags give them (an empty one is
// the detected layout's, checked by NewAllowlist); the error names the flag.
func CheckLayout(kubelet, runtime string) error {
	if err := knownAs("--kubelet-unit", kubelet, KubeletUnits); err != nil {
		return err
	}
	return knownAs("--runtime-unit", runtime, RuntimeUnits)
}

func knownAs(flag, unit string, known []string) error {
	if unit == "" {
		return nil
	}
	c, err := Canonical(unit)
	if err != nil {
		return fmt.Errorf("%s: %w", flag, err)
	}
	if !slices.Contains(known, c) {
		return fmt.Errorf("%s %s: not one cnimedic knows (%s)", flag, unit, strings.Join(known, ", "))
	}
	return nil
}

// Check refuses a unit that is not one of the node's kubelet and runtime units.
func (a Allowlist) Check(unit string) error {
	c, err := Canonical(unit)
	if err != nil {
		return err
	}
	if !slices.Contains(a.units, c) {
		return fmt.Errorf("unit %s is not this node's kubelet or runtime unit (%s)", unit, strings.Join(a.units, ", "))
	}
	return nil
}

func knownWords() string {
	var all []string
	for _, u := range append(slices.Clone(KubeletUnits), RuntimeUnits...) {
		if !slices.Contains(all, u) {
			all = append(all, u)
		}
	}
	return strings.Join(all, ", ")
}
