package diagnose

import (
	"fmt"
	"net"
	"sort"
	"strings"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
	"github.com/cnimedic/cnimedic/remediator/plugins"
)

// Severity of a finding, and Finding, are the executor contract's (api/v1alpha1): the manager decides on them.
type Severity = v1alpha1.FindingSeverity

// Finding is one thing diagnose found, in words a cluster operator understands.
type Finding = v1alpha1.Finding

const (
	Error   = v1alpha1.SeverityError
	Warning = v1alpha1.SeverityWarning
	Info    = v1alpha1.SeverityInfo
)

const (
	sigIncompatible   = v1alpha1.SignatureCNIVersionIncompatible
	sigMissing        = v1alpha1.SignatureCNIVersionMissing
	sigNotInitialized = v1alpha1.SignatureCNINotInitialized
	sigBinaryMissing  = v1alpha1.SignaturePluginBinaryMissing
	sigIPAMExhausted  = v1alpha1.SignatureIPAMExhausted
	sigConfigInvalid  = v1alpha1.SignatureConfigInvalid
	sigStaleState     = v1alpha1.SignatureStaleState
)

// findings turns the report's data into statements.
func findings(r Report) []Finding {
	var out []Finding
	add := func(f Finding) { out = append(out, f) }
	cfg := r.Containerd.Config

	if cfg.ParseError != "" {
		add(Finding{Severity: Error, Path: cfg.Path,
			Summary: fmt.Sprintf("containerd's configuration %s does not parse: %s. containerd cannot start with it.", cfg.Path, cfg.ParseError),
			Repair:  "Fix the file by hand or restore it from a backup; cnimedic never rewrites a file it cannot parse."})
	}
	if len(cfg.DropIns) > 0 {
		add(Finding{Severity: Info, Path: cfg.Path,
			Summary: fmt.Sprintf("containerd's configuration imports %s; the CNI settings reported are the merged ones.", strings.Join(cfg.DropIns, ", "))})
	}
	for _, e := range cfg.DropInErrors {
		add(Finding{Severity: Error, Path: cfg.Path,
			Summary: fmt.Sprintf("containerd cannot load a drop-in its configuration imports: %s.", e),
			Repair:  "Fix or remove the drop-in, or the import naming it; containerd refuses to start while it fails to load."})
	}
	if r.Containerd.TeardownBug {
		add(Finding{Severity: Warning, Signature: sigMissing,
			Summary: fmt.Sprintf("containerd %s is one of the releases 1.6.0-1.6.3 whose CNI setup and teardown fail when plugins are old or a conflist has no cniVersion (fixed in 1.6.4).", r.Containerd.Version),
			Repair:  "Upgrade containerd to 1.6.4 or later; until then keep cniVersion set and the reference plugins current."})
	}
	if t := r.Containerd.TemplateExists; t != nil && !*t {
		add(Finding{Severity: Error, Signature: sigNotInitialized, Path: cfg.Path,
			Summary: fmt.Sprintf("containerd's conf_template names %s, which does not exist; containerd cannot write the node's network configuration from it.", cfg.Settings.ConfTemplate),
			Repair:  "Set conf_template to an existing template or to \"\" (a CNI provider such as Calico writes its own conflist), then restart containerd."})
	}

	// The configuration files and what the runtime does with them.
	switch {
	case len(r.ConfLists) == 0 && r.ConfElsewhere != "":
		add(Finding{Severity: Error, Signature: sigNotInitialized, Path: r.ConfDir,
			Summary: fmt.Sprintf("No network configuration in %s, the directory containerd reads (conf_dir), while %s holds some: the runtime reports \"cni plugin not initialized\" and no pod gets a network.", r.ConfDir, r.ConfElsewhere),
			Repair:  fmt.Sprintf("Point containerd's conf_dir at %s (RepairRuntimeCNIConfig) and restart it.", r.ConfElsewhere),
			Fix:     v1alpha1.ActionRepairRuntimeCNIConfig})
	case len(r.ConfLists) == 0:
		add(Finding{Severity: Error, Signature: sigNotInitialized, Path: r.ConfDir,
			Summary: fmt.Sprintf("No network configuration in %s, the directory containerd reads (conf_dir), nor anywhere else cnimedic looks: the runtime reports \"cni plugin not initialized\" and no pod gets a network.", r.ConfDir),
			Repair:  "Check that the CNI provider's DaemonSet runs on this node and writes its conflist where containerd's conf_dir points.",
			// Nothing on the node to repair: pointing containerd elsewhere, or restarting it, changes nothing.
			Fix: v1alpha1.ActionEscalate})
	}
	for i, cl := range r.ConfLists {
		if !cl.Valid() {
			blocking := r.Selection.Blocking == i
			f := Finding{Severity: Warning, Signature: sigConfigInvalid, Path: cl.Path,
				Summary: fmt.Sprintf("%s does not load: %s.", cl.Path, cl.ParseError),
				Repair:  "Restore the file from its last good backup (RestoreConfList); it is never overwritten otherwise."}
			if blocking {
				f.Severity = Error
				f.Summary += " containerd stops at the first file that does not load, so no network is set up (\"cni plugin not initialized\")."
			}
			add(f)
			continue
		}
		if cl.Mode != 0 && cl.Mode&0o044 != 0o044 {
			add(Finding{Severity: Warning, Signature: sigNotInitialized, Path: cl.Path,
				Summary: fmt.Sprintf("%s has mode %#o; network configurations are expected to be readable by all (0644).", cl.Path, cl.Mode),
				Repair:  "FixConfFileModes sets it to 0644."})
		}
		if !cl.Loaded {
			continue
		}
		out = append(out, chainFindings(r, cl)...)
	}

	// The loopback plugin: containerd 1.6+ configures lo with CNI 1.0.0 itself.
	if lb := r.Loopback; !lb.Found {
		add(Finding{Severity: Error, Signature: sigBinaryMissing,
			Summary: fmt.Sprintf("The loopback plugin is missing from %s; containerd runs it for every pod.", strings.Join(r.BinDirs, ", ")),
			Repair:  "Install the bundled reference plugins (InstallReferencePlugins)."})
	} else if lb.Error == "" && !lb.Supports("1.0.0") && runtimeAtLeast16(r) {
		add(Finding{Severity: Error, Signature: sigIncompatible, Path: lb.Path,
			Summary: fmt.Sprintf("The loopback plugin %s supports only %s, but containerd %sconfigures the loopback interface with CNI 1.0.0: every pod sandbox fails.", lb.Path, strings.Join(lb.Versions, ", "), versionOr(r.Containerd.Version, "(1.6 and later) ")),
			Repair:  "Install the bundled reference plugins (InstallReferencePlugins): loopback 1.0.0 or later.",
			// No conflist rewrite can help: containerd itself asks loopback for 1.0.0.
			Fix: v1alpha1.ActionInstallReferencePlugins})
	}

	// The runtime's own view.
	switch {
	case r.Runtime != nil && !r.Runtime.NetworkReady:
		add(Finding{Severity: Error, Signature: sigNotInitialized,
			Summary: fmt.Sprintf("The runtime reports its network not ready (NetworkReady=false, reason %s: %s); the node is NotReady and pods stay in ContainerCreating.", r.Runtime.NetworkReason, r.Runtime.NetworkMessage),
			Repair:  "Fix the configuration problems listed here, then restart containerd so that it loads the configuration again."})
	case r.Runtime == nil && r.RuntimeError != "":
		add(Finding{Severity: Warning,
			Summary: fmt.Sprintf("The runtime could not be asked (%s): sandbox, IPAM-leak and network-namespace checks are incomplete.", r.RuntimeError)})
	}

	out = append(out, ipamFindings(r)...)
	out = append(out, staleFindings(r)...)

	for _, u := range r.Units {
		if u.Error != "" {
			add(Finding{Severity: Warning, Summary: fmt.Sprintf("The state of %s could not be read: %s.", u.Unit, u.Error)})
		} else if u.ActiveState != "active" {
			add(Finding{Severity: Warning, Summary: fmt.Sprintf("%s is %s (%s).", u.Unit, u.ActiveState, u.SubState)})
		}
	}
	if r.CNI11.GC {
		add(Finding{Severity: Info, Summary: "The runtime and every plugin of the loaded chain speak CNI 1.1: the GC and STATUS verbs are available."})
	}
	return out
}

