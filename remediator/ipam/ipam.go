// Package ipam reads the host-local IPAM plugin's state: one directory per network under its data dir
// (/var/lib/cni/networks), one file per allocated address, named after the address and holding the container ID
// (and, since plugins v0.8, the interface name). An allocation whose container (for containerd: the pod sandbox)
// no longer exists is leaked; enough leaks exhaust the range ("no IP addresses available in range set").
package ipam

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/cnimedic/cnimedic/remediator/host"
)

// DefaultDataDir is host-local's default data dir.
const DefaultDataDir = "/var/lib/cni/networks"

// Lease is one allocated address.
type Lease struct {
	IP          string `json:"ip"`
	ContainerID string `json:"containerID"`
	IfName      string `json:"ifName,omitempty"`
	// Path is the lease file's host path.
	Path string `json:"path"`
}

// Network is one host-local network's allocations.
type Network struct {
	Name string `json:"name"`
	// Dir is the host path of the network's directory.
	Dir    string  `json:"dir"`
	Leases []Lease `json:"leases"`
	// Error says why the directory could not be read completely.
	Error string `json:"error,omitempty"`
}

// Read lists every network directory under dataDir (a host path) with its leases. A missing data dir is no
// network and no error.
func Read(root host.Root, dataDir string) ([]Network, error) {
	entries, err := os.ReadDir(root.Local(dataDir))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading host-local data dir %s: %w", dataDir, err)
	}
	var out []Network
	for _, e := range entries {
		if e.IsDir() {
			out = append(out, ReadNetwork(root, filepath.Join(dataDir, e.Name())))
		}
	}
	return out, nil
}

// ReadNetwork reads one network directory (a host path).
func ReadNetwork(root host.Root, dir string) Network {
	n := Network{Name: filepath.Base(dir), Dir: dir}
	entries, err := os.ReadDir(root.Local(dir))
	if err != nil {
		n.Error = err.Error()
		return n
	}
	var problems []string
	for _, e := range entries {
		// Only files named after an address are leases; "lock" and "last_reserved_ip.N" are bookkeeping.
		if e.IsDir() || net.ParseIP(e.Name()) == nil {
			continue
		}
		path := filepath.Join(dir, e.Name())
		raw, err := host.ReadFile(root.Local(path), host.MaxSmallFile)
		if err != nil {
			problems = append(problems, err.Error())
			continue
		}
		id, ifname := parseLease(raw)
		n.Leases = append(n.Leases, Lease{IP: e.Name(), ContainerID: id, IfName: ifname, Path: path})
	}
	sort.Slice(n.Leases, func(i, j int) bool { return ipLess(n.Leases[i].IP, n.Leases[j].IP) })
	n.Error = strings.Join(problems, "; ")
	return n
}

// parseLease splits a lease file: the container ID on the first line, the interface name on the second (host-local
// writes "\r\n" between them; older releases wrote the ID alone).
func parseLease(raw []byte) (id, ifname string) {
	lines := strings.FieldsFunc(string(raw), func(r rune) bool { return r == '\n' || r == '\r' })
	if len(lines) > 0 {
		id = strings.TrimSpace(lines[0])
	}
	if len(lines) > 1 {
		ifname = strings.TrimSpace(lines[1])
	}
	return id, ifname
}

func ipLess(a, b string) bool {
	x, y := net.ParseIP(a), net.ParseIP(b)
	if x == nil || y == nil {
		return a < b
	}
	return new(big.Int).SetBytes(x.To16()).Cmp(new(big.Int).SetBytes(y.To16())) < 0
}

// Leaked returns the leases whose container is not among the live sandbox IDs. It is the whole decision of a
// reclaim, as in Antrea's host-local GC: allocated files minus live sandboxes. An empty container ID is never
// reclaimed (its owner cannot be told), and neither is anything when live is nil (the runtime was not asked).
func Leaked(n Network, live map[string]bool) []Lease {
	if live == nil {
		return nil
	}
	var out []Lease
	for _, l := range n.Leases {
		if l.ContainerID != "" && !live[l.ContainerID] {
			out = append(out, l)
		}
	}
	return out
}

// RangeSet is one of host-local's range sets: a pod gets one address from each set.
type RangeSet struct {
	// Ranges are spelled start-end, as host-local's own "no IP addresses available in range set" message does.
	Ranges []string `json:"ranges"`
	// Capacity is how many addresses the set can hand out (gateway excluded), capped at MaxInt64.
	Capacity int64 `json:"capacity"`
	// Used is how many of the network's leases fall inside the set.
	Used int64 `json:"used"`

	bounds [][2]net.IP
}

// Full reports whether no address is left.
func (r RangeSet) Full() bool { return r.Capacity > 0 && r.Used >= r.Capacity }

// hostLocalConf is the part of a host-local configuration that decides its pool.
type hostLocalConf struct {
	Type       string        `json:"type"`
	Ranges     [][]rangeConf `json:"ranges"`
	Subnet     string        `json:"subnet"`
	RangeStart string        `json:"rangeStart"`
	RangeEnd   string        `json:"rangeEnd"`
	Gateway    string        `json:"gateway"`
}

