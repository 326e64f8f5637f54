package signature

import (
	"slices"
	"strings"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
)

// compiledExtractor is an Extractor with its stop bytes in a table.
type compiledExtractor struct {
	Extractor
	stops [256]bool
	// gates[i] is the scanner piece After[i] contains (-1 for none): a literal whose piece the scanner did not
	// find cannot be in the message, and is not searched for.
	gates []int
}

func compileExtractor(e Extractor) compiledExtractor {
	c := compiledExtractor{Extractor: e}
	for b := 0; b < 256; b++ {
		c.stops[b] = strings.IndexByte(e.Stop, byte(b)) >= 0 || (e.Only != "" && strings.IndexByte(e.Only, byte(b)) < 0)
	}
	return c
}

// value returns the value after the first occurrence of one of After or, with All, the values after every
// occurrence, comma-separated in message order without repeats; "" when there is none. found, when not nil, is
// what the scanner found in the message.
func (e *compiledExtractor) value(s string, found *pieceSet) string {
	var all []string
	for from := 0; from < len(s); {
		// The earliest occurrence of any of the After texts.
		at, lit := -1, ""
		for k, a := range e.After {
			if found != nil && e.gates[k] >= 0 && !found.has(e.gates[k]) {
				continue
			}
			if i := strings.Index(s[from:], a); i >= 0 && (at < 0 || from+i < at) {
				at, lit = from+i, a
			}
		}
		if at < 0 {
			break
		}
		start := at + len(lit)
		end := start
		for end < len(s) && !e.stops[s[end]] {
			end++
		}
		if v := cleanParam(e.Param, s[start:end]); len(v) >= max(e.MinLen, 1) {
			if !e.All {
				return v
			}
			if !slices.Contains(all, v) {
				all = append(all, v)
			}
		}
		from = max(end, start+1)
	}
	return strings.Join(all, ",")
}

// cleanParam puts a raw parameter value into the form the repair expects.
func cleanParam(key, v string) string {
	v = strings.TrimSpace(v)
	switch key {
	case v1alpha1.ParamSupportedVersions:
		// `"0.1.0" "0.2.0"` (or a truncated list) -> 0.1.0,0.2.0
		return strings.Join(strings.FieldsFunc(v, func(r rune) bool {
			return !(r == '.' || r == '-' || r == '+' || '0' <= r && r <= '9' || 'a' <= r && r <= 'z' || 'A' <= r && r <= 'Z')
		}), ",")
	case v1alpha1.ParamAddress:
		// "dial tcp 10.96.0.1:443: i/o timeout"
		return strings.TrimRight(v, ":")
	case v1alpha1.ParamPath:
		return strings.Join(strings.Fields(v), ",")
	case v1alpha1.ParamConfDir:
		// CRI-O writes "in /etc/cni/net.d/. Has your network provider started?"; sources cut short add "...".
		v = strings.TrimRight(v, ".")
		if len(v) > 1 {
			v = strings.TrimSuffix(v, "/")
		}
		return v
	}
	return v
}