func runtimeAtLeast16(r Report) bool {
	ceil := RuntimeSpecCeiling(r.Containerd.Version)
	// Unknown runtime version: assume a current containerd, which is what the guides are about.
	return ceil == "" || plugins.AtLeast(ceil, "1.0.0")
}

// chainFindings checks a loaded configuration against its plugins.
func chainFindings(r Report, cl ConfList) []Finding {
	var out []Finding
	name := cl.Path
	if !cl.HasCNIVersion || cl.CNIVersion == "" {
		what := "has no cniVersion"
		if cl.HasCNIVersion {
			what = "has an empty cniVersion"
		}
		repair := "Add the cniVersion (SetCNIVersion)"
		if cl.Highest != "" {
			repair += fmt.Sprintf(": %s is the highest version every plugin of its chain supports", cl.Highest)
		}
		out = append(out, Finding{Severity: Error, Signature: sigMissing, Path: name,
			Summary: fmt.Sprintf("%s %s. Pods may start, but deleting them fails with: failed to destroy network for sandbox ...: invalid version \"\": the version is empty; they then stay attached to their network namespace.", name, what),
			Repair:  repair + "."})
	}
	for _, t := range HostLocalWithoutRanges(cl.File) {
		out = append(out, Finding{Severity: Error, Signature: sigConfigInvalid, Path: name, Fix: v1alpha1.ActionEscalate,
			Summary: fmt.Sprintf("The host-local IPAM of plugin %q in %s has neither \"subnet\" nor \"ranges\" (and the plugin does not take \"ipRanges\" from the runtime): host-local fails every pod with \"no IP ranges specified\".", t, name),
			Repair:  "The CNI provider, or whoever writes this conflist, must write the node's pod subnet into it; cnimedic never invents a subnet."})
	}
	version := cl.EffectiveVersion
	var missing, broken, behind []string
	var example plugins.Info
	for _, p := range cl.Chain {
		switch {
		case !p.Found:
			if p.Kind == plugins.Vendor {
				out = append(out, Finding{Severity: Error, Signature: sigBinaryMissing, Path: name,
					Summary: fmt.Sprintf("Plugin %q used by %s is not in %s; pods fail with: failed to find plugin %q in path. It belongs to the network provider, not to the reference plugins.", p.Type, name, strings.Join(r.BinDirs, ", "), p.Type),
					Repair:  fmt.Sprintf("Check the provider's DaemonSet on this node (it installs %s); cnimedic never installs or replaces a vendor plugin.", p.Type),
					Fix:     v1alpha1.ActionEscalate})
			} else {
				missing = append(missing, p.Type)
			}
		case p.Error != "":
			broken = append(broken, fmt.Sprintf("%s (%s)", p.Type, p.Error))
		case version != "" && !p.Supports(version):
			behind = append(behind, fmt.Sprintf("%s (%s) supports only %s", p.Type, p.Path, strings.Join(p.Versions, ", ")))
			example = p
		}
	}
	if len(behind) > 0 {
		repair := "Install the bundled reference plugins (InstallReferencePlugins)"
		if cl.Highest != "" {
			repair += fmt.Sprintf(", or set cniVersion to %s, the highest version every plugin of the chain supports (SetCNIVersion)", cl.Highest)
		}
		out = append(out, Finding{Severity: Error, Signature: sigIncompatible, Path: name,
			Summary: fmt.Sprintf("%s asks for CNI version %s, which its plugins do not all support: %s. Pods fail with: incompatible CNI versions; config is %q, plugin supports [%s].",
				name, version, strings.Join(behind, "; "), version, quoteAll(example.Versions)),
			Repair: repair + "."})
	}
	if len(missing) > 0 {
		out = append(out, Finding{Severity: Error, Signature: sigBinaryMissing, Path: name,
			Summary: fmt.Sprintf("Reference plugin(s) %s used by %s are not in %s: pods fail with \"failed to find plugin ... in path\".", strings.Join(missing, ", "), name, strings.Join(r.BinDirs, ", ")),
			Repair:  "Install the bundled reference plugins (InstallReferencePlugins)."})
	}
	if len(broken) > 0 {
		out = append(out, Finding{Severity: Error, Signature: sigNotInitialized, Path: name,
			Summary: fmt.Sprintf("Plugin(s) used by %s cannot run: %s.", name, strings.Join(broken, "; ")),
			Repair:  "FixConfFileModes makes plugins executable (0755); a plugin that fails its VERSION call needs replacing."})
	}
	return out
}

