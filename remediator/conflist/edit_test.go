package conflist

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

// seedConflist is the runbook's example conflist (the seed's 10-containerd-net.conflist), with a vendor field.
const seedConflist = `{
 "cniVersion": "1.0.0",
 "name": "containerd-net",
 "plugins": [
   {
     "type": "bridge",
     "bridge": "cni0",
     "isGateway": true,
     "ipMasq": true,
     "promiscMode": true,
     "ipam": {
       "type": "host-local",
       "ranges": [
         [{
           "subnet": "10.88.0.0/16"
         }],
         [{
           "subnet": "2001:db8:4860::/64"
         }]
       ],
       "routes": [
         { "dst": "0.0.0.0/0" },
         { "dst": "::/0" }
       ]
     }
   },
   {
     "type": "portmap",
     "capabilities": {"portMappings": true},
     "externalSetMarkChain": "KUBE-MARK-MASQ"
   }
 ],
 "x-vendor": {"mtu": 1450.0, "big": 12345678901234567890}
}
`

func TestSetCNIVersionChangesOnlyTheValue(t *testing.T) {
	out, err := SetCNIVersion([]byte(seedConflist), "0.4.0")
	if err != nil {
		t.Fatal(err)
	}
	want := strings.Replace(seedConflist, `"cniVersion": "1.0.0"`, `"cniVersion": "0.4.0"`, 1)
	if string(out) != want {
		t.Fatalf("edit changed more than the value:\n%s", UnifiedDiff("/x", []byte(want), out))
	}
	// Number spelling survives byte for byte, which a map round-trip would lose (1450.0 -> 1450, and the big
	// integer would turn into a float).
	if !bytes.Contains(out, []byte(`"mtu": 1450.0, "big": 12345678901234567890`)) {
		t.Fatal("numbers were respelled")
	}
}

func TestSetCNIVersionAddsMissingFirstInTheFileStyle(t *testing.T) {
	in := strings.Replace(seedConflist, " \"cniVersion\": \"1.0.0\",\n", "", 1)
	out, err := SetCNIVersion([]byte(in), "1.0.0")
	if err != nil {
		t.Fatal(err)
	}
	if string(out) != seedConflist {
		t.Fatalf("added cniVersion is not where and how the file would have it:\n%s", UnifiedDiff("/x", []byte(seedConflist), out))
	}
	compact := `{"name":"n","plugins":[{"type":"bridge"}]}`
	out, err = SetCNIVersion([]byte(compact), "0.3.1")
	if err != nil {
		t.Fatal(err)
	}
	if string(out) != `{"cniVersion":"0.3.1","name":"n","plugins":[{"type":"bridge"}]}` {
		t.Fatalf("compact file: %s", out)
	}
}

func TestSetCNIVersionRewritesDuplicatesAndEscapedNames(t *testing.T) {
	// "cni\u0056ersion" is the same member name; libcni's map decode keeps the last of duplicates.
	in := `{"cniVersion":"0.1.0","name":"n","cni\u0056ersion":"1.0.0","plugins":[{"type":"bridge","cniVersion":"9.9.9"}]}`
	out, err := SetCNIVersion([]byte(in), "0.4.0")
	if err != nil {
		t.Fatal(err)
	}
	want := `{"cniVersion":"0.4.0","name":"n","cni\u0056ersion":"0.4.0","plugins":[{"type":"bridge","cniVersion":"9.9.9"}]}`
	if string(out) != want {
		t.Fatalf("got %s\nwant %s", out, want)
	}
	list, err := Parse("x.conflist", out)
	if err != nil || list.CNIVersion != "0.4.0" {
		t.Fatalf("libcni reads %v, %v", list, err)
	}
}

