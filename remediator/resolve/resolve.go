// Package resolve decides, read-only, what each repair step of a plan changes on this node: the step.Resolver of
// every StepType that edits files or runs host actions. The executor (remediator/executor) carries the
// resolutions out with its journal, backups, atomic writes and rollback; nothing here writes.
package resolve

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
	"github.com/cnimedic/cnimedic/remediator/conflist"
	"github.com/cnimedic/cnimedic/remediator/cri"
	"github.com/cnimedic/cnimedic/remediator/ipam"
	"github.com/cnimedic/cnimedic/remediator/netstate"
	"github.com/cnimedic/cnimedic/remediator/plugins"
	"github.com/cnimedic/cnimedic/remediator/runtimecfg"
	"github.com/cnimedic/cnimedic/remediator/step"
)

// Resolvers maps each repair step type to its resolver. StopUnit, StartUnit and VerifyNode are executed directly
// and have none.
var Resolvers = map[v1alpha1.StepType]step.Resolver{
	v1alpha1.StepSetCNIVersion:           SetCNIVersion,
	v1alpha1.StepInstallReferencePlugins: InstallReferencePlugins,
	v1alpha1.StepRepairRuntimeCNIConfig:  RepairRuntimeCNIConfig,
	v1alpha1.StepFixConfFileModes:        FixConfFileModes,
	v1alpha1.StepRestoreConfList:         RestoreConfList,
	v1alpha1.StepReclaimIPAM:             ReclaimIPAM,
	v1alpha1.StepRemoveStaleNetns:        RemoveStaleNetns,
	v1alpha1.StepDeleteLink:              DeleteLink,
	v1alpha1.StepRemoveStaleCNIResults:   RemoveStaleCNIResults,
}

// For returns the resolver of a step type.
func For(t v1alpha1.StepType) (step.Resolver, bool) {
	r, ok := Resolvers[t]
	return r, ok
}

// Modes the repairs give: conflists readable by all, plugins executable by all.
const (
	ConfMode   fs.FileMode = 0o644
	PluginMode fs.FileMode = 0o755
)

func confDir(env step.Env) string {
	if env.ConfDir != "" {
		return env.ConfDir
	}
	return runtimecfg.DefaultConfDir
}

func binDirs(env step.Env) []string {
	if len(env.BinDirs) > 0 {
		return env.BinDirs
	}
	return []string{runtimecfg.DefaultBinDir}
}

// target returns the configuration file a step works on: the one the runtime loads, which is the first file in
// name order of the conf dir (containerd's go-cni; it is the pods' default network). A plan step may name a file
// (the name comes from a message's parameters, internal/planner): the name is only a hint that narrows, so it is
// accepted when it is that same file and refused otherwise, naming both. A file the runtime does not load is never
// edited because a message named it.
func target(env step.Env, name string) (conflist.File, error) {
	dir := confDir(env)
	if name != "" && name != filepath.Base(name) {
		return conflist.File{}, fmt.Errorf("confList %q must be a file name in %s", name, dir)
	}
	files, err := conflist.List(env.Root, dir)
	if err != nil {
		return conflist.File{}, err
	}
	if len(files) == 0 {
		if name != "" {
			return conflist.File{}, fmt.Errorf("confList %s named by the plan: the runtime loads no network configuration from %s (it holds none); refusing to touch it", name, dir)
		}
		return conflist.File{}, fmt.Errorf("no network configuration in %s", dir)
	}
	loaded := files[0]
	if name != "" && name != filepath.Base(loaded.Path) {
		return conflist.File{}, fmt.Errorf("confList %s named by the plan is not the file the runtime loads (%s, the first in name order of %s); refusing to touch it",
			filepath.Join(dir, name), loaded.Path, dir)
	}
	return loaded, nil
}

