// Package termsafe makes text from the cluster (event messages, conditions, results written by a node) safe to
// print on a terminal: a control character in it is shown, never obeyed. An event message can carry ESC [2J (clear
// the screen), an OSC 8 link or a title change; printed raw, the table that shows it would carry out the escape.
// JSON and YAML output need none of this: their encoders escape control characters themselves.
package termsafe

import (
	"fmt"
	"io"
	"strings"
	"unicode/utf8"
)

// String returns s with every control character except tab and newline replaced by a visible escape: C0 and DEL
// as \x1b, C1 (which some terminals obey as 8-bit escapes) as \u009b, and bytes that are not UTF-8 as \x9b.
func String(s string) string {
	if clean(s) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && n == 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case r == '\t' || r == '\n':
			b.WriteRune(r)
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&b, `\x%02x`, r)
		case r >= 0x80 && r <= 0x9f:
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			b.WriteString(s[i : i+n])
		}
		i += n
	}
	return b.String()
}

// clean reports whether s has nothing String would change, without allocating.
func clean(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < 0x20 && c != '\t' && c != '\n') || c >= 0x7f {
			return c >= 0x80 && cleanFrom(s, i)
		}
	}
	return true
}

// cleanFrom checks the rest of s rune by rune, from its first byte that is not plain ASCII.
func cleanFrom(s string, i int) bool {
	for i < len(s) {
		r, n := utf8.DecodeRuneInString(s[i:])
		if (r == utf8.RuneError && n == 1) || (r < 0x20 && r != '\t' && r != '\n') || (r >= 0x7f && r <= 0x9f) {
			return false
		}
		i += n
	}
	return true
}

// Writer passes everything written to it through String, for a text output whose every line may hold text from
// the cluster. A UTF-8 sequence split across two writes is kept until it is whole.
type Writer struct {
	w     io.Writer
	carry []byte
}

// NewWriter returns a Writer that writes to w.
func NewWriter(w io.Writer) *Writer { return &Writer{w: w} }

// Write sanitizes p and writes it; it reports p as written in full.
func (w *Writer) Write(p []byte) (int, error) {
	buf := append(w.carry, p...)
	cut := len(buf)
	// Hold back an incomplete rune at the end (at most 3 bytes of a 4-byte sequence).
	for i := len(buf) - 1; i >= 0 && i >= len(buf)-3; i-- {
		if utf8.RuneStart(buf[i]) {
			if !utf8.FullRune(buf[i:]) {
				cut = i
			}
			break
		}
	}
	w.carry = append([]byte(nil), buf[cut:]...)
	if _, err := io.WriteString(w.w, String(string(buf[:cut]))); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Flush writes what an incomplete rune held back (escaped: it never became valid UTF-8).
func (w *Writer) Flush() error {
	if len(w.carry) == 0 {
		return nil
	}
	_, err := io.WriteString(w.w, String(string(w.carry)))
	w.carry = nil
	return err
}
