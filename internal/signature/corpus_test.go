package signature

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
)

// corpusLine is one line of testdata/corpus.jsonl: a real message copied from a public source (or from the
// project's seeds and lab notes), with what the catalog must make of it.
type corpusLine struct {
	// Signature is the expected signature; empty means the message must not match any.
	Signature string `json:"signature"`
	// Kind is "node-condition" for a node's Ready condition message; empty for an event message.
	Kind string `json:"kind"`
	// Reason is the event reason the message came with; empty when the source is a log line.
	Reason  string `json:"reason"`
	Message string `json:"message"`
	// Params must all be present with these values (the match may carry more).
	Params map[string]string `json:"params"`
	// Action, when set, is the expected Result.Action.
	Action string `json:"action"`
	Source string `json:"source"`
	Note   string `json:"note"`

	line int
}

const corpusFile = "testdata/corpus.jsonl"

func loadCorpus(tb testing.TB) []corpusLine {
	tb.Helper()
	f, err := os.Open(corpusFile)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	var out []corpusLine
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64*1024), 1024*1024)
	for n := 1; sc.Scan(); n++ {
		var l corpusLine
		dec := json.NewDecoder(bytes.NewReader(sc.Bytes()))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&l); err != nil {
			tb.Fatalf("%s:%d: %v", corpusFile, n, err)
		}
		l.line = n
		out = append(out, l)
	}
	if err := sc.Err(); err != nil {
		tb.Fatal(err)
	}
	return out
}

// classify runs the line through s the way the detection controller would.
func (l corpusLine) classify(s *Set) (Result, bool) {
	if l.Kind == "node-condition" {
		return s.MatchNodeCondition(l.Message)
	}
	return s.Match(l.Reason, l.Message)
}

func (l corpusLine) where() string {
	msg := l.Message
	if len(msg) > 160 {
		msg = msg[:160] + "..."
	}
	return corpusFile + ":" + strconv.Itoa(l.line) + " (" + l.Source + ")\n\tmessage: " + msg
}

func TestCorpusIsClassifiedAsLabelled(t *testing.T) {
	for _, l := range loadCorpus(t) {
		got, ok := l.classify(Default())
		if l.Signature == "" {
			if ok {
				t.Errorf("%s\n\tmust match no signature, matched %s with %v", l.where(), got.Signature, got.Params)
			}
			continue
		}
		if !ok {
			t.Errorf("%s\n\tmust match %s, matched nothing", l.where(), l.Signature)
			continue
		}
		if got.Signature != l.Signature {
			t.Errorf("%s\n\tmust match %s, matched %s", l.where(), l.Signature, got.Signature)
			continue
		}
		for k, want := range l.Params {
			if got.Params[k] != want {
				t.Errorf("%s\n\tparam %s = %q, want %q (all: %v)", l.where(), k, got.Params[k], want, got.Params)
			}
		}
		if l.Action != "" && string(got.Action) != l.Action {
			t.Errorf("%s\n\taction %s, want %s", l.where(), got.Action, l.Action)
		}
	}
}

// An event's reason only narrows what may match: the message alone (a pasted log line, `classify` on plain text)
// must lead to the same signature.
func TestCorpusMessageAloneGivesTheSameSignature(t *testing.T) {
	for _, l := range loadCorpus(t) {
		if l.Kind == "node-condition" {
			continue
		}
		withReason, ok1 := Default().Match(l.Reason, l.Message)
		alone, ok2 := Default().Match("", l.Message)
		if ok1 != ok2 || withReason.Signature != alone.Signature {
			t.Errorf("%s\n\twith reason %q: %v %q; message alone: %v %q", l.where(), l.Reason, ok1, withReason.Signature, ok2, alone.Signature)
		}
	}
}

// The corpus must stay a corpus: large enough, every built-in signature represented, near-misses explained.
func TestCorpusShape(t *testing.T) {
	lines := loadCorpus(t)
	perSignature := map[string]int{}
	nearMisses := 0
	seen := map[string]int{}
	for _, l := range lines {
		if l.Source == "" {
			t.Errorf("%s:%d has no source", corpusFile, l.line)
		}
		if prev, dup := seen[l.Message]; dup {
			t.Errorf("%s:%d repeats the message of line %d", corpusFile, l.line, prev)
		}
		seen[l.Message] = l.line
		if l.Kind != "" && l.Kind != "node-condition" {
			t.Errorf("%s:%d: unknown kind %q", corpusFile, l.line, l.Kind)
		}
		if l.Signature == "" {
			nearMisses++
			if l.Note == "" {
				t.Errorf("%s:%d: a near-miss needs a note saying what it is", corpusFile, l.line)
			}
			continue
		}
		if _, ok := Lookup(v1alpha1.SignatureID(l.Signature)); !ok {
			t.Errorf("%s:%d: unknown signature %q", corpusFile, l.line, l.Signature)
		}
		perSignature[l.Signature]++
	}
	if len(lines) < 80 {
		t.Errorf("corpus has %d messages, want at least 80", len(lines))
	}
	if nearMisses < 20 {
		t.Errorf("corpus has %d near-misses, want at least 20", nearMisses)
	}
	for _, id := range v1alpha1.BuiltinSignatures {
		if perSignature[string(id)] == 0 {
			t.Errorf("no corpus message for %s", id)
		}
	}
}

// "no IP ranges specified" (host-local with no usable range) does not say why the range is unusable: no cause
// signature may name it, the family sends it to the node's diagnosis, which reads the IPAM configuration.
func TestNoIPRangesSpecifiedIsNamedOnlyByTheFamily(t *testing.T) {
	n := 0
	for _, l := range loadCorpus(t) {
		if !strings.Contains(l.Message, "no IP ranges specified") {
			continue
		}
		n++
		got, ok := Default().Match("", l.Message)
		if !ok || got.Signature != string(v1alpha1.SignatureCNIUnclassified) || got.Action != v1alpha1.ActionDiagnose {
			t.Errorf("%s\n\tmust be the %s family with Diagnose, got %v %q %s", l.where(), v1alpha1.SignatureCNIUnclassified, ok, got.Signature, got.Action)
		}
	}
	if n < 3 {
		t.Errorf("corpus has %d messages with \"no IP ranges specified\", want at least 3", n)
	}
}

// An agent's own readiness probe on the socket or port its CNI plugin uses is not a sandbox failure, whatever
// the reason it comes with: the daemon-unavailable patterns need the plugin's request, not just the address.
func TestAnAgentReadinessProbeIsNotADaemonUnavailableSandbox(t *testing.T) {
	n := 0
	for _, l := range loadCorpus(t) {
		if l.Reason != "Unhealthy" {
			continue
		}
		n++
		for _, reason := range []string{"", l.Reason, ReasonFailedCreatePodSandBox} {
			if got, ok := Default().Match(reason, l.Message); ok {
				t.Errorf("%s\n\twith reason %q matched %s", l.where(), reason, got.Signature)
			}
		}
	}
	if n < 2 {
		t.Errorf("corpus has %d readiness-probe near-misses, want at least 2", n)
	}
}