// SetCNIVersion sets or adds the cniVersion of a configuration file: the step's version, or else the highest
// version every plugin of the chain supports (asked from the plugins, capped at what the runtime implements).
// Only the cniVersion member changes; a file that does not parse is refused (RestoreConfList is its repair).
func SetCNIVersion(ctx context.Context, env step.Env, s v1alpha1.PlanStep) (step.Resolution, error) {
	f, err := target(env, s.ConfList)
	if err != nil {
		return step.Resolution{}, err
	}
	if !f.Valid() {
		return step.Resolution{}, fmt.Errorf("%s does not load (%s); it is not edited (RestoreConfList restores a good backup)", f.Path, f.ParseError)
	}
	chain := plugins.ProbeAll(ctx, env.Root, binDirs(env), f.Types())
	want := s.CNIVersion
	how := "as the plan asks"
	if want == "" {
		want, err = plugins.HighestCommon(chain, env.CNISpecCeiling)
		if err != nil {
			return step.Resolution{}, fmt.Errorf("choosing a cniVersion for %s: %w", f.Path, err)
		}
		how = "the highest version every plugin of the chain supports"
		if env.CNISpecCeiling != "" {
			how += " and the runtime implements (up to " + env.CNISpecCeiling + ")"
		}
	}
	for _, p := range chain {
		if p.Error != "" {
			return step.Resolution{}, fmt.Errorf("plugin %q of %s: %s", p.Type, f.Path, p.Error)
		}
		if !p.Supports(want) {
			return step.Resolution{}, fmt.Errorf("plugin %q (%s) of %s does not support CNI version %s (it supports %s); writing it would break every pod",
				p.Type, p.Path, f.Path, want, strings.Join(p.Versions, ", "))
		}
	}
	if f.HasCNIVersion && f.CNIVersion == want && f.EffectiveVersion == want {
		return step.Resolution{Message: fmt.Sprintf("%s already has cniVersion %s, which every plugin of its chain supports", f.Path, want)}, nil
	}
	edited, err := conflist.SetCNIVersion(f.Raw(), want)
	if err != nil {
		return step.Resolution{}, fmt.Errorf("editing %s: %w", f.Path, err)
	}
	after, err := conflist.Parse(f.Path, edited)
	if err != nil {
		return step.Resolution{}, fmt.Errorf("the edited %s would not load: %w", f.Path, err)
	}
	if after.CNIVersion != want {
		// libcni prefers the highest entry of a cniVersions list: setting cniVersion alone would not be enough.
		return step.Resolution{}, fmt.Errorf("%s also lists cniVersions %v, so the runtime would still use %s; edit that list by hand", f.Path, f.CNIVersions, after.CNIVersion)
	}
	from := fmt.Sprintf("cniVersion %q", f.CNIVersion)
	if !f.HasCNIVersion {
		from = "no cniVersion"
	}
	why := fmt.Sprintf("set cniVersion %s (%s); it had %s", want, how, from)
	return step.Resolution{
		Edits:   []step.Edit{{Path: f.Path, Content: edited, Mode: keepMode(f.Mode, ConfMode), Why: why}},
		Message: f.Path + ": " + why,
	}, nil
}

func keepMode(m, def fs.FileMode) fs.FileMode {
	if m == 0 {
		return def
	}
	return m
}

