package nspawn

import (
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"path/filepath"
	"regexp"
	"strings"
	"time"
)

// Options describe one node. Name, BaseRoot and StateDir are required.
type Options struct {
	// Name is the machine name and the node's hostname: lower-case letters, digits and dashes, at most 40
	// characters. It names the node's cgroups on the host, so two nodes running at once need different names.
	Name string
	// BaseRoot is the shared, read-only root filesystem built by hack/node-rootfs.sh (bin/node-rootfs). Nodes never
	// write to it: each one runs on an overlayfs over it.
	BaseRoot string
	// StateDir holds everything of this node on the host: the overlay's writable layer, /var/lib/containerd, the
	// bus socket, the console log and the state file. It belongs to the node: Boot first clears whatever a previous
	// run left there (including a node still running from a killed process) and Cleanup removes it. Keep it on a
	// real filesystem (not overlay, not tmpfs) under the repository's .lab/ or bin/, never /tmp.
	StateDir string

	// Binds are host paths bind-mounted into the node, e.g. the kubelet binary read-only. Prefer a read-only bind
	// over a File for large binaries: a File is copied at every boot.
	Binds []Bind
	// Files are written into the node's root before it boots (its writable layer; the base is untouched).
	Files []File
	// EnableUnits are systemd units (already in the base or placed by Files) started at boot by multi-user.target,
	// e.g. "kubelet.service".
	EnableUnits []string

	// Network attaches the node to a host bridge with a static address. Nil gives the node a private network with
	// only a loopback interface.
	Network *Network

	// BootTimeout bounds Boot's wait for SystemState=running (default 60 s; a boot takes about half a second here).
	BootTimeout time.Duration
	// Ephemeral ties the node to the process that boots it: once that process is gone, ReapOrphans tears the node
	// down. Tests set it (nspawntest does), so that a test binary killed by a timeout or ^C leaves no node running
	// for long; the lab leaves it unset, since its nodes outlive the command that starts them.
	Ephemeral bool
	// AllowDegraded accepts a node whose boot ended with failed units (SystemState=degraded). By default Boot fails
	// and names the failed units, which catches a broken rootfs or a broken unit at its source.
	AllowDegraded bool
}

// Bind is a bind mount of a host path into the node.
type Bind struct {
	HostPath string // absolute path on the host
	NodePath string // absolute path inside the node; HostPath when empty
	ReadOnly bool
}

// File is a file written into the node before it boots. Exactly one of Data and Source is set.
type File struct {
	Path   string      // absolute path inside the node; missing parent directories are created (0755)
	Data   []byte      // the file's content
	Source string      // or a host file to copy
	Mode   fs.FileMode // permission bits; 0644 when zero
}

// Network is a node's place on a host bridge (see EnsureBridge). The node's interface is host0, configured by
// systemd-networkd inside the node.
type Network struct {
	Bridge  string       // existing host bridge, e.g. "cnimedic0"
	Address netip.Prefix // the node's address and prefix length on the bridge, e.g. 10.213.0.11/24
	Gateway netip.Addr   // optional default route, usually the bridge's own address on the host
}

var nameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$`)

// unitRE accepts systemd unit names (and templates' instances) without any path element.
var unitRE = regexp.MustCompile(`^[A-Za-z0-9:_.\\@-]+\.(service|socket|timer|target|path|mount)$`)

func (o *Options) validate() error {
	var errs []error
	if !nameRE.MatchString(o.Name) {
		errs = append(errs, fmt.Errorf("name %q: want lower-case letters, digits and dashes, at most 40", o.Name))
	}
	if !filepath.IsAbs(o.BaseRoot) {
		errs = append(errs, fmt.Errorf("base root %q: want an absolute path", o.BaseRoot))
	}
	if !filepath.IsAbs(o.StateDir) || filepath.Clean(o.StateDir) == "/" {
		errs = append(errs, fmt.Errorf("state dir %q: want an absolute path of its own", o.StateDir))
	}
	// Both end up in overlayfs mount options, where a comma ends an option and a colon separates lower layers.
	for _, p := range []string{o.BaseRoot, o.StateDir} {
		if strings.ContainsAny(p, ",:\\") {
			errs = append(errs, fmt.Errorf("path %q: overlayfs cannot take a path with a comma, colon or backslash", p))
		}
	}
	for _, b := range o.Binds {
		if !filepath.IsAbs(b.HostPath) || (b.NodePath != "" && !filepath.IsAbs(b.NodePath)) {
			errs = append(errs, fmt.Errorf("bind %q -> %q: want absolute paths", b.HostPath, b.NodePath))
		}
	}
	for _, f := range o.Files {
		if !filepath.IsAbs(f.Path) || filepath.Clean(f.Path) == "/" {
			errs = append(errs, fmt.Errorf("file %q: want an absolute path inside the node", f.Path))
		}
		if (f.Data == nil) == (f.Source == "") {
			errs = append(errs, fmt.Errorf("file %q: set exactly one of Data and Source", f.Path))
		}
	}
	for _, u := range o.EnableUnits {
		if !unitRE.MatchString(u) {
			errs = append(errs, fmt.Errorf("unit %q: not a unit name", u))
		}
	}
	if n := o.Network; n != nil {
		// Linux interface names: at most 15 bytes, no slash or space.
		if n.Bridge == "" || len(n.Bridge) > 15 || strings.ContainsAny(n.Bridge, "/ \t\n:") {
			errs = append(errs, fmt.Errorf("bridge %q: not an interface name", n.Bridge))
		}
		if !n.Address.IsValid() || !n.Address.Addr().Is4() {
			errs = append(errs, fmt.Errorf("network address %v: want an IPv4 address with prefix length", n.Address))
		}
		if n.Gateway.IsValid() && !n.Gateway.Is4() {
			errs = append(errs, fmt.Errorf("gateway %v: want IPv4", n.Gateway))
		}
	}
	return errors.Join(errs...)
}

// nspawnPath escapes a path for --bind: nspawn splits the argument at colons and reads backslash escapes.
func nspawnPath(p string) string {
	return strings.NewReplacer(`\`, `\\`, `:`, `\:`).Replace(p)
}

// networkdConfig is host0's systemd-networkd configuration for a bridged node.
func (n *Network) networkdConfig() []byte {
	var b strings.Builder
	b.WriteString("# Written by cnimedic's test/nspawn: the node's static address on the host bridge.\n")
	b.WriteString("[Match]\nName=host0\n\n[Network]\n")
	fmt.Fprintf(&b, "Address=%s\n", n.Address)
	if n.Gateway.IsValid() {
		fmt.Fprintf(&b, "Gateway=%s\n", n.Gateway)
	}
	// A static node needs no DHCP, no IPv6 autoconfiguration and no link-local noise on the bridge.
	b.WriteString("DHCP=no\nLinkLocalAddressing=no\nIPv6AcceptRA=no\n")
	return []byte(b.String())
}
