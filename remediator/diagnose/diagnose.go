// Package diagnose is the node half of the seed troubleshooting guides, as data: it reads the CNI configuration,
// the plugins, containerd's configuration and state, host-local IPAM, network namespaces, links and units, and
// says in words what is wrong and which failure signature it matches. It changes nothing.
package diagnose

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"strconv"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
	"github.com/cnimedic/cnimedic/remediator/conflist"
	"github.com/cnimedic/cnimedic/remediator/cri"
	"github.com/cnimedic/cnimedic/remediator/host"
	"github.com/cnimedic/cnimedic/remediator/ipam"
	"github.com/cnimedic/cnimedic/remediator/netstate"
	"github.com/cnimedic/cnimedic/remediator/node"
	"github.com/cnimedic/cnimedic/remediator/plugins"
	"github.com/cnimedic/cnimedic/remediator/runtimecfg"
)

// UnitState is what systemd says about one unit.
type UnitState struct {
	Unit        string `json:"unit"`
	ActiveState string `json:"activeState"`
	SubState    string `json:"subState,omitempty"`
	Error       string `json:"error,omitempty"`
}

// UnitStater reads unit states (from systemd over D-Bus in the remediator; the hook keeps this package free of
// D-Bus).
type UnitStater func(ctx context.Context, units []string) []UnitState

// Options say where to look: the node's settings (remediator/node; empty paths take the value the layout and
// containerd's config give, or the usual default), and how to read the units.
type Options struct {
	node.Settings
	// UnitStates reads the units' states; nil leaves the units out of the report, saying so.
	UnitStates UnitStater
	// SkipRuntime does not dial the runtime socket (a node without one, or a test of files alone).
	SkipRuntime bool
}

// Report is the whole diagnosis.
type Report struct {
	ConfDir string   `json:"confDir"`
	BinDirs []string `json:"binDirs"`

	Containerd Containerd `json:"containerd"`
	// ConfLists are the files of the conf dir in the order the runtime considers them.
	ConfLists []ConfList `json:"confLists"`
	// ConfElsewhere is the standard conf dir, when the one the runtime reads holds no network configuration and it
	// does: pointing the runtime there (RepairRuntimeCNIConfig) repairs the node.
	ConfElsewhere string `json:"confElsewhere,omitempty"`
	// Selection says which of them the runtime loads.
	Selection conflist.Selection `json:"selection"`
	// Loopback is the loopback plugin, which containerd runs for every pod with CNI version 1.0.0.
	Loopback plugins.Info `json:"loopback"`
	// CNI11 says whether the node speaks CNI 1.1 (GC and STATUS verbs, the cniVersions list).
	CNI11 CNI11 `json:"cni11"`

	Runtime      *cri.Status   `json:"runtime,omitempty"`
	RuntimeError string        `json:"runtimeError,omitempty"`
	Sandboxes    []cri.Sandbox `json:"sandboxes,omitempty"`

	IPAM      []IPAMNetwork    `json:"ipam,omitempty"`
	IPAMError string           `json:"ipamError,omitempty"`
	Netns     []netstate.Netns `json:"netns,omitempty"`
	NetnsErr  string           `json:"netnsError,omitempty"`
	Links     []netstate.Link  `json:"links,omitempty"`
	LinksErr  string           `json:"linksError,omitempty"`
	Units     []UnitState      `json:"units,omitempty"`
	UnitsNote string           `json:"unitsNote,omitempty"`

	// Layout is the node's layout as node.Detect found it (nil when it was not detected).
	Layout *v1alpha1.NodeLayout `json:"layout,omitempty"`

	// Findings say what is wrong, most severe first.
	Findings []Finding `json:"findings"`
}

// Containerd is the runtime's version and its CRI CNI configuration.
type Containerd struct {
	Version      string            `json:"version,omitempty"`
	Revision     string            `json:"revision,omitempty"`
	VersionError string            `json:"versionError,omitempty"`
	TeardownBug  bool              `json:"teardownBug"`
	Config       runtimecfg.Config `json:"config"`
	// TemplateExists tells whether conf_template names an existing file (only when one is set).
	TemplateExists *bool `json:"templateExists,omitempty"`
}