func TestSetCNIVersionRefusesWhatIsNotAnObject(t *testing.T) {
	for _, in := range []string{`{"cniVersion": "1.0.0",`, `[1,2]`, `"x"`, ``, `{} {}`} {
		if out, err := SetCNIVersion([]byte(in), "1.0.0"); err == nil {
			t.Errorf("%q was edited into %q; want a refusal", in, out)
		}
	}
}

func TestSelectStopsAtTheFirstFileThatDoesNotLoad(t *testing.T) {
	files := []File{{Path: "/a.conflist"}, {Path: "/b.conflist", ParseError: "bad"}, {Path: "/c.conflist"}}
	sel := Select(files, 1)
	if len(sel.Loaded) != 1 || sel.Loaded[0] != 0 || sel.Blocking != -1 {
		t.Fatalf("max_conf_num 1: %+v", sel)
	}
	sel = Select(files, 0)
	if len(sel.Loaded) != 0 || sel.Blocking != 1 || !strings.Contains(sel.Reason, "/b.conflist") {
		t.Fatalf("all files: %+v", sel)
	}
}

// FuzzSetCNIVersion: whatever the input, the edit never panics; when it succeeds the result is JSON that decodes
// to the input with only cniVersion changed, and every byte outside the cniVersion value(s) is the input's.
func FuzzSetCNIVersion(f *testing.F) {
	f.Add([]byte(seedConflist), "0.4.0")
	f.Add([]byte(`{"name":"n","plugins":[{"type":"bridge"}]}`), "1.1.0")
	f.Add([]byte(`{ "cniVersion" : 1, "cniVersion": "x" }`), "0.3.1")
	f.Add([]byte("{\n\t\"a\": {\"cniVersion\": \"nested\"}\n}"), "1.0.0")
	f.Add([]byte(`{}`), "")
	f.Fuzz(func(t *testing.T, in []byte, version string) {
		out, err := SetCNIVersion(in, version)
		if err != nil {
			return
		}
		if !json.Valid(out) {
			t.Fatalf("result is not JSON: %q", out)
		}
		var a, b map[string]any
		if err := decodeNumbers(in, &a); err != nil {
			t.Fatalf("accepted input that does not decode: %v", err)
		}
		if err := decodeNumbers(out, &b); err != nil {
			t.Fatal(err)
		}
		if got, _ := b["cniVersion"].(string); got != version {
			t.Fatalf("cniVersion is %q, want %q", got, version)
		}
		delete(a, "cniVersion")
		delete(b, "cniVersion")
		ja, _ := json.Marshal(a)
		jb, _ := json.Marshal(b)
		if !bytes.Equal(ja, jb) {
			t.Fatalf("other members changed:\n%s\n%s", ja, jb)
		}
		// Outside the edited values, the bytes are the input's.
		if _, had := TopLevelString(in, "cniVersion"); had {
			if stripped(t, in) != stripped(t, out) {
				t.Fatalf("bytes outside cniVersion changed:\n%q\n%q", in, out)
			}
			return
		}
		// An added member is inserted right after the opening brace and nothing else moves.
		open := bytes.IndexByte(in, '{') + 1
		if !bytes.HasPrefix(out, in[:open]) || !bytes.HasSuffix(out, in[open:]) {
			t.Fatalf("adding cniVersion changed other bytes:\n%q\n%q", in, out)
		}
		middle := bytes.TrimSpace(out[open : len(out)-len(in[open:])])
		if !bytes.HasPrefix(middle, []byte(`"cniVersion"`)) {
			t.Fatalf("inserted text is not the cniVersion member: %q", middle)
		}
	})
}

// stripped removes the values of top-level cniVersion members, leaving the rest of the text.
func stripped(t *testing.T, raw []byte) string {
	members, err := topLevelMembers(raw)
	if err != nil {
		t.Fatal(err)
	}
	var b []byte
	last := 0
	for _, m := range members {
		if m.key == "cniVersion" {
			b = append(b, raw[last:m.start]...)
			last = m.end
		}
	}
	return string(append(b, raw[last:]...))
}
