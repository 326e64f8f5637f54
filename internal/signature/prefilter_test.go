package signature

import (
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
)

func TestNormalize(t *testing.T) {
	cases := []struct{ in, want string }{
		{`plugin type="calico"`, `plugin type="calico"`},
		{`plugin type=\"calico\"`, `plugin type="calico"`},
		{`plugin type=\\\"calico\\\"`, `plugin type="calico"`},
		{`sandbox \\\\\\\"e0f6\\\\\\\"`, `sandbox "e0f6"`},
		// Backslashes that do not escape a quote are text (Windows paths, \n written out in a log).
		{`C:\opt\cni\bin and \n`, `C:\opt\cni\bin and \n`},
		{"trailing backslash \\", "trailing backslash \\"},
		{"failed to set up\n    sandbox\r\n\tcontainer", "failed to set up sandbox container"},
		{"two  spaces", "two spaces"},
		{"", ""},
	}
	for _, c := range cases {
		if got := normalize(c.in); got != c.want {
			t.Errorf("normalize(%q) = %q, want %q", c.in, got, c.want)
		}
		if got := normalize(c.want); got != c.want {
			t.Errorf("normalize is not idempotent on %q: %q", c.want, got)
		}
	}
}

func TestNormalizeDoesNotAllocateWhenNothingChanges(t *testing.T) {
	msg := `Failed to create pod sandbox: rpc error: code = Unknown desc = failed to get sandbox image "k8s.gcr.io/pause:3.5"`
	if n := testing.AllocsPerRun(100, func() { _ = normalize(msg) }); n != 0 {
		t.Errorf("normalize allocated %v times on a clean message", n)
	}
}

func TestTriggers(t *testing.T) {
	cases := []struct {
		pattern string
		want    [][]string
	}{
		{`cni plugin not initialized`, [][]string{{"cni plugin not initializ"}}},
		// Quotes split pieces (the raw message may escape them); short leftovers are dropped.
		{`invalid version "": the version is empty`, [][]string{{": the version is empty", "invalid version "}}},
		// Optional and alternative parts break contiguity; what surrounds them is still required.
		{`abcdef(?:x|y)ghijk`, [][]string{{"abcdef", "ghijk"}}},
		{`failed (?:to )?find plugin`, [][]string{{"find plugin", "failed "}}},
		// A top-level alternation gives one trigger per branch.
		{`subnet\.env|nodename`, [][]string{{"subnet.env"}, {"nodename"}}},
		// No literal at all: the empty trigger means "always try".
		{`^.*$`, [][]string{nil}},
		{`[a-z]+`, [][]string{nil}},
		// (?i) folds: ASCII letters are fine, k and s fold to the Kelvin sign and the long s, which an ASCII
		// comparison would miss, so they split the piece.
		{`(?i)NetworkPluginNotReady`, [][]string{{"pluginnotready", "networ"}}},
		{`(?i)cni plugin not initialized`, [][]string{{"cni plugin not initialized"[:maxPieceLen]}}},
		{`(?i)kubelet`, [][]string{{"ubelet"}}},
		{`(?i)unauthorised`, [][]string{{"unauthori"}}},
		// x+ guarantees one x; x* nothing.
		{`(?:abc)+def`, [][]string{{"abcdef", "abc"}}},
		{`(?:abc)*defg`, [][]string{{"defg"}}},
		// Whitespace in a piece matches any run of whitespace in the message.
		{"no\n  networks\tfound", [][]string{{"no networks found"}}},
	}
	for _, c := range cases {
		got, err := triggers(c.pattern)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, c.want) {
			t.Errorf("triggers(%q) = %q, want %q", c.pattern, got, c.want)
		}
	}
}

func TestScannerFindsPiecesWhateverTheirCaseAndWrapping(t *testing.T) {
	sc := newScanner([]string{"he", "she", "his", "hers", "cni plugin not", "a b"})
	cases := []struct {
		text string
		want []int
	}{
		// The classic Aho-Corasick case: overlapping pieces that end at the same byte.
		{"ushers", []int{0, 1, 3}},
		{"USHERS", []int{0, 1, 3}},
		{"Network plugin returns error: CNI plugin\n   not initialized", []int{4}},
		{"a\t\n b", []int{5}},
		{"ab", nil},
		{"", nil},
	}
	for _, c := range cases {
		found := sc.scan(c.text)
		var want pieceSet
		for _, i := range c.want {
			want.add(i)
		}
		if found != want {
			t.Errorf("scan(%q) = %v, want pieces %v", c.text, found, c.want)
		}
	}
}

func TestScanAndNonMatchDoNotAllocate(t *testing.T) {
	miss := `Failed to create pod sandbox: rpc error: code = Unknown desc = failed to get sandbox image \"k8s.gcr.io/pause:3.5\": failed to pull image`
	s := Default()
	if n := testing.AllocsPerRun(100, func() { s.scanner.scan(miss) }); n != 0 {
		t.Errorf("scan allocated %v times", n)
	}
	if n := testing.AllocsPerRun(100, func() { s.Match(ReasonFailedCreatePodSandBox, miss) }); n != 0 {
		t.Errorf("a non-matching message allocated %v times", n)
	}
	if n := testing.AllocsPerRun(100, func() { s.Match("Pulled", "Successfully pulled image") }); n != 0 {
		t.Errorf("an uninteresting reason allocated %v times", n)
	}
}

// The two-chain scan must find exactly what one chain finds, wherever the split falls: inside a piece, inside a
// long whitespace run, right after one.
func TestScanHalvesAgreeWithOneWalk(t *testing.T) {
	sc := Default().scanner
	rng := rand.New(rand.NewPCG(1, 2))
	alphabet := []string{"cni", " ", "  ", "\n\t ", "plugin", "not", "initialized", "no ip addresses available", "in range set",
		"\"", "\\", "failed to find plugin", "x", "NetworkPluginNotReady", "subnet.env", "/run/flannel/"}
	for i := 0; i < 20000; i++ {
		var b strings.Builder
		for n := rng.IntN(60); n > 0; n-- {
			b.WriteString(alphabet[rng.IntN(len(alphabet))])
		}
		msg := b.String()
		var want pieceSet
		sc.walk(msg, &want)
		if got := sc.scan(msg); got != want {
			t.Fatalf("scan(%q) = %v, one walk %v", msg, got, want)
		}
	}
}

// normalizeReference states normalize's rules one byte at a time; normalize copies unchanged text in chunks and
// must agree with it on anything.
func normalizeReference(s string) string {
	var b strings.Builder
	prevSpace := false
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '\\':
			j := i
			for j < len(s) && s[j] == '\\' {
				j++
			}
			if j == len(s) || s[j] != '"' {
				b.WriteString(s[i:j])
			}
			i, prevSpace = j-1, false
		case isSpace(c):
			if !prevSpace {
				b.WriteByte(' ')
			}
			prevSpace = true
		default:
			b.WriteByte(c)
			prevSpace = false
		}
	}
	return b.String()
}

func TestNormalizeAgreesWithTheReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	parts := []string{"a", "bc", " ", "  ", "\n", "\t\r\n ", `\`, `\\`, `"`, `\"`, `\\\"`, "é", "x y"}
	for i := 0; i < 50000; i++ {
		var b strings.Builder
		for n := rng.IntN(12); n > 0; n-- {
			b.WriteString(parts[rng.IntN(len(parts))])
		}
		s := b.String()
		if got, want := normalize(s), normalizeReference(s); got != want {
			t.Fatalf("normalize(%q) = %q, reference %q", s, got, want)
		}
	}
}
