package signature

import "strings"

// isSpace is the whitespace normalize folds. The scanner's byte classes use the same set, which keeps the literal
// prefilter sound: a piece found in a normalised message is found in the raw one.
func isSpace(c byte) bool {
	switch c {
	case ' ', '\t', '\n', '\v', '\f', '\r':
		return true
	}
	return false
}

// special marks the bytes where normalize may have something to change: backslashes and whitespace.
var special = func() (t [256]bool) {
	t['\\'] = true
	for c := 0; c < 256; c++ {
		t[c] = t[c] || isSpace(byte(c))
	}
	return t
}()

// normalize makes the forms a message takes on its way to us comparable: messages are quoted again at every layer
// (runtime error, kubelet's CreatePodSandboxError, a JSON log line), so `plugin type="calico"` arrives as
// `plugin type=\"calico\"` or `plugin type=\\\"calico\\\"`, and logs copied from terminals break lines anywhere.
// It drops every run of backslashes that ends in a quote and folds every run of whitespace into one space. It
// returns s itself, without allocating, when there is nothing to change.
func normalize(s string) string {
	i := firstChange(s)
	if i < 0 {
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
	for i >= 0 {
		b.WriteString(s[:i])
		s = s[i:]
		// s starts with a change: a backslash run that ends in a quote (dropped) or a whitespace run (one space).
		k := 1
		if s[0] == '\\' {
			for k < len(s) && s[k] == '\\' {
				k++
			}
		} else {
			for k < len(s) && isSpace(s[k]) {
				k++
			}
			b.WriteByte(' ')
		}
		s = s[k:]
		i = firstChange(s)
	}
	b.WriteString(s)
	return b.String()
}

// firstChange returns where normalize's first change begins (the start of the backslash or whitespace run it
// rewrites), or -1 when normalize would return s unchanged.
func firstChange(s string) int {
	for i := 0; i < len(s); {
		if !special[s[i]] {
			i++
			continue
		}
		j := i + 1
		if s[i] == '\\' {
			for j < len(s) && s[j] == '\\' {
				j++
			}
			if j < len(s) && s[j] == '"' {
				return i
			}
		} else {
			for j < len(s) && isSpace(s[j]) {
				j++
			}
			if j-i > 1 || s[i] != ' ' {
				return i
			}
		}
		i = j
	}
	return -1
}
