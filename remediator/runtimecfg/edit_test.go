package runtimecfg

import (
	"strings"
	"testing"
)

// calicoSeed is containerd 1.6's default config as in the Calico seed, with comments that must survive.
const calicoSeed = `# containerd config, managed by hand
version = 2

[plugins]
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = "registry.k8s.io/pause:3.6" # pinned

    [plugins."io.containerd.grpc.v1.cri".cni]
      # where the CNI provider puts things
      bin_dir = "/opt/cni/bin"
      conf_dir = "/etc/cni/net.d"
      conf_template = ""
      ip_pref = ""
      max_conf_num = 1

    [plugins."io.containerd.grpc.v1.cri".containerd]
      snapshotter = "overlayfs"
`

func ptr[T any](v T) *T { return &v }

func TestEditReplacesValuesInPlaceKeepingComments(t *testing.T) {
	out, changes, err := Edit([]byte(calicoSeed), true, Want{ConfDir: "/etc/cni/net.d", ConfTemplate: ptr("10-calico.conflist"), MaxConfNum: ptr(1)})
	if err != nil {
		t.Fatal(err)
	}
	want := strings.Replace(calicoSeed, `conf_template = ""`, `conf_template = "10-calico.conflist"`, 1)
	if string(out) != want {
		t.Fatalf("got:\n%s", out)
	}
	if len(changes) != 1 || changes[0].Key != "conf_template" {
		t.Fatalf("changes: %+v", changes)
	}
}

func TestEditInsertsMissingKeysNextToTheirSiblings(t *testing.T) {
	in := strings.Replace(calicoSeed, "      max_conf_num = 1\n", "", 1)
	in = strings.Replace(in, `      bin_dir = "/opt/cni/bin"`+"\n", "", 1)
	out, _, err := Edit([]byte(in), true, Want{BinDir: "/usr/lib/cni", MaxConfNum: ptr(2)})
	if err != nil {
		t.Fatal(err)
	}
	want := strings.Replace(in, `      ip_pref = ""`+"\n", `      ip_pref = ""`+"\n"+`      bin_dir = "/usr/lib/cni"`+"\n      max_conf_num = 2\n", 1)
	if string(out) != want {
		t.Fatalf("got:\n%s\nwant:\n%s", out, want)
	}
	c := readBytes(t, out)
	if c.Settings.BinDirs[0] != "/usr/lib/cni" || c.Settings.MaxConfNum != 2 {
		t.Fatalf("read back: %+v", c.Settings)
	}
}

func TestEditVersion3AndTheOtherSpellings(t *testing.T) {
	cases := []struct {
		name, in, want string
		w              Want
	}{{
		name: "version 3 writes bin_dirs",
		in:   "version = 3\n\n[plugins.\"io.containerd.cri.v1.runtime\".cni]\n  conf_dir = \"/etc/cni/net.d\" # keep\n",
		w:    Want{BinDir: "/usr/lib/cni"},
		want: "version = 3\n\n[plugins.\"io.containerd.cri.v1.runtime\".cni]\n  conf_dir = \"/etc/cni/net.d\" # keep\n  bin_dirs = [\"/usr/lib/cni\"]\n",
	}, {
		name: "version 3 keeps an old bin_dir spelling",
		in:   "version = 3\n[plugins.'io.containerd.cri.v1.runtime'.cni]\nbin_dir = '/opt/cni/bin'\n",
		w:    Want{BinDir: "/usr/lib/cni"},
		want: "version = 3\n[plugins.'io.containerd.cri.v1.runtime'.cni]\nbin_dir = \"/usr/lib/cni\"\n",
	}, {
		name: "dotted keys under the CRI table",
		in:   "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\"]\n  cni.conf_dir = \"/x\"\n  enable_selinux = false\n",
		w:    Want{ConfDir: "/etc/cni/net.d", MaxConfNum: ptr(1 + 2)},
		want: "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\"]\n  cni.conf_dir = \"/etc/cni/net.d\"\n  cni.max_conf_num = 3\n  enable_selinux = false\n",
	}, {
		name: "inline table",
		in:   "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\"]\ncni = { conf_dir = \"/x\" }\n",
		w:    Want{ConfDir: "/etc/cni/net.d", ConfTemplate: ptr("t")},
		want: "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\"]\ncni = { conf_dir = \"/etc/cni/net.d\", conf_template = \"t\" }\n",
	}, {
		name: "no CNI table at all",
		in:   "version = 2\n# nothing else\n",
		w:    Want{ConfDir: "/srv/cni"},
		want: "version = 2\n# nothing else\n\n[plugins.\"io.containerd.grpc.v1.cri\".cni]\n  conf_dir = \"/srv/cni\"\n",
	}, {
		name: "version 1",
		in:   "[plugins.cri.cni]\r\n  conf_dir = \"/x\"\r\n",
		w:    Want{ConfDir: "/etc/cni/net.d"},
		want: "[plugins.cri.cni]\r\n  conf_dir = \"/etc/cni/net.d\"\r\n",
	}}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			out, _, err := Edit([]byte(c.in), true, c.w)
			if err != nil {
				t.Fatal(err)
			}
			if string(out) != c.want {
				t.Fatalf("got:\n%q\nwant:\n%q", out, c.want)
			}
		})
	}
}