// ConfList is one configuration file with its plugins probed.
type ConfList struct {
	conflist.File
	Loaded  bool           `json:"loaded"`
	Chain   []plugins.Info `json:"chain,omitempty"`
	Highest string         `json:"highestCommonVersion,omitempty"`
}

// CNI11 tells what of CNI 1.1 the node can use.
type CNI11 struct {
	// Runtime: the runtime's libcni implements spec 1.1 (containerd 2.0 or later), or nil when unknown.
	Runtime *bool `json:"runtime"`
	// Plugins: every plugin of the loaded chain supports 1.1.0.
	Plugins bool `json:"plugins"`
	// GC and Status: both sides speak 1.1, so the GC and STATUS verbs can be used instead of file-level repairs.
	GC     bool `json:"gc"`
	Status bool `json:"status"`
	// CNIVersionsList: a loaded conflist uses the cniVersions list.
	CNIVersionsList bool `json:"cniVersionsList"`
	// Note qualifies the verdict.
	Note string `json:"note,omitempty"`
}

// hostLocalGCNote: measured on the reference plugins v1.9.1, whose host-local (like bridge and portmap) registers
// no GC or STATUS function, so the plugin answers both with success without acting; libcni's GC only calls DEL for
// attachments its result cache still records. A leaked lease without a cache entry survives GC, so IPAM reclaim
// stays the file-level, CRI-checked removal of leases even where the node speaks CNI 1.1.
const hostLocalGCNote = "the reference host-local plugin implements no GC (plugins v1.9.1): GC frees only attachments the runtime's CNI cache still records, so leaked leases are reclaimed file by file"

// IPAMNetwork is one host-local network's use.
type IPAMNetwork struct {
	ipam.Network
	RangeSets []ipam.RangeSet `json:"rangeSets,omitempty"`
	// Leaked are the leases whose sandbox the runtime does not know (only when the runtime was asked).
	Leaked []ipam.Lease `json:"leaked,omitempty"`
	// LeakedKnown is false when the runtime could not be asked, so leaks cannot be told.
	LeakedKnown bool `json:"leakedKnown"`
}

// Run diagnoses the node.
func Run(ctx context.Context, o Options) Report {
	var r Report
	cfgPath := o.ContainerdConfig
	if cfgPath == "" {
		cfgPath = runtimecfg.DefaultPath
	}
	if o.Runtime != nil && o.Runtime.Path == cfgPath {
		r.Containerd.Config = *o.Runtime // read once for the run (node.Complete)
	} else {
		r.Containerd.Config = runtimecfg.Read(o.Root, cfgPath)
	}
	r.Layout = o.Layout
	settings := r.Containerd.Config.Settings
	r.ConfDir = firstNonEmpty(o.ConfDir, settings.ConfDir)
	r.BinDirs = o.BinDirs
	if len(r.BinDirs) == 0 {
		r.BinDirs = settings.BinDirs
	}
	if t := settings.ConfTemplate; t != "" {
		ok := fileExists(o.Root, t)
		r.Containerd.TemplateExists = &ok
	}

	files, err := conflist.List(o.Root, r.ConfDir)
	if err != nil {
		r.Findings = append(r.Findings, Finding{Severity: Error, Signature: sigNotInitialized,
			Summary: fmt.Sprintf("The CNI conf dir %s cannot be read: %v.", r.ConfDir, err)})
	}
	// The layout's standard conf dir: containerd's default, or k3s's own while k3s runs flannel.
	std, _ := o.Settings.StandardCNIDirs()
	if len(files) == 0 && r.ConfDir != std {
		if others, err := conflist.List(o.Root, std); err == nil && len(others) > 0 {
			r.ConfElsewhere = std
		}
	}
	r.Selection = conflist.Select(files, settings.MaxConfNum)
	loaded := map[int]bool{}
	for _, i := range r.Selection.Loaded {
		loaded[i] = true
	}
	for i, f := range files {
		cl := ConfList{File: f, Loaded: loaded[i]}
		if f.Valid() {
			cl.Chain = plugins.ProbeAll(ctx, o.Root, r.BinDirs, f.Types())
			cl.Highest, _ = plugins.HighestCommon(cl.Chain, "")
		}
		r.ConfLists = append(r.ConfLists, cl)
	}
	r.Loopback = plugins.Probe(ctx, o.Root, r.BinDirs, "loopback")

	var live map[string]bool
	var liveNetns map[string]string
	if !o.SkipRuntime {
		live, liveNetns = r.askRuntime(ctx, o)
	} else {
		r.RuntimeError = "the runtime was not asked"
	}
	r.readIPAM(o, files, live)
	r.readNetns(o, liveNetns)
	r.readLinks(o, files)
	if o.UnitStates != nil {
		r.Units = o.UnitStates(ctx, o.Units)
	} else {
		r.UnitsNote = "unit states were not read (no systemd connection)"
	}
	r.CNI11 = cni11(r)
	r.Findings = append(r.Findings, findings(r)...)
	r.Findings = append(r.Findings, layoutFindings(o.Settings)...)
	sortFindings(r.Findings)
	return r
}