func quoteAll(vs []string) string {
	q := make([]string, len(vs))
	for i, v := range vs {
		q[i] = fmt.Sprintf("%q", v)
	}
	return strings.Join(q, " ")
}

func ipamFindings(r Report) []Finding {
	var out []Finding
	if r.IPAMError != "" {
		out = append(out, Finding{Severity: Warning, Summary: "host-local IPAM state could not be read: " + r.IPAMError})
	}
	for _, n := range r.IPAM {
		full := false
		for _, s := range n.RangeSets {
			if s.Full() {
				full = true
				out = append(out, Finding{Severity: Error, Signature: sigIPAMExhausted, Path: n.Dir,
					Summary: fmt.Sprintf("Network %q has no free address: %d of %d addresses of range set %s are allocated, so new pods fail with \"no IP addresses available in range set\".", n.Name, s.Used, s.Capacity, strings.Join(s.Ranges, ",")),
					Repair:  reclaimWords(n)})
			}
		}
		if !full && len(n.Leaked) > 0 {
			out = append(out, Finding{Severity: Warning, Signature: sigIPAMExhausted, Path: n.Dir,
				Summary: fmt.Sprintf("Network %q holds %d address(es) of sandboxes that no longer exist (%s).", n.Name, len(n.Leaked), leakList(n)),
				Repair:  "ReclaimIPAM frees them; a copy of each lease is kept."})
		}
		if n.Error != "" {
			out = append(out, Finding{Severity: Warning, Path: n.Dir, Summary: fmt.Sprintf("Some leases of network %q could not be read: %s.", n.Name, n.Error)})
		}
	}
	return out
}