// InstallReferencePlugins installs bundled reference plugins, each only where the node needs it: a plugin of the
// chain of the configuration the runtime loads (flannel's delegate and its IPAM plugin included), or loopback
// (containerd runs it for every pod), that is missing, cannot answer VERSION, or does not support the version it is
// asked for (the conflist's effective cniVersion; for loopback also the 1.0.0 containerd 1.6 and later configures
// it with). The step may name plugins (from a message's parameters, internal/planner): a name is a hint that
// narrows that set, never widens it; a named plugin outside it, or present and new enough, is reported in the
// message and not installed. Without names, every plugin of the set that needs it is installed. Each binary is
// verified against the bundle's sha256 manifest before it is handed to the executor, which backs up the binary it
// replaces. Vendor plugins are never installed or replaced; they are reported.
func InstallReferencePlugins(ctx context.Context, env step.Env, s v1alpha1.PlanStep) (step.Resolution, error) {
	if env.BundleDir == "" {
		return step.Resolution{}, fmt.Errorf("no plugin bundle (BundleDir) is configured")
	}
	bundle, err := plugins.LoadBundle(env.BundleDir)
	if err != nil {
		return step.Resolution{}, err
	}
	u := usedPlugins(env)
	names := s.Plugins
	if len(names) == 0 {
		names = u.types
	}
	var res step.Resolution
	var notes []string
	seen := map[string]bool{}
	dirs := binDirs(env)
	for _, name := range names {
		if seen[name] {
			continue
		}
		seen[name] = true
		if plugins.KindOf(name) == plugins.Vendor {
			notes = append(notes, fmt.Sprintf("%s is a vendor plugin: not replaced (its provider's DaemonSet installs it)", name))
			continue
		}
		want, used := u.versions[name]
		if !used {
			notes = append(notes, fmt.Sprintf("%s is not installed: %s", name, u.notUsed))
			continue
		}
		cur := plugins.Probe(ctx, env.Root, dirs, name)
		need := needWords(cur, want)
		if need == "" {
			notes = append(notes, fmt.Sprintf("%s (%s) is not replaced: it supports %s", name, cur.Path, strings.Join(want, " and ")))
			continue
		}
		if !bundle.Has(name) {
			notes = append(notes, fmt.Sprintf("%s is not in the bundle (%s)", name, need))
			continue
		}
		content, err := bundle.Verified(name)
		if err != nil {
			return step.Resolution{}, err
		}
		// Install over the binary the runtime finds today, so that no older copy earlier in the path shadows
		// the new one; a missing plugin goes into the first bin dir.
		dest := filepath.Join(dirs[0], name)
		if cur.Found {
			dest = cur.Path
			if old, err := os.ReadFile(env.Root.Path(dest)); err == nil && bytes.Equal(old, content) && cur.Mode == PluginMode {
				notes = append(notes, fmt.Sprintf("%s is already the bundled build (%s)", dest, need))
				continue
			}
		}
		why := fmt.Sprintf("install bundled reference plugin %s (sha256 verified): %s", name, need)
		res.Edits = append(res.Edits, step.Edit{Path: dest, Content: content, Mode: PluginMode, Why: why})
	}
	var lines []string
	for _, e := range res.Edits {
		lines = append(lines, e.Why)
	}
	res.Message = strings.Join(append(lines, notes...), "; ")
	if res.Message == "" {
		res.Message = "nothing to install"
	}
	return res, nil
}

// needWords says why a plugin needs installing, or "" when it answers VERSION with every version in want.
func needWords(cur plugins.Info, want []string) string {
	switch {
	case !cur.Found:
		return "it is missing"
	case cur.Error != "":
		return fmt.Sprintf("it replaces %s, which cannot answer VERSION (%s)", cur.Path, cur.Error)
	}
	var lacks []string
	for _, v := range want {
		if !cur.Supports(v) {
			lacks = append(lacks, v)
		}
	}
	if len(lacks) > 0 {
		return fmt.Sprintf("it replaces %s, which supports %s, not %s", cur.Path, versionsWords(cur), strings.Join(lacks, " and "))
	}
	return ""
}

// used is the set of plugins the node runs for a pod: the chain of the configuration the runtime loads, in chain
// order, then loopback; each with the CNI versions it is asked for.
type used struct {
	types    []string
	versions map[string][]string
	// notUsed says, for a plugin outside the set, what the set is.
	notUsed string
}

// loopbackVersion is the version containerd 1.6 and later configure the loopback interface with, whatever the
// conflist says (remediator/diagnose reports a loopback plugin older than that).
const loopbackVersion = "1.0.0"