func (r *Report) askRuntime(ctx context.Context, o Options) (map[string]bool, map[string]string) {
	endpoint := firstNonEmpty(o.CRIEndpoint, cri.DefaultEndpoint)
	c, err := cri.Dial(o.Root.Path(endpoint))
	if err != nil {
		r.RuntimeError = err.Error()
		return nil, nil
	}
	defer c.Close()
	if v, rev, err := c.ContainerdVersion(ctx); err == nil {
		r.Containerd.Version, r.Containerd.Revision = v, rev
		r.Containerd.TeardownBug = TeardownBug(v)
	} else {
		r.Containerd.VersionError = err.Error()
	}
	st, err := c.Status(ctx)
	if err != nil {
		r.RuntimeError = err.Error()
		return nil, nil
	}
	r.Runtime = &st
	sbs, err := c.Sandboxes(ctx)
	if err != nil {
		r.RuntimeError = err.Error()
		return nil, nil
	}
	r.Sandboxes = sbs
	live := map[string]bool{}
	netns := map[string]string{}
	for _, sb := range sbs {
		live[sb.ID] = true
		if sb.NetNS != "" {
			// /var/run is a symlink to /run on current systems; the runtime may report either spelling, and names
			// the path as it sees it, which under a --host-root is not this process's view.
			for _, p := range []string{sb.NetNS, o.Root.HostPath(sb.NetNS)} {
				netns[p] = sb.ID
				netns[alias(p)] = sb.ID
			}
		}
	}
	return live, netns
}

func alias(p string) string {
	if rest, ok := cutPrefix(p, "/var/run/"); ok {
		return "/run/" + rest
	}
	if rest, ok := cutPrefix(p, "/run/"); ok {
		return "/var/run/" + rest
	}
	return p
}

func cutPrefix(s, p string) (string, bool) {
	if len(s) >= len(p) && s[:len(p)] == p {
		return s[len(p):], true
	}
	return s, false
}

func (r *Report) readIPAM(o Options, files []conflist.File, live map[string]bool) {
	dir := firstNonEmpty(o.IPAMDataDir, ipam.DefaultDataDir)
	nets, err := ipam.Read(o.Root, dir)
	if err != nil {
		r.IPAMError = err.Error()
		return
	}
	for _, n := range nets {
		in := IPAMNetwork{Network: n, LeakedKnown: live != nil}
		if conf := hostLocalConfOf(files, n.Name); conf != nil {
			if sets, err := ipam.RangeSets(conf); err == nil {
				in.RangeSets = ipam.Count(sets, n)
			}
		}
		in.Leaked = ipam.Leaked(n, live)
		r.IPAM = append(r.IPAM, in)
	}
}

