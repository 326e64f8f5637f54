package nspawn

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"strings"
)

// EnsureBridge creates the host bridge name (if missing), gives it addr (the host's address on the nodes' network,
// e.g. 10.213.0.1/24, where a control plane on the host listens) and brings it up. Idempotent. Nodes join it
// through Options.Network.
func EnsureBridge(ctx context.Context, name string, addr netip.Prefix) error {
	if !addr.IsValid() || !addr.Addr().Is4() {
		return fmt.Errorf("nspawn: bridge address %v: want an IPv4 address with prefix length", addr)
	}
	if _, err := net.InterfaceByName(name); err != nil {
		if err := ip(ctx, "link", "add", "name", name, "type", "bridge"); err != nil {
			return err
		}
	}
	// "replace" keeps this idempotent: adding an address the bridge already has is an error for ip(8).
	if err := ip(ctx, "addr", "replace", addr.String(), "dev", name); err != nil {
		return err
	}
	return ip(ctx, "link", "set", "dev", name, "up")
}

// DeleteBridge removes the host bridge name; a missing bridge is not an error. Nodes' veth ends on it vanish with
// the nodes themselves.
func DeleteBridge(ctx context.Context, name string) error {
	if _, err := net.InterfaceByName(name); err != nil {
		return nil
	}
	return ip(ctx, "link", "delete", "dev", name)
}

func ip(ctx context.Context, args ...string) error {
	out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("nspawn: ip %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}
