package step

import (
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
	"github.com/cnimedic/cnimedic/remediator/cnicache"
	"github.com/cnimedic/cnimedic/remediator/host"
	"github.com/cnimedic/cnimedic/remediator/ipam"
	"github.com/cnimedic/cnimedic/remediator/runtimecfg"
)

// The directories under which the remediator may ever change a file, whatever a plan, a policy or a flag says:
// the file half of the remediator's own allowlist on the node (the unit half is units.Allowlist). The dirs a node is
// configured with (its CNI conf and bin dirs, containerd's config) must lie under these; the files a repair
// writes, chmods, backs up, restores or removes must then lie under the node's configured dirs.
var (
	// CNIRoots hold CNI conf dirs and plugin (bin) dirs.
	CNIRoots = []string{
		"/etc/cni",                            // libcni's and containerd's default conf dir, /etc/cni/net.d
		"/opt/cni",                            // the reference plugins' and containerd's default bin dir, /opt/cni/bin
		"/usr/lib/cni",                        // Debian and Ubuntu's containernetworking-plugins (hack/node-rootfs.sh links /opt/cni/bin to it)
		"/usr/libexec/cni",                    // Fedora and RHEL's containernetworking-plugins
		"/var/lib/rancher/k3s/agent/etc/cni",  // k3s's conf dir, agent/etc/cni/net.d
		"/var/lib/rancher/rke2/agent/etc/cni", // RKE2's conf dir
		"/var/lib/rancher/k3s/data",           // k3s's bin dir, data/<hash>/bin (data/current/bin links to it)
		"/var/lib/rancher/rke2/data",          // RKE2's bin dir, data/<version>/bin
		"/home/kubernetes/bin",                // GKE's Container-Optimized OS bin dir
	}
	// PluginHomes are where distributions install the plugins that their /opt/cni/bin/* link to; a plugin
	// found through such a link may be replaced there.
	PluginHomes = []string{"/usr/lib/cni", "/usr/libexec/cni"}
	// RuntimeConfigRoots hold containerd's config.toml: containerd's own default, and the config k3s and RKE2
	// generate for the containerd they embed.
	RuntimeConfigRoots = []string{
		"/etc/containerd",
		"/var/lib/rancher/k3s/agent/etc/containerd",
		"/var/lib/rancher/rke2/agent/etc/containerd",
	}
	// CNIStateRoot holds host-local's IPAM data (ipam.DefaultDataDir) and libcni's result cache
	// (cnicache.DefaultDir).
	CNIStateRoot = "/var/lib/cni"
)

// The remediator's own state dir (journals and backups, hostrun.DefaultStateDir) is written by the journal
// alone; no repair's edit may land there. Named network namespaces are removed by RemoveStaleNetns's host action
// (netstate.RemoveNetns), never by an edit, so the netns dir is not in the edit allowlist either.

// Under reports whether the host path p is dir or lies below it.
func Under(p, dir string) bool {
	p, dir = filepath.Clean(p), filepath.Clean(dir)
	return p == dir || dir == "/" || strings.HasPrefix(p, dir+"/")
}

func underAny(p string, dirs []string) bool {
	return slices.ContainsFunc(dirs, func(d string) bool { return Under(p, d) })
}

// CheckCNIDir refuses a CNI conf or bin dir that does not lie under CNIRoots.
func CheckCNIDir(dir string) error {
	if !filepath.IsAbs(dir) || !underAny(dir, CNIRoots) {
		return fmt.Errorf("%s is not under a CNI directory cnimedic knows (%s)", dir, strings.Join(CNIRoots, ", "))
	}
	return nil
}

// CheckRuntimeConfig refuses a containerd config path that does not lie under RuntimeConfigRoots.
func CheckRuntimeConfig(path string) error {
	if !filepath.IsAbs(path) || !underAny(path, RuntimeConfigRoots) || slices.Contains(RuntimeConfigRoots, filepath.Clean(path)) {
		return fmt.Errorf("%s is not a file under a containerd config directory cnimedic knows (%s)", path, strings.Join(RuntimeConfigRoots, ", "))
	}
	return nil
}