// hostLocalConfOf finds the raw host-local "ipam" object of the network named name (host-local names its data
// directory after the network).
func hostLocalConfOf(files []conflist.File, name string) []byte {
	for _, f := range files {
		if !f.Valid() || f.Network != name {
			continue
		}
		for _, p := range IPAMObjects(f) {
			return p
		}
	}
	return nil
}

// IPAMObjects returns the raw "ipam" objects of type host-local in a file's chain.
func IPAMObjects(f conflist.File) [][]byte {
	list, err := conflist.Parse(f.Path, f.Raw())
	if err != nil {
		return nil
	}
	var out [][]byte
	for _, p := range list.Plugins {
		var m struct {
			IPAM json.RawMessage `json:"ipam"`
		}
		if json.Unmarshal(p.Bytes, &m) != nil || len(m.IPAM) == 0 {
			continue
		}
		if p.Network.IPAM.Type == "host-local" {
			out = append(out, m.IPAM)
		}
	}
	return out
}

// HostLocalWithoutRanges lists the plugin types of a file's chain whose host-local IPAM has no range at all:
// neither the old-style "subnet" nor a non-empty "ranges", with no "ipRanges" capability through which the runtime
// would hand one over. host-local (its LoadIPAMConfig) then refuses every ADD with "no IP ranges specified".
// flannel's plugin is left out: it writes its delegate's range from flanneld's subnet.env.
func HostLocalWithoutRanges(f conflist.File) []string {
	list, err := conflist.Parse(f.Path, f.Raw())
	if err != nil {
		return nil
	}
	var out []string
	for _, p := range list.Plugins {
		if p.Network.IPAM.Type != "host-local" || p.Network.Type == "flannel" {
			continue
		}
		var c struct {
			Capabilities map[string]bool `json:"capabilities"`
			IPAM         struct {
				Subnet string            `json:"subnet"`
				Ranges []json.RawMessage `json:"ranges"`
			} `json:"ipam"`
		}
		if json.Unmarshal(p.Bytes, &c) != nil {
			continue
		}
		if c.IPAM.Subnet == "" && len(c.IPAM.Ranges) == 0 && !c.Capabilities["ipRanges"] {
			out = append(out, p.Network.Type)
		}
	}
	return out
}

func (r *Report) readNetns(o Options, live map[string]string) {
	dir := firstNonEmpty(o.NetnsDir, netstate.DefaultNetnsDir)
	ns, err := netstate.ListNetns(o.Root, dir, live, o.ProcDir)
	if err != nil {
		r.NetnsErr = err.Error()
		return
	}
	if live != nil {
		// The runtime reports /var/run/netns/x while the dir may be spelled /run/netns: match both.
		for i := range ns {
			if id := live[alias(ns[i].Path)]; id != "" && ns[i].UsedBySandbox == "" {
				ns[i].UsedBySandbox = id
				ns[i].Stale = false
			}
		}
	}
	r.Netns = ns
}

func (r *Report) readLinks(o Options, files []conflist.File) {
	names := o.Links
	if len(names) == 0 {
		names = netstate.DefaultLinks
	}
	h, err := netstate.Open(o.NetNS)
	if err != nil {
		r.LinksErr = err.Error()
		return
	}
	defer h.Close()
	links, err := netstate.Links(h, names)
	if err != nil {
		r.LinksErr = err.Error()
		return
	}
	flannel, _ := netstate.FlannelSubnet(o.Root, firstNonEmpty(o.FlannelSubnetEnv, "/run/flannel/subnet.env"))
	for i := range links {
		if links[i].Name == "cni0" && flannel != "" {
			netstate.CheckExpected(&links[i], flannel)
			continue
		}
		if gw := bridgeGateway(files, links[i].Name); gw != "" {
			netstate.CheckExpected(&links[i], gw)
		}
	}
	r.Links = links
}

