package signature

import "slices"

// naiveMatch is the reference the prefiltered matcher must agree with, and the benchmarks' baseline: normalise
// the message, then try every expression of the Set in precedence order. It shares Set's rules and result
// building, so any difference from Set.match comes from the reason check and the scanner.
func naiveMatch(s *Set, from evidence, reason, message string) (Result, bool) {
	if from == fromEvent && reason != "" && !slices.Contains(s.reasons, reason) {
		return Result{}, false
	}
	normalized := normalize(message)
	for i := range s.rules {
		r := &s.rules[i]
		if !r.accepts(from, reason) {
			continue
		}
		loc, ok := r.find(normalized)
		if !ok {
			continue
		}
		if !r.enabled {
			return Result{}, false
		}
		return r.result(normalized, loc, nil), true
	}
	return Result{}, false
}
