package nodetest

import (
	"fmt"
	"path/filepath"
	"testing"
)

// BridgeConflist is the runbook's bridge + host-local + portmap chain on the test's own bridge and subnet, with
// host-local's data under dataDir. version "" leaves cniVersion out.
func BridgeConflist(version, bridge, subnet, dataDir string) []byte {
	v := ""
	if version != "" {
		v = fmt.Sprintf("\n  \"cniVersion\": %q,", version)
	}
	return []byte(fmt.Sprintf(`{%s
  "name": "containerd-net",
  "plugins": [
    {
      "type": "bridge",
      "bridge": %q,
      "isGateway": true,
      "ipMasq": false,
      "ipam": {
        "type": "host-local",
        "dataDir": %q,
        "ranges": [[{"subnet": %q}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
`, v, bridge, dataDir, subnet))
}

// Node is a host root laid out like a node, with a real containerd whose CRI CNI settings point into it, running
// in a network namespace of its own. ConfDir, BinDir and IPAMDir are host paths under Root.
type Node struct {
	Root       string
	ConfDir    string
	BinDir     string
	IPAMDir    string
	Containerd *Containerd
}

// StartNode lays out a node under a fresh root with the given plugin set in /opt/cni/bin and starts containerd on
// it. The conf dir starts empty.
func StartNode(t testing.TB, set string) *Node {
	t.Helper()
	RequireRoot(t)
	root := Root(t)
	n := &Node{Root: root, ConfDir: "/etc/cni/net.d", BinDir: "/opt/cni/bin", IPAMDir: "/var/lib/cni/networks"}
	CopyPlugins(t, set, root, n.BinDir, "bridge", "host-local", "loopback", "portmap")
	Write(t, root, "/etc/cni/net.d/.keep", nil, 0o644)
	hostNS := NewNetns(t, filepath.Join(root, "run", "test-netns"), "host")
	n.Containerd = StartContainerd(t, filepath.Join(root, "ctd"), hostNS, filepath.Join(root, n.ConfDir), filepath.Join(root, n.BinDir))
	return n
}

// Local is where a host path of the node is in this process's view.
func (n *Node) Local(hostPath string) string { return filepath.Join(n.Root, hostPath) }

// SocketHostPath is containerd's socket as a host path of the node.
func (n *Node) SocketHostPath() string {
	rel, _ := filepath.Rel(n.Root, n.Containerd.Socket)
	return "/" + rel
}

// NetnsHostDir is containerd's netns dir as a host path of the node.
func (n *Node) NetnsHostDir() string {
	rel, _ := filepath.Rel(n.Root, n.Containerd.NetnsDir)
	return "/" + rel
}