type rangeConf struct {
	Subnet     string `json:"subnet"`
	RangeStart string `json:"rangeStart"`
	RangeEnd   string `json:"rangeEnd"`
	Gateway    string `json:"gateway"`
}

// RangeSets computes the pool of a host-local "ipam" object (the raw JSON of a plugin's ipam member) with the
// defaults host-local applies: the range starts after the network address, ends before the broadcast address
// (IPv4), and the gateway (by default the first address) is never handed out.
func RangeSets(ipamJSON []byte) ([]RangeSet, error) {
	var c hostLocalConf
	if err := json.Unmarshal(ipamJSON, &c); err != nil {
		return nil, err
	}
	sets := c.Ranges
	if c.Subnet != "" { // the legacy single-range form
		sets = append([][]rangeConf{{{Subnet: c.Subnet, RangeStart: c.RangeStart, RangeEnd: c.RangeEnd, Gateway: c.Gateway}}}, sets...)
	}
	var out []RangeSet
	for _, set := range sets {
		rs := RangeSet{}
		total := new(big.Int)
		for _, r := range set {
			start, end, gw, err := bounds(r)
			if err != nil {
				return nil, err
			}
			n := new(big.Int).Sub(toInt(end), toInt(start))
			n.Add(n, big.NewInt(1))
			if gw != nil && between(gw, start, end) {
				n.Sub(n, big.NewInt(1))
			}
			total.Add(total, n)
			rs.Ranges = append(rs.Ranges, start.String()+"-"+end.String())
			rs.bounds = append(rs.bounds, [2]net.IP{start, end})
		}
		if total.IsInt64() {
			rs.Capacity = total.Int64()
		} else {
			rs.Capacity = 1<<63 - 1
		}
		out = append(out, rs)
	}
	return out, nil
}

// Count fills in Used for each set from a network's leases.
func Count(sets []RangeSet, n Network) []RangeSet {
	out := append([]RangeSet(nil), sets...)
	for i := range out {
		out[i].Used = 0
		for _, l := range n.Leases {
			ip := net.ParseIP(l.IP)
			for _, b := range out[i].bounds {
				if ip != nil && between(ip, b[0], b[1]) {
					out[i].Used++
					break
				}
			}
		}
	}
	return out
}

func bounds(r rangeConf) (start, end, gw net.IP, err error) {
	_, subnet, err := net.ParseCIDR(r.Subnet)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("host-local range subnet %q: %w", r.Subnet, err)
	}
	network := subnet.IP
	if v4 := network.To4(); v4 != nil {
		network = v4
	}
	last := make(net.IP, len(network))
	for i := range network {
		last[i] = network[i] | ^subnet.Mask[i]
	}
	start = next(network)
	end = last
	if network.To4() != nil && len(network) == net.IPv4len {
		end = prev(last) // the broadcast address is never handed out
	}
	if r.RangeStart != "" {
		if start = parse(r.RangeStart); start == nil {
			return nil, nil, nil, fmt.Errorf("host-local rangeStart %q is not an address", r.RangeStart)
		}
	}
	if r.RangeEnd != "" {
		if end = parse(r.RangeEnd); end == nil {
			return nil, nil, nil, fmt.Errorf("host-local rangeEnd %q is not an address", r.RangeEnd)
		}
	}
	gw = next(network)
	if r.Gateway != "" {
		gw = parse(r.Gateway)
	}
	if toInt(end).Cmp(toInt(start)) < 0 {
		return nil, nil, nil, fmt.Errorf("host-local range %s-%s is empty", start, end)
	}
	return start, end, gw, nil
}

func parse(s string) net.IP {
	ip := net.ParseIP(s)
	if v4 := ip.To4(); v4 != nil {
		return v4
	}
	return ip
}

func toInt(ip net.IP) *big.Int { return new(big.Int).SetBytes(ip) }

func between(ip, a, b net.IP) bool {
	if (ip.To4() == nil) != (a.To4() == nil) {
		return false
	}
	if v4 := ip.To4(); v4 != nil && a.To4() != nil {
		ip, a, b = v4, a.To4(), b.To4()
	}
	x := toInt(ip)
	return x.Cmp(toInt(a)) >= 0 && x.Cmp(toInt(b)) <= 0
}

func next(ip net.IP) net.IP { return add(ip, 1) }
func prev(ip net.IP) net.IP { return add(ip, -1) }

func add(ip net.IP, d int64) net.IP {
	n := new(big.Int).Add(toInt(ip), big.NewInt(d))
	out := make(net.IP, len(ip))
	if n.Sign() < 0 {
		return out
	}
	b := n.Bytes()
	if len(b) > len(out) {
		b = b[len(b)-len(out):]
	}
	copy(out[len(out)-len(b):], b)
	return out
}
