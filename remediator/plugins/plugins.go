// Package plugins finds CNI plugin binaries in the runtime's search path and asks each, through libcni's CNI
// VERSION command, which spec versions it supports. Versions are never guessed from file names or packages: the
// binary's own answer is what the runtime will meet.
package plugins

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"sort"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/cnimedic/cnimedic/internal/signature"
	"github.com/cnimedic/cnimedic/remediator/host"
)

// Kind says who ships a plugin.
type Kind string

const (
	// Reference plugins come from github.com/containernetworking/plugins; the executor may install its bundled build.
	Reference Kind = "reference"
	// Vendor plugins belong to a network provider (flannel, calico, cilium...) whose DaemonSet installs them; they
	// are never replaced, only reported.
	Vendor Kind = "vendor"
)

// KindOf says whether a plugin type is a reference plugin or belongs to a vendor. Anything that is not a known
// reference plugin counts as a vendor's: replacing it with something else would be wrong whoever made it.
func KindOf(pluginType string) Kind {
	// One list for detection and the node: signature.IsReferencePlugin.
	if signature.IsReferencePlugin(pluginType) {
		return Reference
	}
	return Vendor
}

// Info is what the node has for one plugin type.
type Info struct {
	Type string `json:"type"`
	Kind Kind   `json:"kind"`
	// Path is the host path of the binary the runtime would execute (the first match in the search path).
	Path  string `json:"path,omitempty"`
	Found bool   `json:"found"`
	// Mode is the binary's permission bits; Executable tells whether the runtime can execute it.
	Mode       fs.FileMode `json:"mode,omitempty"`
	Executable bool        `json:"executable"`
	// Versions are the CNI spec versions the binary says it supports (its VERSION answer).
	Versions []string `json:"versions,omitempty"`
	// Error says why the versions are unknown: missing binary, not executable, or a failed VERSION call.
	Error string `json:"error,omitempty"`
}

// Supports reports whether the plugin answered VERSION with v among its versions.
func (i Info) Supports(v string) bool {
	for _, s := range i.Versions {
		if s == v {
			return true
		}
	}
	return false
}

// versionTimeout bounds one VERSION call: a plugin that hangs must not hang the diagnosis.
const versionTimeout = 10 * time.Second

// Probe finds pluginType in binDirs (host paths, searched in order like the runtime does) and asks it for its
// versions.
func Probe(ctx context.Context, root host.Root, binDirs []string, pluginType string) Info {
	info := Info{Type: pluginType, Kind: KindOf(pluginType)}
	dirs := make([]string, len(binDirs))
	for i, d := range binDirs {
		dirs[i] = root.Local(d)
	}
	path, err := invoke.FindInPath(pluginType, dirs)
	if err != nil {
		info.Error = err.Error()
		return info
	}
	info.Found = true
	info.Path = root.HostPath(path)
	if st, err := os.Stat(path); err == nil {
		info.Mode = st.Mode().Perm()
		info.Executable = st.Mode().Perm()&0o111 != 0
	}
	if !info.Executable {
		info.Error = fmt.Sprintf("%s is not executable (mode %#o)", info.Path, info.Mode)
		return info
	}
	ctx, cancel := context.WithTimeout(ctx, versionTimeout)
	defer cancel()
	var run invoke.Exec // nil: libcni's own
	if !root.IsHost() {
		run = newHostExec(root)
	}
	vi, err := libcni.NewCNIConfig(dirs, run).GetVersionInfo(ctx, pluginType)
	if err != nil {
		info.Error = fmt.Sprintf("the VERSION command failed: %v", err)
		return info
	}
	info.Versions = vi.SupportedVersions()
	return info
}

// ProbeAll probes every type once, in the order given.
func ProbeAll(ctx context.Context, root host.Root, binDirs []string, types []string) []Info {
	out := make([]Info, 0, len(types))
	for _, t := range types {
		out = append(out, Probe(ctx, root, binDirs, t))
	}
	return out
}

// HighestCommon returns the highest spec version that every plugin supports and that is not above ceiling (empty
// ceiling: no limit). It fails when a plugin's versions are unknown or the plugins share no version.
func HighestCommon(infos []Info, ceiling string) (string, error) {
	if len(infos) == 0 {
		return "", fmt.Errorf("no plugins to ask")
	}
	var common []string
	for i, in := range infos {
		if in.Error != "" || len(in.Versions) == 0 {
			return "", fmt.Errorf("the versions of plugin %q are unknown: %s", in.Type, in.Error)
		}
		if i == 0 {
			common = append([]string(nil), in.Versions...)
			continue
		}
		var keep []string
		for _, v := range common {
			if in.Supports(v) {
				keep = append(keep, v)
			}
		}
		common = keep
	}
	var best string
	for _, v := range common {
		if ceiling != "" {
			if gt, err := version.GreaterThan(v, ceiling); err != nil || gt {
				continue
			}
		}
		if best == "" {
			best = v
			continue
		}
		if gt, err := version.GreaterThan(v, best); err == nil && gt {
			best = v
		}
	}
	if best == "" {
		return "", fmt.Errorf("the plugins %v share no CNI version%s", typesOf(infos), ceilingNote(ceiling))
	}
	return best, nil
}

func ceilingNote(c string) string {
	if c == "" {
		return ""
	}
	return " at or below " + c
}

func typesOf(infos []Info) []string {
	out := make([]string, len(infos))
	for i, in := range infos {
		out[i] = in.Type
	}
	return out
}

// SortVersions sorts spec versions in ascending order; unparseable ones go first.
func SortVersions(vs []string) {
	sort.SliceStable(vs, func(i, j int) bool {
		gt, err := version.GreaterThan(vs[j], vs[i])
		return err == nil && gt
	})
}

// AtLeast reports whether v is a valid version at or above min.
func AtLeast(v, min string) bool {
	ok, err := version.GreaterThanOrEqualTo(v, min)
	return err == nil && ok
}