func TestEditLeavesDefaultsAloneAndRefusesBrokenFiles(t *testing.T) {
	out, changes, err := Edit(nil, false, Want{BinDir: DefaultBinDir, ConfDir: DefaultConfDir, MaxConfNum: ptr(1)})
	if err != nil || out != nil || changes != nil {
		t.Fatalf("writing containerd's own defaults into a missing file: %q %v %v", out, changes, err)
	}
	_, _, err = Edit([]byte("version = 2\n[plugins\nbin_dir = 1\n"), true, Want{ConfDir: "/x"})
	if err == nil || !strings.Contains(err.Error(), "line 2") {
		t.Fatalf("a file that does not parse must be refused with its position, got %v", err)
	}
}

func readBytes(t *testing.T, raw []byte) Config {
	t.Helper()
	doc, err := decode(raw)
	if err != nil {
		t.Fatal(err)
	}
	c := Config{Version: versionOf(doc)}
	cni, _ := lookup(doc, CNITable(c.Version)).(map[string]any)
	c.Settings.MaxConfNum = DefaultMaxConfNum
	if v, ok := cni["bin_dir"].(string); ok {
		c.Settings.BinDirs = []string{v}
	}
	if v, ok := cni["max_conf_num"].(int64); ok {
		c.Settings.MaxConfNum = int(v)
	}
	return c
}

// FuzzEdit: whatever config.toml holds, the edit never panics, and an accepted edit decodes to the original
// document with exactly the wanted CNI settings (Edit checks that itself; the fuzz test checks it again from the
// outside and that the comments survive).
func FuzzEdit(f *testing.F) {
	f.Add([]byte(calicoSeed), "/usr/lib/cni", "/etc/cni/net.d", "x.conflist", 3)
	f.Add([]byte("version = 3\n"), "/a", "", "", -1)
	f.Add([]byte("version = 2\n[plugins.\"io.containerd.grpc.v1.cri\"]\ncni = {}\n"), "", "/b", "", 0)
	f.Add([]byte("[plugins.cri]\ncni.bin_dir = \"/q\" # c\n"), "/r", "", "", 1)
	f.Fuzz(func(t *testing.T, in []byte, bin, conf, tmpl string, maxConf int) {
		w := Want{BinDir: bin, ConfDir: conf}
		if tmpl != "" {
			w.ConfTemplate = &tmpl
		}
		if maxConf >= 0 {
			w.MaxConfNum = &maxConf
		}
		out, changes, err := Edit(in, true, w)
		if err != nil {
			return
		}
		after, err := decode(out)
		if err != nil {
			t.Fatalf("accepted edit does not parse: %v\n%q", err, out)
		}
		before, _ := decode(in)
		cni, _ := lookup(after, CNITable(versionOf(after))).(map[string]any)
		if conf != "" && len(changes) > 0 {
			if v, ok := cni["conf_dir"]; ok && v != conf {
				t.Fatalf("conf_dir is %v, want %q", v, conf)
			}
		}
		if versionOf(before) != versionOf(after) {
			t.Fatal("config version changed")
		}
		// Comments are text the decoder does not see: every comment line of the input is still in the output.
		for _, line := range strings.Split(string(in), "\n") {
			if l := strings.TrimSpace(line); strings.HasPrefix(l, "#") && !strings.Contains(string(out), l) {
				t.Fatalf("comment %q lost", l)
			}
		}
	})
}