func reclaimWords(n IPAMNetwork) string {
	switch {
	case !n.LeakedKnown:
		return "The runtime could not be asked which sandboxes live, so leaked addresses cannot be told apart; ask again with the runtime up."
	case len(n.Leaked) == 0:
		return "Every allocated address belongs to a live sandbox: nothing can be reclaimed; the range itself is too small for this node's pods."
	default:
		return fmt.Sprintf("%d of them belong to sandboxes that no longer exist (%s): ReclaimIPAM frees them (keeping a copy) and kubelet retries.", len(n.Leaked), leakList(n))
	}
}

func leakList(n IPAMNetwork) string {
	var s []string
	for i, l := range n.Leaked {
		if i == 5 {
			s = append(s, fmt.Sprintf("and %d more", len(n.Leaked)-5))
			break
		}
		s = append(s, fmt.Sprintf("%s of %.12s", l.IP, l.ContainerID))
	}
	return strings.Join(s, ", ")
}

func staleFindings(r Report) []Finding {
	var out []Finding
	for _, l := range r.Links {
		if l.Stale {
			out = append(out, Finding{Severity: Error, Signature: sigStaleState, Path: l.Name,
				Summary: fmt.Sprintf("Link %s carries %s but should carry %s: the bridge plugin fails with \"%s\" already has an IP address different from %s\".", l.Name, strings.Join(l.Addresses, ", "), l.Expected, l.Name, l.Expected),
				Repair:  fmt.Sprintf("Delete %s (DeleteLink) with kubelet stopped; the bridge plugin recreates it with the right address for the next pod.", l.Name)})
		}
	}
	var stale []string
	for _, n := range r.Netns {
		if n.Stale {
			stale = append(stale, n.Path)
		}
	}
	if len(stale) > 0 {
		out = append(out, Finding{Severity: Warning, Signature: sigStaleState,
			Summary: fmt.Sprintf("%d network namespace(s) belong to no live sandbox and run no process: %s.", len(stale), strings.Join(stale, ", ")),
			Repair:  "RemoveStaleNetns unmounts and removes them."})
	}
	if r.NetnsErr != "" {
		out = append(out, Finding{Severity: Warning, Summary: "Network namespaces could not be listed: " + r.NetnsErr})
	}
	if r.LinksErr != "" {
		out = append(out, Finding{Severity: Warning, Summary: "Links could not be read: " + r.LinksErr})
	}
	return out
}

var severityRank = map[Severity]int{Error: 0, Warning: 1, Info: 2}

func sortFindings(fs []Finding) {
	sort.SliceStable(fs, func(i, j int) bool { return severityRank[fs[i].Severity] < severityRank[fs[j].Severity] })
}

// gatewayCIDR is gw (or the subnet's first address) with the subnet's prefix length, as the bridge plugin assigns
// it to its bridge.
func gatewayCIDR(subnet, gw string) string {
	_, n, err := net.ParseCIDR(subnet)
	if err != nil {
		return ""
	}
	ip := net.ParseIP(gw)
	if ip == nil {
		ip = make(net.IP, len(n.IP))
		copy(ip, n.IP)
		ip[len(ip)-1]++
	}
	ones, _ := n.Mask.Size()
	return fmt.Sprintf("%s/%d", ip, ones)
}

func versionOr(v, unknown string) string {
	if v == "" {
		return unknown
	}
	return v + " "
}

// Summary says in one paragraph what the diagnosis found, most severe first: the words the workflow records on a
// NodeRemediation whose action is Diagnose. The whole report is `kubectl cnimedic diagnose NODE`.
func Summary(r Report) string {
	var errs, warns int
	var parts []string
	for _, f := range r.Findings {
		switch f.Severity {
		case Error:
			errs++
		case Warning:
			warns++
		default:
			continue // info findings are for the full report
		}
		p := string(f.Severity) + ": " + f.Summary
		if f.Repair != "" {
			p += " Repair: " + f.Repair
		}
		parts = append(parts, p)
	}
	if len(parts) == 0 {
		return "the diagnosis found nothing wrong on the node"
	}
	return fmt.Sprintf("the diagnosis found %d error(s) and %d warning(s): %s", errs, warns, strings.Join(parts, " | "))
}

// Decisive are the findings the manager decides on: errors first, then warnings (info is for the full report).
func Decisive(r Report) []Finding {
	var out []Finding
	for _, sev := range []Severity{Error, Warning} {
		for _, f := range r.Findings {
			if f.Severity == sev {
				out = append(out, f)
			}
		}
	}
	return out
}
