package termsafe

import (
	"bytes"
	"strings"
	"testing"
)

func TestAnEscapeSequenceComesOutVisibleAndInert(t *testing.T) {
	cases := map[string]string{
		"failed to setup network: \x1b[2J\x1b[Hgone": `failed to setup network: \x1b[2J\x1b[Hgone`,
		"bell\a and backspace\b and CR\r":            `bell\x07 and backspace\x08 and CR\x0d`,
		"del\x7f":                                    `del\x7f`,
		"8-bit CSI \u009b2J":                         `8-bit CSI \u009b2J`,
		"a lone byte \x9b2J":                         `a lone byte \x9b2J`,
		"tabs\tand\nnewlines stay":                   "tabs\tand\nnewlines stay",
		"plain, ünïcödé and 漢字 stay":                 "plain, ünïcödé and 漢字 stay",
	}
	for in, want := range cases {
		if got := String(in); got != want {
			t.Errorf("String(%q) = %q, want %q", in, got, want)
		}
		if got := String(in); strings.ContainsAny(got, "\x1b\a\b\r\x7f\u009b") {
			t.Errorf("String(%q) still holds a control character: %q", in, got)
		}
	}
}

func TestTheWriterSanitizesRunesSplitAcrossWrites(t *testing.T) {
	var out bytes.Buffer
	w := NewWriter(&out)
	in := []byte("é\x1b[2J漢\u009b")
	for i := range in {
		if _, err := w.Write(in[i : i+1]); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	if want := `é\x1b[2J漢\u009b`; out.String() != want {
		t.Fatalf("got %q, want %q", out.String(), want)
	}
	out.Reset()
	_, _ = w.Write([]byte("cut \xe6\xbc"))
	_ = w.Flush()
	if want := `cut \xe6\xbc`; out.String() != want {
		t.Fatalf("an incomplete rune at the end: got %q, want %q", out.String(), want)
	}
}
