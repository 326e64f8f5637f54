package signature

import (
	"maps"
	"testing"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
)

// fuzzCustom exercises the prefilter on patterns written the way policies write them: case-insensitive, with
// quotes, alternations and named groups, including the runes whose case folding leaves ASCII.
var fuzzCustom = []v1alpha1.CustomSignature{
	{Name: "fold", Pattern: `(?i)kubelet (?:says|reports) "(?P<what>[^"]+)"`, Action: v1alpha1.ActionDiagnose},
	{Name: "alt", Pattern: `site-agent (?:down|unreachable)|rack (?P<rack>[0-9]+) offline`, Action: v1alpha1.ActionEscalate, Reasons: []string{ReasonFailedCreatePodSandBox, ReasonFailedSync}},
	{Name: "anchored", Pattern: `^\s*ERR(?:OR)?\s+cni:\s+(?P<detail>.+)$`, Action: v1alpha1.ActionDiagnose},
}

// FuzzMatch checks that classification never panics, is deterministic, agrees exactly with the naive loop over
// every expression (the prefilter may only skip what cannot match), and only produces valid signatures and actions.
func FuzzMatch(f *testing.F) {
	for _, l := range loadCorpus(f) {
		f.Add(l.Reason, l.Message)
	}
	f.Add("", "kubelet says \"ok\" and KUBELET REPORTS \"x\"")
	f.Add(ReasonFailedCreatePodSandBox, "\u212aubelet says \"kelvin\"")
	f.Add(ReasonFailedSync, "rack 42 offline")
	f.Add("", "  ERROR  cni:  it broke")
	f.Add(ReasonFailedKillPod, `invalid version \\\"\\\": the version is empty`)

	custom, errs := Compile(nil, fuzzCustom)
	if len(errs) > 0 {
		f.Fatal(errs)
	}
	sets := []*Set{Default(), custom}
	known := map[string]bool{"fold": true, "alt": true, "anchored": true}
	for _, id := range v1alpha1.BuiltinSignatures {
		known[string(id)] = true
	}

	f.Fuzz(func(t *testing.T, reason, message string) {
		for _, s := range sets {
			for _, from := range []evidence{fromEvent, fromNodeCondition} {
				got, ok := classifyAs(s, from, reason, message)
				again, ok2 := classifyAs(s, from, reason, message)
				if ok != ok2 || !sameResult(got, again) {
					t.Fatalf("not deterministic: %+v then %+v", got, again)
				}
				want, wantOK := naiveMatch(s, from, reason, message)
				if ok != wantOK || !sameResult(got, want) {
					t.Fatalf("prefiltered %v %+v, naive %v %+v (reason %q, message %q)", ok, got, wantOK, want, reason, message)
				}
				if !ok {
					continue
				}
				if !known[got.Signature] {
					t.Fatalf("unknown signature %q", got.Signature)
				}
				if !IsValidAction(got.Action) || (got.Alternative != "" && !IsValidAction(got.Alternative)) {
					t.Fatalf("invalid action %q / %q", got.Action, got.Alternative)
				}
				for k, v := range got.Params {
					if k == "" || v == "" {
						t.Fatalf("empty parameter %q=%q", k, v)
					}
				}
			}
		}
	})
}

// classifyAs goes through the exported entry points, as the detection controller does.
func classifyAs(s *Set, from evidence, reason, message string) (Result, bool) {
	if from == fromNodeCondition {
		return s.MatchNodeCondition(message)
	}
	return s.Match(reason, message)
}

func sameResult(a, b Result) bool {
	return a.Signature == b.Signature && a.Custom == b.Custom && a.Action == b.Action &&
		a.Alternative == b.Alternative && maps.Equal(a.Params, b.Params)
}

// FuzzMatch proves agreement, not selectivity: check that the custom patterns did get pieces, so that the
// agreement is tested through the prefilter and not around it.
func TestFuzzCustomPatternsArePrefiltered(t *testing.T) {
	s, _ := Compile(nil, fuzzCustom)
	for _, r := range s.rules {
		if r.custom && r.always {
			t.Errorf("%s has no piece to prefilter on", r.signature)
		}
	}
}