func usedPlugins(env step.Env) used {
	u := used{versions: map[string][]string{}}
	add := func(t, v string) {
		if t == "" {
			return
		}
		if _, ok := u.versions[t]; !ok {
			u.types = append(u.types, t)
			u.versions[t] = nil
		}
		if v != "" && !slices.Contains(u.versions[t], v) {
			u.versions[t] = append(u.versions[t], v)
		}
	}
	f, err := target(env, "")
	switch {
	case err != nil:
		u.notUsed = fmt.Sprintf("only loopback is used: %v", err)
	case !f.Valid():
		u.notUsed = fmt.Sprintf("only loopback is used: %s, the configuration the runtime loads, does not load (%s)", f.Path, f.ParseError)
	default:
		for _, t := range chainTypes(f) {
			add(t, f.EffectiveVersion)
		}
		u.notUsed = fmt.Sprintf("%s, the configuration the runtime loads, uses %s, and containerd runs loopback", f.Path, strings.Join(u.types, ", "))
	}
	lo := ""
	if env.CNISpecCeiling == "" || plugins.AtLeast(env.CNISpecCeiling, loopbackVersion) {
		lo = loopbackVersion
	}
	add("loopback", lo)
	return u
}

// chainTypes are the plugin types a loaded configuration executes: its chain's plugins and their IPAM plugins, and
// for flannel's plugin the plugin it delegates to (its delegate's "type", bridge when unset) with that one's IPAM
// plugin (flannel's own "ipam" type, host-local when unset).
func chainTypes(f conflist.File) []string {
	out := f.Types()
	list, err := conflist.Parse(f.Path, f.Raw())
	if err != nil {
		return out
	}
	for _, p := range list.Plugins {
		if p.Network.Type != "flannel" {
			continue
		}
		var c struct {
			Delegate struct {
				Type string `json:"type"`
			} `json:"delegate"`
		}
		_ = json.Unmarshal(p.Bytes, &c)
		for _, t := range []string{orDefault(c.Delegate.Type, "bridge"), orDefault(p.Network.IPAM.Type, "host-local")} {
			if !slices.Contains(out, t) {
				out = append(out, t)
			}
		}
	}
	return out
}

func versionsWords(i plugins.Info) string {
	if len(i.Versions) == 0 {
		return "unknown versions (" + i.Error + ")"
	}
	return strings.Join(i.Versions, ", ")
}

// RepairRuntimeCNIConfig writes containerd's CRI CNI settings from the step's Runtime spec, changing only those
// keys, where they last (runtimeEdits: a drop-in that sets them, the template of a generated config, else
// config.toml). A file that does not parse is refused.
func RepairRuntimeCNIConfig(_ context.Context, env step.Env, s v1alpha1.PlanStep) (step.Resolution, error) {
	if s.Runtime == nil {
		return step.Resolution{}, fmt.Errorf("RepairRuntimeCNIConfig needs the runtime settings to write")
	}
	path := s.Runtime.ConfigPath
	if path == "" {
		path = env.ContainerdConfig
	}
	if path == "" {
		path = runtimecfg.DefaultPath
	}
	want := runtimecfg.Want{BinDir: s.Runtime.BinDir, ConfDir: s.Runtime.ConfDir}
	if s.Runtime.ConfTemplate != "" {
		t := s.Runtime.ConfTemplate
		want.ConfTemplate = &t
	}
	if s.Runtime.MaxConfNum != nil {
		n := int(*s.Runtime.MaxConfNum)
		want.MaxConfNum = &n
	}
	edits, notes, err := runtimeEdits(env, path, want)
	if err != nil {
		return step.Resolution{}, err
	}
	if len(edits) == 0 {
		msg := fmt.Sprintf("%s already has the wanted CNI settings (containerd's defaults count for keys it leaves out)", path)
		if len(notes) > 0 {
			msg += "; " + strings.Join(notes, "; ")
		}
		return step.Resolution{Message: msg}, nil
	}
	var whys []string
	for _, e := range edits {
		whys = append(whys, e.Path+": "+strings.TrimPrefix(e.Why, "set containerd's CRI CNI settings: "))
	}
	res := step.Resolution{Edits: edits, Message: "set containerd's CRI CNI settings: " + strings.Join(append(whys, notes...), "; ")}
	if want.ConfDir != "" {
		if files, _ := conflist.List(env.Root, want.ConfDir); len(files) == 0 {
			res.Message += fmt.Sprintf("; note: %s holds no network configuration yet", want.ConfDir)
		}
	}
	return res, nil
}