// bridgeGateway is the address the bridge plugin gives a bridge it manages as gateway: the first host-local
// range's gateway (by default the first address) with the subnet's prefix.
func bridgeGateway(files []conflist.File, bridge string) string {
	for _, f := range files {
		if !f.Valid() {
			continue
		}
		list, err := conflist.Parse(f.Path, f.Raw())
		if err != nil {
			continue
		}
		for _, p := range list.Plugins {
			var m struct {
				Type      string `json:"type"`
				Bridge    string `json:"bridge"`
				IsGateway bool   `json:"isGateway"`
				IPAM      struct {
					Type   string `json:"type"`
					Subnet string `json:"subnet"`
					Ranges [][]struct {
						Subnet  string `json:"subnet"`
						Gateway string `json:"gateway"`
					} `json:"ranges"`
				} `json:"ipam"`
			}
			if json.Unmarshal(p.Bytes, &m) != nil || m.Type != "bridge" || !m.IsGateway {
				continue
			}
			name := m.Bridge
			if name == "" {
				name = "cni0"
			}
			if name != bridge {
				continue
			}
			subnet, gw := m.IPAM.Subnet, ""
			if subnet == "" && len(m.IPAM.Ranges) > 0 && len(m.IPAM.Ranges[0]) > 0 {
				subnet, gw = m.IPAM.Ranges[0][0].Subnet, m.IPAM.Ranges[0][0].Gateway
			}
			return gatewayCIDR(subnet, gw)
		}
	}
	return ""
}

// TeardownBug reports whether a containerd version is one of 1.6.0-1.6.3, whose CNI teardown fails on a conflist
// without cniVersion and whose setup needs up-to-date plugins (fixed in 1.6.4).
func TeardownBug(v string) bool {
	m := semverRE.FindStringSubmatch(v)
	if m == nil {
		return false
	}
	major, _ := strconv.Atoi(m[1])
	minor, _ := strconv.Atoi(m[2])
	patch, _ := strconv.Atoi(m[3])
	return major == 1 && minor == 6 && patch <= 3
}

var semverRE = regexp.MustCompile(`^v?(\d+)\.(\d+)\.(\d+)`)

// RuntimeSpecCeiling is the highest CNI spec version a containerd release's libcni implements: containerd 1.x
// carries libcni 1.0/1.1 (spec 1.0.0), containerd 2.x libcni 1.2 or later (spec 1.1.0). Empty when unknown.
func RuntimeSpecCeiling(containerdVersion string) string {
	m := semverRE.FindStringSubmatch(containerdVersion)
	if m == nil {
		return ""
	}
	major, _ := strconv.Atoi(m[1])
	minor, _ := strconv.Atoi(m[2])
	switch {
	case major >= 2:
		return "1.1.0"
	case major == 1 && minor >= 6:
		return "1.0.0"
	default:
		return "0.4.0"
	}
}

func cni11(r Report) CNI11 {
	var c CNI11
	if ceil := RuntimeSpecCeiling(r.Containerd.Version); ceil != "" {
		ok := plugins.AtLeast(ceil, "1.1.0")
		c.Runtime = &ok
	}
	anyLoaded := false
	c.Plugins = true
	for _, cl := range r.ConfLists {
		if !cl.Loaded {
			continue
		}
		anyLoaded = true
		if len(cl.CNIVersions) > 0 {
			c.CNIVersionsList = true
		}
		for _, p := range cl.Chain {
			if !p.Supports("1.1.0") {
				c.Plugins = false
			}
		}
	}
	if !anyLoaded {
		c.Plugins = false
	}
	c.GC = c.Plugins && c.Runtime != nil && *c.Runtime
	c.Status = c.GC
	for _, cl := range r.ConfLists {
		for _, p := range cl.Plugins {
			if cl.Loaded && p.IPAM == "host-local" && c.Plugins {
				c.Note = hostLocalGCNote
			}
		}
	}
	return c
}

func fileExists(root host.Root, p string) bool {
	l, err := root.Resolve(p)
	if err != nil {
		return false
	}
	_, err = os.Stat(l)
	return err == nil
}

func firstNonEmpty(v ...string) string {
	for _, s := range v {
		if s != "" {
			return s
		}
	}
	return ""
}
