package runtimecfg

import "github.com/cnimedic/cnimedic/remediator/host"

// local is where this process sees the host path p, with symlinks resolved inside the host root: a host link such
// as /opt/cni/bin -> /usr/lib/cni must not lead into the executor's own image.
func local(root host.Root, p string) string {
	if l, err := root.Resolve(p); err == nil {
		return l
	}
	return root.Path(p)
}
