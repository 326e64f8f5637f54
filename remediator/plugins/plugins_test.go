package plugins

import (
	"context"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/cnimedic/cnimedic/remediator/host"
	"github.com/cnimedic/cnimedic/test/nodetest"
)

// The real binaries' VERSION answers, asked through libcni.
func TestProbeAsksTheRealBinaries(t *testing.T) {
	ctx := context.Background()
	cases := []struct {
		set  string
		want []string
	}{
		{nodetest.Old, []string{"0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0"}},
		{nodetest.Debian, []string{"0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0"}},
		{nodetest.Bundle, []string{"0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"}},
	}
	for _, c := range cases {
		dir := nodetest.PluginDir(t, c.set)
		for _, p := range []string{"bridge", "host-local", "loopback", "portmap"} {
			info := Probe(ctx, "/", []string{dir}, p)
			if info.Error != "" || !reflect.DeepEqual(info.Versions, c.want) {
				t.Errorf("%s %s: versions %v (error %q), want %v", c.set, p, info.Versions, info.Error, c.want)
			}
			if info.Kind != Reference || info.Path != filepath.Join(dir, p) || !info.Executable {
				t.Errorf("%s %s: %+v", c.set, p, info)
			}
		}
	}
}

func TestProbeReportsMissingAndNotExecutable(t *testing.T) {
	root := nodetest.Root(t)
	nodetest.CopyPlugins(t, nodetest.Old, root, "/opt/cni/bin", "bridge")
	if err := os.Chmod(filepath.Join(root, "opt/cni/bin/bridge"), 0o644); err != nil {
		t.Fatal(err)
	}
	info := Probe(context.Background(), host.Root(root), []string{"/opt/cni/bin"}, "bridge")
	if !info.Found || info.Executable || !strings.Contains(info.Error, "not executable") || info.Path != "/opt/cni/bin/bridge" {
		t.Fatalf("non-executable plugin: %+v", info)
	}
	info = Probe(context.Background(), host.Root(root), []string{"/opt/cni/bin"}, "flannel")
	if info.Found || info.Kind != Vendor || !strings.Contains(info.Error, `failed to find plugin "flannel"`) {
		t.Fatalf("missing vendor plugin: %+v", info)
	}
}

func TestHighestCommon(t *testing.T) {
	ctx := context.Background()
	old := ProbeAll(ctx, "/", []string{nodetest.PluginDir(t, nodetest.Old)}, []string{"bridge", "host-local"})
	deb := ProbeAll(ctx, "/", []string{nodetest.PluginDir(t, nodetest.Debian)}, []string{"portmap"})
	bundle := ProbeAll(ctx, "/", []string{nodetest.PluginDir(t, nodetest.Bundle)}, []string{"bridge", "host-local", "portmap"})
	for _, c := range []struct {
		infos   []Info
		ceiling string
		want    string
	}{
		{append(old, deb...), "", "0.4.0"},
		{append(deb, bundle...), "", "1.0.0"},
		{bundle, "", "1.1.0"},
		{bundle, "1.0.0", "1.0.0"},
	} {
		got, err := HighestCommon(c.infos, c.ceiling)
		if err != nil || got != c.want {
			t.Errorf("%v ceiling %q: %q %v, want %q", typesOf(c.infos), c.ceiling, got, err, c.want)
		}
	}
	if _, err := HighestCommon([]Info{{Type: "flannel", Error: "missing"}}, ""); err == nil {
		t.Error("unknown versions must not give a version")
	}
}

func TestBundleVerifiesEveryBinaryAgainstItsManifest(t *testing.T) {
	src := nodetest.PluginDir(t, nodetest.Bundle)
	b, err := LoadBundle(src)
	if err != nil {
		t.Fatal(err)
	}
	if !b.Has("bridge") || !b.Has("loopback") || b.Has("flannel") {
		t.Fatalf("bundle lists %v", b.Names())
	}
	if _, err := b.Verified("bridge"); err != nil {
		t.Fatal(err)
	}
	// A copy of the bundle with one binary altered by one byte must be refused.
	dir := nodetest.Root(t)
	for _, n := range []string{ManifestName, "bridge"} {
		raw, err := os.ReadFile(filepath.Join(src, n))
		if err != nil {
			t.Fatal(err)
		}
		if n == "bridge" {
			raw[len(raw)/2] ^= 0xff
		}
		nodetest.Write(t, dir, n, raw, 0o755)
	}
	tampered, err := LoadBundle(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tampered.Verified("bridge"); err == nil || !strings.Contains(err.Error(), "does not match the manifest") {
		t.Fatalf("tampered binary: %v", err)
	}
	nodetest.Write(t, dir, ManifestName, []byte("not a manifest\n"), 0o644)
	if _, err := LoadBundle(dir); err == nil {
		t.Fatal("a malformed manifest must be refused")
	}
}
