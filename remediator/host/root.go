// Package host maps host paths to where the remediator sees them. In the executor pod the host's root is mounted
// at a directory (--host-root); in tests it is a temporary directory; on a node it is "/". Every path the
// remediator reports is a host path, so that reports read the same wherever the remediator ran.
package host

import (
	"path/filepath"
	"strings"
)

// Root is the directory where the host's root filesystem is visible.
type Root string

// IsHost reports whether the root is this process's own root: the remediator runs on the host itself.
func (r Root) IsHost() bool { return r == "" || r == "/" }

// Path returns where the host path p is visible to this process.
func (r Root) Path(p string) string {
	if r == "" || r == "/" {
		return filepath.Clean("/" + p)
	}
	return filepath.Join(string(r), filepath.Clean("/"+p))
}

// HostPath is the inverse of Path: the host path of a local path under the root. Paths outside the root are
// returned unchanged.
func (r Root) HostPath(local string) string {
	if r == "" || r == "/" {
		return filepath.Clean(local)
	}
	rel, err := filepath.Rel(string(r), local)
	if err != nil || strings.HasPrefix(rel, "..") {
		return local
	}
	return filepath.Clean("/" + rel)
}

// Local is where this process sees the host path p, with symlinks resolved inside the host root: a host link such
// as /opt/cni/bin -> /usr/lib/cni must not lead into the executor's own image. A path that cannot be resolved is
// mapped as it is (Path).
func (r Root) Local(p string) string {
	if l, err := r.Resolve(p); err == nil {
		return l
	}
	return r.Path(p)
}
