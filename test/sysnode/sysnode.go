// Package sysnode boots a real systemd node (test/nspawn, through nspawntest) for the executor's tests:
// Debian's real containerd.service and a stand-in kubelet.service (a long-running process with the real unit's
// restart policy; the real kubelet needs the lab's control plane). A missing prerequisite fails the test with
// the make target that installs it (nspawntest.Require): these tests never skip, except under an explicit -short.
package sysnode

import (
	"testing"

	"github.com/cnimedic/cnimedic/test/nspawn"
	"github.com/cnimedic/cnimedic/test/nspawn/nspawntest"
)

// Unit names on a test node.
const (
	Kubelet    = "kubelet.service"
	Containerd = "containerd.service"
)

// KubeletStandIn is the node's kubelet.service, ordered after containerd as kubeadm's drop-in orders it.
const KubeletStandIn = `[Unit]
Description=stand-in kubelet for cnimedic's tests
After=containerd.service

[Service]
ExecStart=/bin/sleep infinity
Restart=always
RestartSec=1

[Install]
WantedBy=multi-user.target
`

// Boot starts the node called name (stable and unique across the repository's suites: prefix it with the package)
// with kubelet.service and containerd.service enabled and running, plus the given files, and halts it when the
// test ends.
func Boot(t testing.TB, name string, files ...nspawn.File) *nspawn.Node {
	t.Helper()
	files = append([]nspawn.File{{Path: "/etc/systemd/system/" + Kubelet, Data: []byte(KubeletStandIn)}}, files...)
	return nspawntest.Boot(t, nspawn.Options{
		Name:        name,
		Files:       files,
		EnableUnits: []string{Kubelet, Containerd},
	})
}
