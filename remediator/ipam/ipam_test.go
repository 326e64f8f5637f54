package ipam

import (
	"strings"
	"testing"

	"github.com/cnimedic/cnimedic/remediator/host"
	"github.com/cnimedic/cnimedic/test/nodetest"
)

func TestRangeSetsCountLikeHostLocal(t *testing.T) {
	cases := []struct {
		conf   string
		ranges string
		cap    int64
	}{
		// The gateway (.1 by default) and the broadcast address are never handed out.
		{`{"type":"host-local","ranges":[[{"subnet":"10.244.0.0/24"}]]}`, "10.244.0.1-10.244.0.254", 253},
		// The measured lab message: "no IP addresses available in range set: 10.244.0.200-10.244.0.201".
		{`{"type":"host-local","ranges":[[{"subnet":"10.244.0.0/24","rangeStart":"10.244.0.200","rangeEnd":"10.244.0.201"}]]}`, "10.244.0.200-10.244.0.201", 2},
		{`{"type":"host-local","subnet":"10.1.0.0/29","gateway":"10.1.0.6"}`, "10.1.0.1-10.1.0.6", 5},
	}
	for _, c := range cases {
		sets, err := RangeSets([]byte(c.conf))
		if err != nil || len(sets) != 1 || strings.Join(sets[0].Ranges, ",") != c.ranges || sets[0].Capacity != c.cap {
			t.Errorf("%s: %+v %v", c.conf, sets, err)
		}
	}
	if _, err := RangeSets([]byte(`{"ranges":[[{"subnet":"nope"}]]}`)); err == nil {
		t.Error("a bad subnet must be an error")
	}
}

func TestLeasesAndLeaks(t *testing.T) {
	root := nodetest.Root(t)
	nodetest.Write(t, root, "/var/lib/cni/networks/cbr0/10.244.0.200", []byte("live1\r\neth0"), 0o644)
	nodetest.Write(t, root, "/var/lib/cni/networks/cbr0/10.244.0.201", []byte("dead1"), 0o644) // pre-0.8 format
	nodetest.Write(t, root, "/var/lib/cni/networks/cbr0/10.244.0.202", []byte(""), 0o644)      // owner unknown
	nodetest.Write(t, root, "/var/lib/cni/networks/cbr0/last_reserved_ip.0", []byte("10.244.0.201"), 0o644)
	nodetest.Write(t, root, "/var/lib/cni/networks/cbr0/lock", nil, 0o644)
	nets, err := Read(host.Root(root), DefaultDataDir)
	if err != nil || len(nets) != 1 || len(nets[0].Leases) != 3 {
		t.Fatalf("%+v %v", nets, err)
	}
	if l := nets[0].Leases[0]; l.ContainerID != "live1" || l.IfName != "eth0" || l.Path != "/var/lib/cni/networks/cbr0/10.244.0.200" {
		t.Fatalf("lease: %+v", l)
	}
	leaked := Leaked(nets[0], map[string]bool{"live1": true})
	if len(leaked) != 1 || leaked[0].ContainerID != "dead1" {
		t.Fatalf("leaked: %+v", leaked)
	}
	if Leaked(nets[0], nil) != nil {
		t.Fatal("without the runtime's answer nothing is leaked")
	}
	sets, _ := RangeSets([]byte(`{"ranges":[[{"subnet":"10.244.0.0/24","rangeStart":"10.244.0.200","rangeEnd":"10.244.0.201"}]]}`))
	if c := Count(sets, nets[0]); c[0].Used != 2 || !c[0].Full() {
		t.Fatalf("count: %+v", c)
	}
}
