// Package conflist reads the CNI network configurations in a conf dir the way the container runtime does
// (libcni parses them; containerd's go-cni picks them in file-name order) and edits a configuration's cniVersion
// without touching any other byte of meaning.
package conflist

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"

	"github.com/containernetworking/cni/libcni"

	"github.com/cnimedic/cnimedic/remediator/host"
)

// Extensions are the file name extensions containerd's go-cni loads from the conf dir, in libcni's terms.
var Extensions = []string{".conf", ".conflist", ".json"}

// File is one network configuration file in the conf dir.
type File struct {
	// Path is the host path.
	Path string `json:"path"`
	// Mode is the file's permission bits.
	Mode fs.FileMode `json:"mode"`
	// Format is "conflist" for a .conflist (a chain of plugins) or "conf" for a single-plugin .conf/.json file,
	// which the runtime wraps into a one-plugin list.
	Format string `json:"format"`
	// ParseError is libcni's error when the file does not load as the runtime would load it.
	ParseError string `json:"parseError,omitempty"`
	// Network is the network name.
	Network string `json:"network,omitempty"`
	// CNIVersion is the top-level cniVersion member as written; HasCNIVersion tells an empty one from a missing one.
	CNIVersion    string `json:"cniVersion"`
	HasCNIVersion bool   `json:"hasCNIVersion"`
	// CNIVersions is the CNI 1.1 cniVersions list, when present.
	CNIVersions []string `json:"cniVersions,omitempty"`
	// EffectiveVersion is the version libcni hands the plugins (it prefers the highest entry of cniVersions that
	// it implements over cniVersion).
	EffectiveVersion string `json:"effectiveVersion"`
	// Plugins is the chain, in order.
	Plugins []Plugin `json:"plugins,omitempty"`

	raw []byte
}

// Plugin is one plugin of a chain.
type Plugin struct {
	Type string `json:"type"`
	// IPAM is the IPAM plugin type the plugin delegates to, if any.
	IPAM string `json:"ipam,omitempty"`
}

// Raw returns the file's bytes as read.
func (f File) Raw() []byte { return f.raw }

// Valid reports whether the runtime can load the file.
func (f File) Valid() bool { return f.ParseError == "" }

// Types lists the plugin types the chain executes, IPAM plugins included, each once, in chain order.
func (f File) Types() []string {
	var out []string
	seen := map[string]bool{}
	add := func(t string) {
		if t != "" && !seen[t] {
			seen[t] = true
			out = append(out, t)
		}
	}
	for _, p := range f.Plugins {
		add(p.Type)
		add(p.IPAM)
	}
	return out
}

// List reads every configuration file of confDir (a host path) in the order the runtime considers them: sorted by
// file name, as go-cni does. A missing dir yields no files and no error: the runtime treats it the same way
// ("no network config found").
func List(root host.Root, confDir string) ([]File, error) {
	dir := root.Local(confDir)
	names, err := libcni.ConfFiles(dir, Extensions)
	if err != nil {
		return nil, fmt.Errorf("reading CNI conf dir %s: %w", confDir, err)
	}
	sort.Strings(names)
	files := make([]File, 0, len(names))
	for _, name := range names {
		files = append(files, Read(root, root.HostPath(name)))
	}
	return files, nil
}

// Read loads one configuration file (a host path). Problems are reported in the File, never returned: an unreadable
// or unparseable file is exactly what diagnose has to show.
func Read(root host.Root, path string) File {
	f := File{Path: path, Format: formatOf(path)}
	lp := root.Local(path)
	if st, err := os.Stat(lp); err == nil {
		f.Mode = st.Mode().Perm()
	}
	raw, err := host.ReadFile(lp, host.MaxConfList)
	if err != nil {
		f.ParseError = err.Error()
		return f
	}
	f.raw = raw
	f.CNIVersion, f.HasCNIVersion = TopLevelString(raw, "cniVersion")
	list, err := Parse(path, raw)
	if err != nil {
		f.ParseError = err.Error()
		return f
	}
	f.Network = list.Name
	f.EffectiveVersion = list.CNIVersion
	f.CNIVersions = topLevelStrings(raw, "cniVersions")
	for _, p := range list.Plugins {
		pl := Plugin{Type: p.Network.Type}
		if p.Network.IPAM.Type != "" {
			pl.IPAM = p.Network.IPAM.Type
		}
		f.Plugins = append(f.Plugins, pl)
	}
	return f
}

func formatOf(path string) string {
	if filepath.Ext(path) == ".conflist" {
		return "conflist"
	}
	return "conf"
}

// Parse loads raw bytes the way the runtime loads the file at path: a .conflist through libcni's list parser, a
// .conf or .json as a single plugin wrapped into a list. Plugins that libcni would load from a per-network
// directory are not followed: the runtime's inline list is what the repairs edit.
func Parse(path string, raw []byte) (*libcni.NetworkConfigList, error) {
	if formatOf(path) == "conflist" {
		list, err := libcni.NetworkConfFromBytes(raw)
		if err != nil {
			return nil, err
		}
		if len(list.Plugins) == 0 {
			return nil, fmt.Errorf("no plugins in the configuration list")
		}
		return list, nil
	}
	conf, err := libcni.NetworkPluginConfFromBytes(raw)
	if err != nil {
		return nil, err
	}
	return libcni.ConfListFromConf(conf)
}

// Selection says which files the runtime loads.
type Selection struct {
	// Loaded are the indexes into the file list of the networks the runtime sets up, the default network first.
	Loaded []int `json:"loaded"`
	// Blocking is the index of the file that stops the runtime from loading any network (go-cni gives up at the
	// first file that does not load), or -1.
	Blocking int `json:"blocking"`
	// Reason says in words why nothing loads, when nothing does.
	Reason string `json:"reason,omitempty"`
}

// Select models containerd's go-cni: files in name order, the first maxConfNum of them (0 means all) become the
// networks, the first being the pod's default network; a file that does not load aborts the whole load, which
// the runtime reports as "cni plugin not initialized".
func Select(files []File, maxConfNum int) Selection {
	sel := Selection{Blocking: -1}
	if len(files) == 0 {
		sel.Reason = "the conf dir holds no .conf, .conflist or .json file"
		return sel
	}
	for i, f := range files {
		if !f.Valid() {
			sel.Loaded = nil
			sel.Blocking = i
			sel.Reason = fmt.Sprintf("%s does not load (%s) and the runtime stops at the first file that does not load", f.Path, f.ParseError)
			return sel
		}
		sel.Loaded = append(sel.Loaded, i)
		if maxConfNum > 0 && len(sel.Loaded) == maxConfNum {
			break
		}
	}
	return sel
}