// FixConfFileModes makes the configuration file the runtime loads (the first in name order of the conf dir)
// readable by all (0644), and every plugin its chain uses, and loopback, executable (0755). Files that already
// have the needed bits keep their mode. Other configuration files are not the runtime's and are not changed: an
// unreadable one is named in the message.
func FixConfFileModes(ctx context.Context, env step.Env, _ v1alpha1.PlanStep) (step.Resolution, error) {
	files, err := conflist.List(env.Root, confDir(env))
	if err != nil {
		return step.Resolution{}, err
	}
	var res step.Resolution
	var others []string
	types := map[string]bool{"loopback": true}
	for i, f := range files {
		unreadable := f.Mode&0o444 != 0o444
		if i > 0 {
			if unreadable {
				others = append(others, fmt.Sprintf("%s (mode %#o) is not the file the runtime loads and is left as it is", f.Path, f.Mode))
			}
			continue
		}
		if f.Valid() {
			for _, t := range chainTypes(f) {
				types[t] = true
			}
		}
		// A file that does not load is RestoreConfList's business; it is not rewritten here, not even byte for byte.
		if !unreadable || !f.Valid() {
			continue
		}
		res.Edits = append(res.Edits, step.Edit{Path: f.Path, Content: f.Raw(), Mode: ConfMode,
			Why: fmt.Sprintf("make %s readable: mode %#o -> %#o", f.Path, f.Mode, ConfMode)})
	}
	names := make([]string, 0, len(types))
	for t := range types {
		names = append(names, t)
	}
	sort.Strings(names)
	for _, t := range names {
		p := plugins.Probe(ctx, env.Root, binDirs(env), t)
		if !p.Found || p.Mode&0o111 == 0o111 {
			continue
		}
		content, err := os.ReadFile(env.Root.Path(p.Path))
		if err != nil {
			return step.Resolution{}, err
		}
		res.Edits = append(res.Edits, step.Edit{Path: p.Path, Content: content, Mode: PluginMode,
			Why: fmt.Sprintf("make plugin %s executable: mode %#o -> %#o", p.Path, p.Mode, PluginMode)})
	}
	res.Message = summarize(res.Edits, "the configuration the runtime loads is readable and every plugin of its chain executable")
	if len(others) > 0 {
		res.Message += "; " + strings.Join(others, "; ")
	}
	return res, nil
}

func summarize(edits []step.Edit, none string) string {
	if len(edits) == 0 {
		return none
	}
	var w []string
	for _, e := range edits {
		w = append(w, e.Why)
	}
	return strings.Join(w, "; ")
}

// RestoreConfList puts back the newest earlier copy of a configuration file that loads, when the file itself
// does not load. A file that loads is left alone: the step is then already done.
func RestoreConfList(_ context.Context, env step.Env, s v1alpha1.PlanStep) (step.Resolution, error) {
	f, err := target(env, s.ConfList)
	if err != nil {
		return step.Resolution{}, err
	}
	if f.Valid() {
		return step.Resolution{Message: f.Path + " loads; nothing to restore"}, nil
	}
	if env.Backups == nil {
		return step.Resolution{}, fmt.Errorf("%s does not load (%s) and no backups are known", f.Path, f.ParseError)
	}
	copies, err := env.Backups(f.Path)
	if err != nil {
		return step.Resolution{}, fmt.Errorf("listing backups of %s: %w", f.Path, err)
	}
	for _, c := range copies {
		if _, err := conflist.Parse(f.Path, c.Content); err != nil {
			continue
		}
		why := fmt.Sprintf("restore %s from %s: the file does not load (%s)", f.Path, c.Source, f.ParseError)
		return step.Resolution{
			Edits:   []step.Edit{{Path: f.Path, Content: c.Content, Mode: keepMode(c.Mode, ConfMode), Why: why}},
			Message: why,
		}, nil
	}
	return step.Resolution{}, fmt.Errorf("%s does not load (%s) and none of its %d backup(s) loads either", f.Path, f.ParseError, len(copies))
}

