// Package netstate reads the node's network state that CNI leaves behind (the pod bridge such as cni0, overlay
// devices such as flannel.1, named network namespaces under /var/run/netns) and provides the host actions that
// remove what is stale.
package netstate

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/cnimedic/cnimedic/remediator/host"
)

// DefaultLinks are the links worth reporting on any node: the reference bridge and flannel's devices.
var DefaultLinks = []string{"cni0", "flannel.1", "flannel-v6.1"}

// Link is one network link's state.
type Link struct {
	Name   string `json:"name"`
	Exists bool   `json:"exists"`
	Type   string `json:"type,omitempty"`
	// Up is the administrative state; OperState the kernel's operational state.
	Up        bool     `json:"up"`
	OperState string   `json:"operState,omitempty"`
	Addresses []string `json:"addresses,omitempty"`
	// Expected is the address the link should carry (from flannel's subnet.env or the bridge's gateway), and
	// Stale tells that the link carries an IPv4 address different from it: the bridge plugin then fails with
	// "already has an IP address different from".
	Expected string `json:"expected,omitempty"`
	Stale    bool   `json:"stale,omitempty"`
}

// Open returns a netlink handle in the network namespace at nsPath, or in the current one when nsPath is empty.
// The executor runs with the host's network; tests point it at a namespace of their own.
func Open(nsPath string) (*netlink.Handle, error) {
	if nsPath == "" {
		return netlink.NewHandle()
	}
	ns, err := netns.GetFromPath(nsPath)
	if err != nil {
		return nil, fmt.Errorf("opening network namespace %s: %w", nsPath, err)
	}
	defer ns.Close()
	return netlink.NewHandleAt(ns)
}

// Links reports the named links.
func Links(h *netlink.Handle, names []string) ([]Link, error) {
	out := make([]Link, 0, len(names))
	for _, name := range names {
		l := Link{Name: name}
		link, err := h.LinkByName(name)
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			out = append(out, l)
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("looking up link %s: %w", name, err)
		}
		attrs := link.Attrs()
		l.Exists = true
		l.Type = link.Type()
		l.Up = attrs.Flags&net.FlagUp != 0
		l.OperState = attrs.OperState.String()
		addrs, err := h.AddrList(link, netlink.FAMILY_ALL)
		if err != nil {
			return nil, fmt.Errorf("listing addresses of %s: %w", name, err)
		}
		for _, a := range addrs {
			if a.IP.IsLinkLocalUnicast() {
				continue // fe80:: addresses come and go with the link and say nothing about CNI
			}
			l.Addresses = append(l.Addresses, a.IPNet.String())
		}
		out = append(out, l)
	}
	return out, nil
}

// CheckExpected sets Expected on the link and flags it Stale when it holds an IPv4 address of another value. Only
// IPv4 is compared: the bridge plugin's check that fails in the seed compares the IPv4 gateway.
func CheckExpected(l *Link, expected string) {
	l.Expected = expected
	l.Stale = false
	want, _, err := net.ParseCIDR(expected)
	if err != nil || !l.Exists || want.To4() == nil {
		return
	}
	for _, a := range l.Addresses {
		ip, _, err := net.ParseCIDR(a)
		if err == nil && ip.To4() != nil && a != expected {
			l.Stale = true
		}
	}
}

// FlannelSubnet reads FLANNEL_SUBNET (the address cni0 must carry, such as 10.244.1.1/24) from flannel's
// subnet.env (a host path). Absent file: empty and no error.
func FlannelSubnet(root host.Root, path string) (string, error) {
	raw, err := host.ReadFile(root.Local(path), host.MaxSmallFile)
	if errors.Is(err, os.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	sc := bufio.NewScanner(bytes.NewReader(raw))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), "FLANNEL_SUBNET="); ok {
			return v, nil
		}
	}
	return "", sc.Err()
}

// DeleteLink is the host action that deletes a link so that the plugin recreates it with the right address.
// Deleting a link that is already gone succeeds, so the action is safe to repeat.
type DeleteLink struct {
	Name string
	// NetNS is the namespace's path in this process's view ("" for the current one).
	NetNS string
}

// Describe says what the action does.
func (d DeleteLink) Describe() string { return "delete network link " + d.Name }

// Do deletes the link.
func (d DeleteLink) Do(context.Context) error {
	h, err := Open(d.NetNS)
	if err != nil {
		return err
	}
	defer h.Close()
	link, err := h.LinkByName(d.Name)
	var nf netlink.LinkNotFoundError
	if errors.As(err, &nf) {
		return nil
	}
	if err != nil {
		return err
	}
	return h.LinkDel(link)
}

// CarriesDefaultRoute reports whether the named link holds a default route (IPv4 or IPv6): such a link is the
// node's way out and is never deleted. Errors count as "yes": doubt must not delete anything.
func CarriesDefaultRoute(h *netlink.Handle, name string) bool {
	link, err := h.LinkByName(name)
	if err != nil {
		return true
	}
	routes, err := h.RouteList(link, netlink.FAMILY_ALL)
	if err != nil {
		return true
	}
	for _, r := range routes {
		if r.Dst == nil || r.Dst.IP.IsUnspecified() {
			if ones, _ := maskSize(r.Dst); ones == 0 {
				return true
			}
		}
	}
	return false
}

func maskSize(n *net.IPNet) (int, int) {
	if n == nil {
		return 0, 0
	}
	return n.Mask.Size()
}
