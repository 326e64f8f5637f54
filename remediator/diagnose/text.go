package diagnose

import (
	"fmt"
	"io"
	"strings"
)

// WriteText writes the report for a person: the verdict first, then the evidence section by section.
func WriteText(w io.Writer, r Report) error {
	p := &printer{w: w}
	p.line("Findings")
	if len(r.Findings) == 0 {
		p.line("  Nothing wrong found with the node's CNI configuration, plugins or runtime.")
	}
	for _, f := range r.Findings {
		sig := ""
		if f.Signature != "" {
			sig = " [" + string(f.Signature) + "]"
		}
		p.line("  %s%s: %s", strings.ToUpper(string(f.Severity)), sig, f.Summary)
		if f.Repair != "" {
			p.line("      repair: %s", f.Repair)
		}
	}

	if l := r.Layout; l != nil {
		p.line("")
		role := ""
		if l.Role != "" {
			role = " " + l.Role
		}
		p.line("layout: %s%s, servable %t", l.Kind, role, l.Servable)
		p.line("  units %s, CRI socket %s, runtime config %s", strings.Join(l.Units, " "), l.CRISocket, l.RuntimeConfig)
		if l.RuntimeConfigTemplate != "" {
			p.line("  generated from %s", l.RuntimeConfigTemplate)
		}
		if len(l.RuntimeConfigImports) > 0 {
			p.line("  drop-ins %s", strings.Join(l.RuntimeConfigImports, " "))
		}
		if l.Reason != "" {
			p.line("  %s", l.Reason)
		}
	}

	p.line("")
	c := r.Containerd
	p.line("containerd")
	switch {
	case c.Version != "":
		bug := ""
		if c.TeardownBug {
			bug = "  (1.6.0-1.6.3: known CNI teardown bug)"
		}
		p.line("  version %s%s", c.Version, bug)
	case c.VersionError != "":
		p.line("  version unknown: %s", c.VersionError)
	}
	cfg := c.Config
	switch {
	case !cfg.Exists:
		p.line("  %s does not exist: containerd uses its defaults", cfg.Path)
	case cfg.ParseError != "":
		p.line("  %s DOES NOT PARSE: %s", cfg.Path, cfg.ParseError)
	default:
		p.line("  %s (config version %d), table [%s]", cfg.Path, cfg.Version, cfg.Table)
	}
	s := cfg.Settings
	p.line("  bin_dir %s, conf_dir %s, conf_template %q, max_conf_num %d", strings.Join(s.BinDirs, ":"), s.ConfDir, s.ConfTemplate, s.MaxConfNum)

	p.line("")
	p.line("Network configurations in %s (in the order the runtime reads them)", r.ConfDir)
	if len(r.ConfLists) == 0 {
		p.line("  none")
	}
	for _, cl := range r.ConfLists {
		mark := "  "
		if cl.Loaded {
			mark = "* "
		}
		if !cl.Valid() {
			p.line("%s%s (mode %#o): DOES NOT LOAD: %s", mark, cl.Path, cl.Mode, cl.ParseError)
			continue
		}
		ver := fmt.Sprintf("cniVersion %q", cl.CNIVersion)
		if !cl.HasCNIVersion {
			ver = "NO cniVersion"
		}
		if len(cl.CNIVersions) > 0 {
			ver += fmt.Sprintf(", cniVersions %v (effective %s)", cl.CNIVersions, cl.EffectiveVersion)
		}
		p.line("%s%s (mode %#o): network %q, %s", mark, cl.Path, cl.Mode, cl.Network, ver)
		for _, pl := range cl.Chain {
			switch {
			case !pl.Found:
				p.line("      %-12s %-9s MISSING", pl.Type, pl.Kind)
			case pl.Error != "":
				p.line("      %-12s %-9s %s (%#o): %s", pl.Type, pl.Kind, pl.Path, pl.Mode, pl.Error)
			default:
				p.line("      %-12s %-9s %s (%#o) supports %s", pl.Type, pl.Kind, pl.Path, pl.Mode, strings.Join(pl.Versions, " "))
			}
		}
		if cl.Highest != "" {
			p.line("      highest version every plugin supports: %s", cl.Highest)
		}
	}
	if r.Selection.Reason != "" {
		p.line("  the runtime loads nothing: %s", r.Selection.Reason)
	} else if len(r.Selection.Loaded) > 0 {
		p.line("  (* = loaded by the runtime; the first is the pods' default network)")
	}
	lb := r.Loopback
	switch {
	case !lb.Found:
		p.line("  loopback plugin: MISSING")
	case lb.Error != "":
		p.line("  loopback plugin %s: %s", lb.Path, lb.Error)
	default:
		p.line("  loopback plugin %s supports %s", lb.Path, strings.Join(lb.Versions, " "))
	}
	p.line("  CNI 1.1 (GC/STATUS verbs): %s", words11(r.CNI11))

	p.line("")
	p.line("Runtime (CRI)")
	if r.Runtime != nil {
		p.line("  RuntimeReady=%t NetworkReady=%t %s %s", r.Runtime.RuntimeReady, r.Runtime.NetworkReady, r.Runtime.NetworkReason, r.Runtime.NetworkMessage)
		p.line("  %d pod sandbox(es)", len(r.Sandboxes))
	} else {
		p.line("  not asked: %s", r.RuntimeError)
	}

	p.line("")
	p.line("host-local IPAM")
	if len(r.IPAM) == 0 {
		p.line("  no networks")
	}
	for _, n := range r.IPAM {
		p.line("  network %q: %d lease(s)", n.Name, len(n.Leases))
		for _, s := range n.RangeSets {
			p.line("      range set %s: %d of %d used", strings.Join(s.Ranges, ","), s.Used, s.Capacity)
		}
		switch {
		case !n.LeakedKnown:
			p.line("      leaked: unknown (runtime not asked)")
		default:
			p.line("      leaked (no live sandbox): %d", len(n.Leaked))
		}
	}

	p.line("")
	p.line("Network namespaces and links")
	for _, n := range r.Netns {
		state := "in use by sandbox " + shortID(n.UsedBySandbox)
		switch {
		case n.Stale:
			state = "STALE"
		case n.UsedBySandbox == "":
			state = fmt.Sprintf("%d process(es)", n.Processes)
		}
		p.line("  %s: %s", n.Path, state)
	}
	for _, l := range r.Links {
		if !l.Exists {
			p.line("  %s: absent", l.Name)
			continue
		}
		extra := ""
		if l.Stale {
			extra = fmt.Sprintf("  STALE (should be %s)", l.Expected)
		}
		p.line("  %s (%s, %s): %s%s", l.Name, l.Type, upWord(l.Up), strings.Join(l.Addresses, " "), extra)
	}

	p.line("")
	p.line("Units")
	if r.UnitsNote != "" {
		p.line("  %s", r.UnitsNote)
	}
	for _, u := range r.Units {
		if u.Error != "" {
			p.line("  %s: unknown (%s)", u.Unit, u.Error)
		} else {
			p.line("  %s: %s (%s)", u.Unit, u.ActiveState, u.SubState)
		}
	}
	return p.err
}

func words11(c CNI11) string {
	rt := "runtime unknown"
	if c.Runtime != nil {
		rt = "runtime no"
		if *c.Runtime {
			rt = "runtime yes"
		}
	}
	pl := "plugins no"
	if c.Plugins {
		pl = "plugins yes"
	}
	verdict := "not available, file-level repairs are used"
	if c.GC {
		verdict = "available and preferred"
	}
	out := fmt.Sprintf("%s (%s, %s)", verdict, rt, pl)
	if c.Note != "" {
		out += "; " + c.Note
	}
	return out
}

func shortID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

func upWord(up bool) string {
	if up {
		return "up"
	}
	return "down"
}

type printer struct {
	w   io.Writer
	err error
}

func (p *printer) line(format string, args ...any) {
	if p.err != nil {
		return
	}
	_, p.err = fmt.Fprintf(p.w, format+"\n", args...)
}