// liveSandboxes asks the runtime which sandboxes exist, in any state. Without an answer nothing is reclaimed.
func liveSandboxes(ctx context.Context, env step.Env) ([]cri.Sandbox, error) {
	endpoint := env.CRIEndpoint
	if endpoint == "" {
		endpoint = cri.DefaultEndpoint
	}
	c, err := cri.Dial(env.Root.Path(endpoint))
	if err != nil {
		return nil, err
	}
	defer c.Close()
	sbs, err := c.Sandboxes(ctx)
	if err != nil {
		return nil, fmt.Errorf("the runtime must be running to tell live sandboxes from dead ones: %w", err)
	}
	return sbs, nil
}

// liveSandboxIDs is liveSandboxes and the set of their ids.
func liveSandboxIDs(ctx context.Context, env step.Env) ([]cri.Sandbox, map[string]bool, error) {
	sbs, err := liveSandboxes(ctx, env)
	if err != nil {
		return nil, nil, err
	}
	live := make(map[string]bool, len(sbs))
	for _, sb := range sbs {
		live[sb.ID] = true
	}
	return sbs, live, nil
}

// ReclaimIPAM frees host-local addresses whose sandbox the runtime no longer knows: allocated lease files minus
// live sandboxes, as Antrea's host-local GC does. Sandboxes in any state count as live, so an address of a
// sandbox that still exists is never freed. The executor backs every removed lease file up, which is the copy
// of what was removed. The CNI 1.1 GC verb is not used even where the node speaks 1.1: the reference host-local
// (plugins v1.9.1) registers no GC function, and libcni's GC only calls DEL for attachments its result cache
// still records, so a leaked lease without a cache entry would survive it.
func ReclaimIPAM(ctx context.Context, env step.Env, s v1alpha1.PlanStep) (step.Resolution, error) {
	sbs, live, err := liveSandboxIDs(ctx, env)
	if err != nil {
		return step.Resolution{}, err
	}
	dataDir := env.IPAMDataDir
	if dataDir == "" {
		dataDir = ipam.DefaultDataDir
	}
	var nets []ipam.Network
	if s.Network != "" {
		if s.Network != filepath.Base(s.Network) {
			return step.Resolution{}, fmt.Errorf("network %q must be a directory name in %s", s.Network, dataDir)
		}
		n := ipam.ReadNetwork(env.Root, filepath.Join(dataDir, s.Network))
		if n.Error != "" && len(n.Leases) == 0 {
			return step.Resolution{}, fmt.Errorf("host-local network %s: %s", s.Network, n.Error)
		}
		nets = []ipam.Network{n}
	} else if nets, err = ipam.Read(env.Root, dataDir); err != nil {
		return step.Resolution{}, err
	}
	var res step.Resolution
	var words []string
	now := time.Now()
	for _, n := range nets {
		var leaked []ipam.Lease
		for _, l := range ipam.Leaked(n, live) {
			if st, err := os.Stat(env.Root.Path(l.Path)); err == nil && now.Sub(st.ModTime()) < freshLease {
				continue // a sandbox being set up right now may not be listed yet (kubelet may be running)
			}
			leaked = append(leaked, l)
		}
		for _, l := range leaked {
			res.Edits = append(res.Edits, step.Edit{Path: l.Path, Remove: true,
				Why: fmt.Sprintf("free %s of network %s: sandbox %s no longer exists (the lease file is kept as a backup)", l.IP, n.Name, l.ContainerID)})
		}
		words = append(words, fmt.Sprintf("network %s: %d lease(s), %d of sandboxes that no longer exist", n.Name, len(n.Leases), len(leaked)))
	}
	if len(words) == 0 {
		words = []string{"no host-local network in " + dataDir}
	}
	res.Message = fmt.Sprintf("%d live sandbox(es); %s", len(sbs), strings.Join(words, "; "))
	return res, nil
}