// CheckRuntimeSpec refuses containerd CNI settings that would point the runtime, and the repairs after them,
// outside the known roots: a RepairRuntimeCNIConfig step's config path, bin_dir, conf_dir and conf_template.
func CheckRuntimeSpec(r *v1alpha1.ContainerdCNISpec) error {
	if r == nil {
		return nil
	}
	if r.ConfigPath != "" {
		if err := CheckRuntimeConfig(r.ConfigPath); err != nil {
			return fmt.Errorf("configPath: %w", err)
		}
	}
	for _, d := range []struct{ key, dir string }{{"bin_dir", r.BinDir}, {"conf_dir", r.ConfDir}} {
		if d.dir == "" {
			continue
		}
		if err := CheckCNIDir(d.dir); err != nil {
			return fmt.Errorf("%s: %w", d.key, err)
		}
	}
	// containerd reads a relative conf_template below its conf_dir; an absolute one must be a CNI file too.
	if t := r.ConfTemplate; t != "" && (filepath.IsAbs(t) && !underAny(t, CNIRoots) || !filepath.IsAbs(t) && !localName(t)) {
		return fmt.Errorf("conf_template: %s is not a file under a CNI directory cnimedic knows", t)
	}
	return nil
}

// localName reports whether a relative path stays below its base (no "..", not empty).
func localName(p string) bool { return filepath.IsLocal(p) }

// Paths is the file allowlist of one node: the files under its CNI conf and bin dirs (and the distributions'
// plugin homes their links lead to), its IPAM data dir, libcni's result cache and containerd's config file, each
// as configured and as its symlinks resolve inside the host root.
//
// The allowlist has three areas: the CNI dirs, the CNI state dirs (IPAM, cache) and containerd's config file.
// A link is followed only within its own area, so a plugin that links to containerd's config is refused too.
type Paths struct {
	root  host.Root
	areas []area
}

// area is one part of the allowlist: files under dirs, or the files themselves.
type area struct {
	dirs, files []string
}

func (a area) allows(p string) bool {
	return slices.Contains(a.files, p) || slices.ContainsFunc(a.dirs, func(d string) bool { return p != d && Under(p, d) })
}

// NewPaths builds the allowlist of env's node. A configured dir outside the known roots, or one that is a link
// leading out of them, is refused: nothing may be written on such a node.
func NewPaths(env Env) (Paths, error) {
	a := Paths{root: env.Root, areas: make([]area, 3)}
	cni, state, runtime := &a.areas[0], &a.areas[1], &a.areas[2]
	conf := env.ConfDir
	if conf == "" {
		conf = runtimecfg.DefaultConfDir
	}
	bins := env.BinDirs
	if len(bins) == 0 {
		bins = []string{runtimecfg.DefaultBinDir}
	}
	var errs []error
	if err := a.addDir(cni, "conf dir", conf, CNIRoots); err != nil {
		errs = append(errs, err)
	}
	for _, b := range bins {
		if err := a.addDir(cni, "bin dir", b, CNIRoots); err != nil {
			errs = append(errs, err)
		}
	}
	for _, h := range PluginHomes {
		_ = a.addDir(cni, "plugin home", h, CNIRoots)
	}
	for _, d := range []struct{ what, dir, def string }{
		{"IPAM data dir", env.IPAMDataDir, ipam.DefaultDataDir},
		{"CNI result cache", env.CNICacheDir, cnicache.DefaultDir},
	} {
		dir := d.dir
		if dir == "" {
			dir = d.def
		}
		if err := a.addDir(state, d.what, dir, []string{CNIStateRoot}); err != nil {
			errs = append(errs, err)
		}
	}
	cfg := env.ContainerdConfig
	if cfg == "" {
		cfg = runtimecfg.DefaultPath
	}
	if err := a.addFile(runtime, "containerd config", cfg); err != nil {
		errs = append(errs, err)
	}
	// The files containerd's config is made of besides itself: the drop-ins it merges and, where it is generated
	// at every start (k3s, RKE2), the template it is generated from. Only those under the known roots are allowed;
	// one elsewhere is left out (an edit there is refused), which does not stop the rest of the node's repairs.
	for _, f := range RuntimeConfigFiles(env) {
		_ = a.addFile(runtime, "containerd config file", f)
	}
	return a, errors.Join(errs...)
}

// RuntimeConfigFiles are the drop-ins and the template of the node's containerd config, as the run's settings
// found them (node.Complete): the other files a RepairRuntimeCNIConfig may write.
func RuntimeConfigFiles(env Env) []string {
	var out []string
	if env.Runtime != nil && env.Runtime.Path == env.ContainerdConfig {
		out = append(out, env.Runtime.DropIns...)
	}
	if l := env.Layout; l != nil && l.RuntimeConfig == env.ContainerdConfig && l.RuntimeConfigTemplate != "" {
		out = append(out, l.RuntimeConfigTemplate)
	}
	return out
}

