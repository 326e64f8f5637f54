package signature

import (
	"regexp/syntax"
	"sort"
	"strings"
	"unicode"
)

// The prefilter derives, from a regular expression, literal pieces that every string it matches must contain, so
// that the scanner can rule a message out without running the expression. Soundness is the only requirement: a
// piece may be missing (fewer pieces only means more messages reach the expression), but a piece must never be
// required that a match could lack. FuzzMatch checks that the prefiltered matcher and the naive loop over every
// expression always agree.

const (
	// minPieceLen drops pieces too short to be selective: they would make most messages candidates.
	minPieceLen = 3
	// maxPieceLen bounds the automaton's size; any substring of a required piece is required too.
	maxPieceLen = 24
	// maxPiecesPerTrigger keeps the longest pieces of an alternative; the others add little selectivity.
	maxPiecesPerTrigger = 3
)

// triggers returns, for each top-level alternative of the expression, the pieces that alternative's matches must
// contain. A message can match only if it contains every piece of some alternative. An alternative with no piece
// (such as `.*`) comes back empty: the expression must then be tried on every message.
func triggers(pattern string) ([][]string, error) {
	re, err := syntax.Parse(pattern, syntax.Perl)
	if err != nil {
		return nil, err
	}
	re = re.Simplify()
	for re.Op == syntax.OpCapture {
		re = re.Sub[0]
	}
	alternatives := []*syntax.Regexp{re}
	if re.Op == syntax.OpAlternate {
		alternatives = re.Sub
	}
	out := make([][]string, 0, len(alternatives))
	for _, alt := range alternatives {
		out = append(out, analyze(alt).pieces())
	}
	return out, nil
}

// litInfo is what an expression guarantees about the literal text of every string it matches.
type litInfo struct {
	// exact is set when the expression matches only s.
	exact bool
	s     string
	// Otherwise every match starts with prefix, ends with suffix and contains each of inner.
	prefix, suffix string
	inner          []string
}

func analyze(re *syntax.Regexp) litInfo {
	switch re.Op {
	case syntax.OpEmptyMatch, syntax.OpBeginLine, syntax.OpEndLine, syntax.OpBeginText, syntax.OpEndText,
		syntax.OpWordBoundary, syntax.OpNoWordBoundary:
		// Zero-width: they keep their neighbours contiguous.
		return litInfo{exact: true}
	case syntax.OpLiteral:
		if re.Flags&syntax.FoldCase == 0 {
			return litInfo{exact: true, s: string(re.Rune)}
		}
		return foldLiteral(re.Rune)
	case syntax.OpCapture:
		return analyze(re.Sub[0])
	case syntax.OpConcat:
		acc := litInfo{exact: true}
		for _, sub := range re.Sub {
			acc = concat(acc, analyze(sub))
		}
		return acc
	case syntax.OpPlus:
		return atLeastOnce(analyze(re.Sub[0]))
	case syntax.OpRepeat:
		if re.Min >= 1 {
			return atLeastOnce(analyze(re.Sub[0]))
		}
		return litInfo{}
	default:
		// Star, quest, alternation inside a concatenation, classes, any character: nothing is guaranteed.
		return litInfo{}
	}
}

// foldLiteral handles a case-insensitive literal. The scanner folds ASCII case only, so a rune is usable only when
// its whole case-folding orbit is ASCII: (?i)k also matches the Kelvin sign and (?i)s the long s, which an ASCII
// comparison would miss. Such runes split the literal into pieces.
func foldLiteral(runes []rune) litInfo {
	var segments []string
	var cur strings.Builder
	startsSafe, endsSafe := len(runes) > 0 && asciiFoldable(runes[0]), len(runes) > 0 && asciiFoldable(runes[len(runes)-1])
	for _, r := range runes {
		if asciiFoldable(r) {
			cur.WriteRune(r)
			continue
		}
		segments = append(segments, cur.String())
		cur.Reset()
	}
	segments = append(segments, cur.String())
	if len(segments) == 1 {
		return litInfo{exact: true, s: segments[0]}
	}
	info := litInfo{}
	if startsSafe {
		info.prefix = segments[0]
	}
	if endsSafe {
		info.suffix = segments[len(segments)-1]
	}
	info.inner = segments[1 : len(segments)-1]
	return info
}

// asciiFoldable reports whether every rune r case-folds to is ASCII.
func asciiFoldable(r rune) bool {
	if r >= 0x80 {
		return false
	}
	for f := unicode.SimpleFold(r); f != r; f = unicode.SimpleFold(f) {
		if f >= 0x80 {
			return false
		}
	}
	return true
}

func concat(a, b litInfo) litInfo {
	switch {
	case a.exact && b.exact:
		return litInfo{exact: true, s: a.s + b.s}
	case a.exact:
		return litInfo{prefix: a.s + b.prefix, suffix: b.suffix, inner: b.inner}
	case b.exact:
		return litInfo{prefix: a.prefix, suffix: a.suffix + b.s, inner: a.inner}
	default:
		inner := make([]string, 0, len(a.inner)+len(b.inner)+1)
		inner = append(inner, a.inner...)
		inner = append(inner, b.inner...)
		inner = append(inner, a.suffix+b.prefix)
		return litInfo{prefix: a.prefix, suffix: b.suffix, inner: inner}
	}
}

// atLeastOnce describes one or more repetitions of an expression: each match starts and ends with one of them.
func atLeastOnce(i litInfo) litInfo {
	if i.exact {
		return litInfo{prefix: i.s, suffix: i.s}
	}
	return litInfo{prefix: i.prefix, suffix: i.suffix, inner: i.inner}
}

// pieces turns the guarantees into scanner pieces in the scanner's alphabet: split at quotes (the raw message may
// escape them), whitespace folded, ASCII lower case, long enough to be selective, the longest few kept.
func (i litInfo) pieces() []string {
	var raw []string
	if i.exact {
		raw = []string{i.s}
	} else {
		raw = append([]string{i.prefix, i.suffix}, i.inner...)
	}
	seen := map[string]bool{}
	var out []string
	for _, r := range raw {
		for _, part := range strings.Split(r, `"`) {
			p := scannerForm(part)
			if len(p) > maxPieceLen {
				p = p[:maxPieceLen]
			}
			if len(p) < minPieceLen || seen[p] {
				continue
			}
			seen[p] = true
			out = append(out, p)
		}
	}
	sort.SliceStable(out, func(a, b int) bool { return len(out[a]) > len(out[b]) })
	if len(out) > maxPiecesPerTrigger {
		out = out[:maxPiecesPerTrigger]
	}
	return out
}

// scannerForm writes s the way the scanner reads text: ASCII letters in lower case, whitespace runs as one space.
func scannerForm(s string) string {
	var b strings.Builder
	prevSpace := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		if isSpace(c) {
			if !prevSpace {
				b.WriteByte(' ')
			}
			prevSpace = true
			continue
		}
		prevSpace = false
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		b.WriteByte(c)
	}
	return b.String()
}

// literalPiece returns the scanner piece that a literal text guarantees: the longest of its quote-free parts, in
// scanner form, or "" when no part is long enough to be selective.
func literalPiece(lit string) string {
	best := ""
	for _, part := range strings.Split(lit, `"`) {
		p := scannerForm(part)
		if len(p) > maxPieceLen {
			p = p[:maxPieceLen]
		}
		if len(p) >= minPieceLen && len(p) > len(best) {
			best = p
		}
	}
	return best
}