// freshLease is how young a lease file may be and still never be freed: where the repair runs with kubelet and the
// runtime up (one unit runs both: k3s, RKE2), a sandbox being set up this moment holds a lease before the runtime
// lists it. A node out of addresses writes no new leases, so its leaked ones are all older.
const freshLease = 10 * time.Second

// RemoveStaleNetns removes named network namespaces that no live sandbox uses and no process runs in.
func RemoveStaleNetns(ctx context.Context, env step.Env, _ v1alpha1.PlanStep) (step.Resolution, error) {
	sbs, err := liveSandboxes(ctx, env)
	if err != nil {
		return step.Resolution{}, err
	}
	live := map[string]string{}
	for _, sb := range sbs {
		if sb.NetNS != "" {
			// The runtime names the path as it sees it; under a --host-root that is not this process's view.
			for _, p := range []string{sb.NetNS, env.Root.HostPath(sb.NetNS)} {
				live[p] = sb.ID
				live[swapRun(p)] = sb.ID
			}
		}
	}
	dir := env.NetnsDir
	if dir == "" {
		dir = netstate.DefaultNetnsDir
	}
	list, err := netstate.ListNetns(env.Root, dir, live, env.ProcDir)
	if err != nil {
		return step.Resolution{}, err
	}
	var res step.Resolution
	for _, n := range list {
		if !n.Stale || live[swapRun(n.Path)] != "" {
			continue
		}
		res.Actions = append(res.Actions, netstate.RemoveNetns{HostPath: n.Path, Local: env.Root.Path(n.Path)})
	}
	var w []string
	for _, a := range res.Actions {
		w = append(w, a.Describe())
	}
	res.Message = fmt.Sprintf("%d namespace(s) in %s, %d live sandbox(es)", len(list), dir, len(sbs))
	if len(w) > 0 {
		res.Message += "; " + strings.Join(w, "; ")
	}
	return res, nil
}

// swapRun spells a /var/run path as /run and the other way round (/var/run is a link to /run).
func swapRun(p string) string {
	if rest, ok := strings.CutPrefix(p, "/var/run/"); ok {
		return "/run/" + rest
	}
	if rest, ok := strings.CutPrefix(p, "/run/"); ok {
		return "/var/run/" + rest
	}
	return p
}

// deletableLinkTypes are the kinds of link CNI creates on the host and recreates on the next pod: a bridge such
// as cni0 and an overlay device such as flannel.1 (which flanneld recreates). Anything else (a NIC, a bond) is
// never deleted.
var deletableLinkTypes = map[string]bool{"bridge": true, "vxlan": true}

