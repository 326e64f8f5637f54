package diagnose

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
	"github.com/cnimedic/cnimedic/remediator/node"
	"github.com/cnimedic/cnimedic/test/nodetest"
)

// rangesConflist is a bridge + host-local conflist whose "ipam" object is given, as a CNI provider that lost the
// node's pod subnet (or never had it) would write it.
func rangesConflist(ipam, capabilities string) string {
	return fmt.Sprintf(`{
  "cniVersion": "1.0.0",
  "name": "lab",
  "plugins": [
    {"type": "bridge", "bridge": "cni0", "isGateway": true%s,
     "ipam": %s},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
`, capabilities, ipam)
}

// adds numbers the sandboxes hostLocalAdd claims an address for.
var adds int

// hostLocalAdd runs the real host-local plugin's ADD with the first plugin's configuration of conflist, as the
// bridge plugin hands it over (the same stdin), and returns its error message. host-local reads its configuration
// before it touches anything, and its data dir is the test's own.
func hostLocalAdd(t *testing.T, root, conflist string) string {
	t.Helper()
	var list struct {
		CNIVersion string           `json:"cniVersion"`
		Name       string           `json:"name"`
		Plugins    []map[string]any `json:"plugins"`
	}
	if err := json.Unmarshal([]byte(conflist), &list); err != nil {
		t.Fatal(err)
	}
	conf := list.Plugins[0]
	conf["cniVersion"], conf["name"] = list.CNIVersion, list.Name
	conf["ipam"].(map[string]any)["dataDir"] = filepath.Join(root, "var/lib/cni/networks")
	stdin, _ := json.Marshal(conf)
	cmd := exec.Command(filepath.Join(root, "opt/cni/bin/host-local"))
	adds++
	cmd.Env = []string{"CNI_COMMAND=ADD", fmt.Sprintf("CNI_CONTAINERID=cnimedic-test-%d", adds), "CNI_NETNS=/proc/self/ns/net", "CNI_IFNAME=eth0", "CNI_PATH=" + filepath.Join(root, "opt/cni/bin")}
	cmd.Stdin = bytes.NewReader(stdin)
	out, err := cmd.Output()
	if err == nil {
		return ""
	}
	var e struct {
		Msg string `json:"msg"`
	}
	_ = json.Unmarshal(out, &e)
	return e.Msg
}

// TestALoadedConflistWhoseHostLocalHasNoRangeIsAnErrorOnlyAPersonFixes: host-local whose configuration has neither
// "subnet" nor "ranges" fails every pod with "no IP ranges specified" (the real plugin says so here), a wording no
// signature names. The diagnosis names the file and the plugin, as cni-config-invalid with Fix Escalate: the pod
// subnet is the CNI provider's to write, and cnimedic never invents one. The near misses (an old-style "subnet",
// "ranges", the "ipRanges" capability through which the runtime hands the range over, flannel, which writes its
// delegate's range, and a file the runtime does not load) are no such finding, and the real host-local accepts the
// first two.
func TestALoadedConflistWhoseHostLocalHasNoRangeIsAnErrorOnlyAPersonFixes(t *testing.T) {
	root := nodetest.Root(t)
	nodetest.CopyPlugins(t, nodetest.Debian, root, "/opt/cni/bin", "bridge", "host-local", "portmap", "loopback")
	const path = "/etc/cni/net.d/10-lab.conflist"
	noRange := rangesConflist(`{"type": "host-local", "routes": [{"dst": "0.0.0.0/0"}]}`, "")
	if msg := hostLocalAdd(t, root, noRange); msg != "no IP ranges specified" {
		t.Fatalf("the real host-local on a configuration without a range: %q", msg)
	}
	nodetest.Write(t, root, path, []byte(noRange), 0o644)
	o := Options{Settings: node.Settings{NetNS: nodetest.NewNetns(t, filepath.Join(root, "run", "test-netns"), "links")}}
	r, text := run(t, root, o)
	f := expect(t, r, text, sigConfigInvalid, Error, `host-local IPAM of plugin "bridge" in `+path, `neither "subnet" nor "ranges"`, `"no IP ranges specified"`)
	if f.Path != path || f.Fix != v1alpha1.ActionEscalate || !strings.Contains(f.Repair, "never invents a subnet") {
		t.Fatalf("finding: %+v", f)
	}
	// Empty ranges are no range either.
	nodetest.Write(t, root, path, []byte(rangesConflist(`{"type": "host-local", "ranges": []}`, "")), 0o644)
	r, text = run(t, root, o)
	expect(t, r, text, sigConfigInvalid, Error, `neither "subnet" nor "ranges"`)

	nearMisses := map[string]string{
		"an old-style subnet":     rangesConflist(`{"type": "host-local", "subnet": "10.88.0.0/16"}`, ""),
		"ranges":                  rangesConflist(`{"type": "host-local", "ranges": [[{"subnet": "10.88.0.0/16"}]]}`, ""),
		"the ipRanges capability": rangesConflist(`{"type": "host-local"}`, `, "capabilities": {"ipRanges": true}`),
		"flannel": `{"cniVersion": "1.0.0", "name": "cbr0", "plugins": [{"type": "flannel", "ipam": {"type": "host-local"},
		  "delegate": {"isDefaultGateway": true}}, {"type": "portmap", "capabilities": {"portMappings": true}}]}`,
	}
	for what, conf := range nearMisses {
		if what == "an old-style subnet" || what == "ranges" {
			if msg := hostLocalAdd(t, root, conf); msg != "" {
				t.Fatalf("the real host-local refuses %s: %q", what, msg)
			}
		}
		nodetest.Write(t, root, path, []byte(conf), 0o644)
		r, _ := run(t, root, o)
		for _, f := range r.Findings {
			if strings.Contains(f.Summary, "no IP ranges specified") {
				t.Errorf("%s: %+v", what, f)
			}
		}
	}
	// A file the runtime does not load (it sorts after the loaded one) is not the pods' network.
	nodetest.Write(t, root, path, []byte(nearMisses["ranges"]), 0o644)
	nodetest.Write(t, root, "/etc/cni/net.d/20-spare.conflist", []byte(noRange), 0o644)
	r, _ = run(t, root, o)
	for _, f := range r.Findings {
		if strings.Contains(f.Summary, "no IP ranges specified") {
			t.Errorf("a file the runtime does not load: %+v", f)
		}
	}
}