// addDir allows dir (a host path under roots) and what its symlinks resolve to, which must stay under roots.
func (a *Paths) addDir(to *area, what, dir string, roots []string) error {
	if !filepath.IsAbs(dir) || !underAny(dir, roots) {
		return fmt.Errorf("%s %s is not under a directory cnimedic may change (%s)", what, dir, strings.Join(roots, ", "))
	}
	resolved, err := a.resolve(dir)
	if err != nil {
		return fmt.Errorf("%s %s: %w", what, dir, err)
	}
	if !underAny(resolved, roots) {
		return fmt.Errorf("%s %s is a symlink to %s, outside the directories cnimedic may change (%s)", what, dir, resolved, strings.Join(roots, ", "))
	}
	to.dirs = append(to.dirs, filepath.Clean(dir), resolved)
	return nil
}

func (a *Paths) addFile(to *area, what, p string) error {
	if err := CheckRuntimeConfig(p); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	resolved, err := a.resolve(p)
	if err != nil {
		return fmt.Errorf("%s %s: %w", what, p, err)
	}
	if err := CheckRuntimeConfig(resolved); err != nil {
		return fmt.Errorf("%s %s is a symlink to %s: %w", what, p, resolved, err)
	}
	to.files = append(to.files, filepath.Clean(p), resolved)
	return nil
}

// resolve is the host path p resolves to inside the host root (host.Root.Resolve).
func (a Paths) resolve(p string) (string, error) {
	local, err := a.root.Resolve(p)
	if err != nil {
		return "", err
	}
	return a.root.HostPath(local), nil
}

// areaOf is the area that allows p.
func (a Paths) areaOf(p string) (area, bool) {
	for _, ar := range a.areas {
		if ar.allows(p) {
			return ar, true
		}
	}
	return area{}, false
}

// Resolve checks that the remediator may change the file at the host path p and returns where to change it:
// the local path of p with its symlinks resolved inside the host root (the file itself, never a link). p must lie
// in the allowlist, and what it resolves to in the same area: a link whose target leaves the allowed dirs is refused, as
// is one whose absolute target would leave the host root (Resolve keeps it inside, where it names another file).
func (a Paths) Resolve(p string) (local string, err error) {
	if !filepath.IsAbs(p) || filepath.Clean(p) != p {
		return "", fmt.Errorf("%s is not a clean absolute host path", p)
	}
	ar, ok := a.areaOf(p)
	if !ok {
		return "", fmt.Errorf("%s is outside the files cnimedic may change (%s)", p, a.words())
	}
	local, err = a.root.Resolve(p)
	if err != nil {
		return "", fmt.Errorf("resolve %s: %w", p, err)
	}
	if resolved := a.root.HostPath(local); resolved != p && !ar.allows(resolved) {
		return "", fmt.Errorf("%s is a symlink to %s, outside the files cnimedic may change (%s); it is not followed", p, resolved, a.words())
	}
	return local, nil
}

// CheckUnmoved checks that the host path p, where a backup was taken (symlinks already resolved), is still the
// file itself: restoring through a link that appeared since would write wherever it leads. Only the static roots
// are checked, since a rollback may run with settings other than the run's (the journal recorded where it wrote).
func CheckUnmoved(root host.Root, p string) error {
	if !underAny(p, CNIRoots) && !underAny(p, RuntimeConfigRoots) && !Under(p, CNIStateRoot) {
		return fmt.Errorf("%s is outside the directories cnimedic may change; it is not restored", p)
	}
	local, err := root.Resolve(p)
	if err != nil {
		return fmt.Errorf("resolve %s: %w", p, err)
	}
	if resolved := root.HostPath(local); resolved != filepath.Clean(p) {
		return fmt.Errorf("%s now leads to %s through a symlink; it is not restored through it", p, resolved)
	}
	return nil
}

func (a Paths) words() string {
	var out []string
	for _, ar := range a.areas {
		for _, d := range append(slices.Clone(ar.dirs), ar.files...) {
			if !slices.Contains(out, d) {
				out = append(out, d)
			}
		}
	}
	return strings.Join(out, ", ")
}