// DeleteLink deletes a CNI-made link (such as cni0 holding a stale address) so that its plugin recreates it. Only
// a link the node's own CNI configuration makes is deleted (ownedLinks): a name that comes only from a message
// (a storage bridge, docker0, a management VXLAN) is refused, and so is any link that is not a bridge or VXLAN
// device or that carries the default route.
func DeleteLink(_ context.Context, env step.Env, s v1alpha1.PlanStep) (step.Resolution, error) {
	if s.Link == "" {
		return step.Resolution{}, fmt.Errorf("DeleteLink needs the link's name")
	}
	owned, err := ownedLinks(env)
	if err != nil {
		return step.Resolution{}, err
	}
	owner, ok := owned[s.Link]
	if !ok {
		return step.Resolution{}, fmt.Errorf("link %s is not made by this node's CNI configuration (%s); refusing to delete it", s.Link, ownedWords(owned))
	}
	h, err := netstate.Open(env.NetNS)
	if err != nil {
		return step.Resolution{}, err
	}
	defer h.Close()
	links, err := netstate.Links(h, []string{s.Link})
	if err != nil {
		return step.Resolution{}, err
	}
	l := links[0]
	if !l.Exists {
		return step.Resolution{Message: fmt.Sprintf("link %s does not exist; nothing to delete", s.Link)}, nil
	}
	if !deletableLinkTypes[l.Type] {
		return step.Resolution{}, fmt.Errorf("link %s is a %s, not a bridge or vxlan device that CNI recreates; refusing to delete it", s.Link, l.Type)
	}
	if netstate.CarriesDefaultRoute(h, s.Link) {
		return step.Resolution{}, fmt.Errorf("link %s carries the node's default route; refusing to delete it", s.Link)
	}
	return step.Resolution{
		Actions: []step.HostAction{netstate.DeleteLink{Name: s.Link, NetNS: env.NetNS}},
		Message: fmt.Sprintf("delete %s (%s, addresses %s; %s) so that the plugin recreates it", s.Link, l.Type, strings.Join(l.Addresses, " "), owner),
	}, nil
}

// defaultBridge is the bridge plugin's default bridge name, and flannel's for the bridge it delegates to.
const defaultBridge = "cni0"

// ownedLinks are the links the node's own CNI configuration makes, each with what makes it: the bridge of every
// bridge plugin in the configuration the runtime loads (its "bridge" member, cni0 when unset),
// the bridge flannel's plugin delegates to (its delegate's "bridge", cni0 when unset), and flannel's VXLAN device
// flannel.1 while flanneld's subnet.env exists.
func ownedLinks(env step.Env) (map[string]string, error) {
	files, err := conflist.List(env.Root, confDir(env))
	if err != nil {
		return nil, err
	}
	owned := map[string]string{}
	// Only the configuration the runtime loads makes links on this node: a bridge named in a file beside it is
	// never created, so it is no reason to delete a link of that name.
	if len(files) > 1 {
		files = files[:1]
	}
	for _, f := range files {
		list, err := conflist.Parse(f.Path, f.Raw())
		if err != nil {
			continue
		}
		for _, p := range list.Plugins {
			if name, ok := bridgeOf(p.Network.Type, p.Bytes); ok {
				owned[name] = fmt.Sprintf("the %s plugin of %s makes it", p.Network.Type, f.Path)
			}
		}
	}
	subnetEnv := env.FlannelSubnetEnv
	if subnetEnv == "" {
		subnetEnv = "/run/flannel/subnet.env"
	}
	if _, err := os.Stat(env.Root.Path(subnetEnv)); err == nil {
		owned["flannel.1"] = "flanneld's VXLAN device (" + subnetEnv + " exists)"
	}
	return owned, nil
}

// bridgeOf is the bridge a plugin configuration makes: a bridge plugin's own, or the one flannel delegates to.
func bridgeOf(pluginType string, conf []byte) (string, bool) {
	var c struct {
		Bridge   string `json:"bridge"`
		Delegate struct {
			Type   string `json:"type"`
			Bridge string `json:"bridge"`
		} `json:"delegate"`
	}
	switch pluginType {
	case "bridge":
		_ = json.Unmarshal(conf, &c)
		return orDefault(c.Bridge, defaultBridge), true
	case "flannel":
		_ = json.Unmarshal(conf, &c)
		if c.Delegate.Type != "" && c.Delegate.Type != "bridge" {
			return "", false
		}
		return orDefault(c.Delegate.Bridge, defaultBridge), true
	}
	return "", false
}

func orDefault(v, def string) string {
	if v == "" {
		return def
	}
	return v
}

func ownedWords(owned map[string]string) string {
	if len(owned) == 0 {
		return "it makes none"
	}
	names := make([]string, 0, len(owned))
	for n := range owned {
		names = append(names, n)
	}
	sort.Strings(names)
	return "it makes " + strings.Join(names, ", ")
}
