package conflist

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"

	"github.com/pmezard/go-difflib/difflib"
)

// member is one top-level member of a JSON object with the byte range of its value.
type member struct {
	key        string
	start, end int // value bytes are raw[start:end]
}

// topLevelMembers lists the members of the top-level JSON object in document order, with the exact byte range
// of each value, so that one value can be replaced without re-encoding the document (a map round-trip would
// reorder fields and reformat numbers).
func topLevelMembers(raw []byte) ([]member, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return nil, errors.New("the top level is not a JSON object")
	}
	var out []member
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, err
		}
		key, ok := tok.(string)
		if !ok {
			return nil, fmt.Errorf("unexpected %v where a member name belongs", tok)
		}
		var val json.RawMessage
		if err := dec.Decode(&val); err != nil {
			return nil, err
		}
		// RawMessage holds the value's exact input bytes, and the decoder stands right after them.
		end := int(dec.InputOffset())
		out = append(out, member{key: key, start: end - len(val), end: end})
	}
	if _, err := dec.Token(); err != nil { // the closing brace
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("data after the top-level JSON object")
	}
	return out, nil
}

// TopLevelString returns the string value of a top-level member, and whether the member is present at all. When a
// name appears more than once, the last one counts, as in libcni's own parse.
func TopLevelString(raw []byte, key string) (string, bool) {
	members, err := topLevelMembers(raw)
	if err != nil {
		return "", false
	}
	val, found := "", false
	for _, m := range members {
		if m.key == key {
			found = true
			val = ""
			_ = json.Unmarshal(raw[m.start:m.end], &val)
		}
	}
	return val, found
}

func topLevelStrings(raw []byte, key string) []string {
	members, err := topLevelMembers(raw)
	if err != nil {
		return nil
	}
	var out []string
	for _, m := range members {
		if m.key == key {
			out = nil
			_ = json.Unmarshal(raw[m.start:m.end], &out)
		}
	}
	return out
}

// SetCNIVersion returns raw with its top-level cniVersion set to version, or added as the first member when it is
// missing. Every other byte is kept: member order, whitespace, number spelling and unknown fields. The result is
// checked to decode to the same document with only cniVersion changed; an edit that cannot guarantee that fails.
func SetCNIVersion(raw []byte, version string) ([]byte, error) {
	if !json.Valid(raw) {
		return nil, errors.New("not valid JSON; refusing to edit it (restore it from a backup instead)")
	}
	members, err := topLevelMembers(raw)
	if err != nil {
		return nil, fmt.Errorf("not a JSON object: %w", err)
	}
	quoted, err := json.Marshal(version)
	if err != nil {
		return nil, err
	}
	var out []byte
	var found bool
	last := 0
	for _, m := range members {
		if m.key != "cniVersion" {
			continue
		}
		// Every occurrence is rewritten: with duplicates, which one a parser keeps is not ours to guess.
		found = true
		out = append(out, raw[last:m.start]...)
		out = append(out, quoted...)
		last = m.end
	}
	if found {
		out = append(out, raw[last:]...)
	} else {
		out = insertFirstMember(raw, members, `"cniVersion"`, quoted)
	}
	if err := sameExceptCNIVersion(raw, out, version); err != nil {
		return nil, fmt.Errorf("the edit would change more than cniVersion: %w", err)
	}
	return out, nil
}

// insertFirstMember adds "key": value right after the opening brace, copying the layout of the current first
// member (its indentation and the spacing around its colon) so that the file keeps its style.
func insertFirstMember(raw []byte, members []member, key string, value []byte) []byte {
	open := bytes.IndexByte(raw, '{')
	if len(members) == 0 {
		var b []byte
		b = append(b, raw[:open+1]...)
		b = append(b, key...)
		b = append(b, ':')
		b = append(b, value...)
		return append(b, raw[open+1:]...)
	}
	// The first member's name starts at the first quote after the brace; the text between is its indentation.
	nameStart := open + 1 + bytes.IndexByte(raw[open+1:], '"')
	indent := raw[open+1 : nameStart]
	// The separator is whatever lies between the end of the first name and its value (": ", ":", " : "...).
	sep := []byte(": ")
	if nameEnd := endOfString(raw, nameStart); nameEnd > 0 && nameEnd <= members[0].start {
		sep = raw[nameEnd:members[0].start]
	}
	var b []byte
	b = append(b, raw[:open+1]...)
	b = append(b, indent...)
	b = append(b, key...)
	b = append(b, sep...)
	b = append(b, value...)
	b = append(b, ',')
	b = append(b, indent...)
	return append(b, raw[nameStart:]...)
}

// endOfString returns the index just after the JSON string starting at raw[i] (a quote), or -1.
func endOfString(raw []byte, i int) int {
	for j := i + 1; j < len(raw); j++ {
		switch raw[j] {
		case '\\':
			j++
		case '"':
			return j + 1
		}
	}
	return -1
}

// sameExceptCNIVersion decodes both documents and compares them with cniVersion taken out of both; it also
// checks that after holds version as its cniVersion. Member order is not compared here: the edit above never
// moves a member, and the fuzz test checks the bytes outside the value.
func sameExceptCNIVersion(before, after []byte, version string) error {
	var a, b map[string]any
	if err := decodeNumbers(before, &a); err != nil {
		return err
	}
	if err := decodeNumbers(after, &b); err != nil {
		return fmt.Errorf("the result does not parse: %w", err)
	}
	if got, _ := b["cniVersion"].(string); got != version {
		return fmt.Errorf("cniVersion is %q after the edit, want %q", got, version)
	}
	delete(a, "cniVersion")
	delete(b, "cniVersion")
	if !reflect.DeepEqual(a, b) {
		return errors.New("other members differ")
	}
	return nil
}

func decodeNumbers(raw []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	return dec.Decode(v)
}

// UnifiedDiff is a unified diff of a text file's change, with the host path in its headers; empty when nothing
// changes. It applies with patch(1) to the file as it is: a side without a final newline is marked as GNU diff
// marks it.
func UnifiedDiff(path string, before, after []byte) string {
	if bytes.Equal(before, after) {
		return ""
	}
	d := difflib.UnifiedDiff{
		A:        lines(before),
		B:        lines(after),
		FromFile: "a" + path,
		ToFile:   "b" + path,
		Context:  3,
	}
	s, err := difflib.GetUnifiedDiffString(d)
	if err != nil {
		return fmt.Sprintf("(no diff: %v)", err)
	}
	return s
}

// noNewline is GNU diff's marker after a last line that has no newline.
const noNewline = "\\ No newline at end of file\n"

// lines splits text for the diff, each line with its "\n"; an empty or absent file has no lines. A last line without
// one carries the marker on a line of its own, so that difflib writes it right after that line, on whichever side
// it is, and such a line never equals the same text with a newline. (difflib.SplitLines would add a newline to
// the last line, and an empty line after a final one.)
func lines(b []byte) []string {
	if len(b) == 0 {
		return nil
	}
	out := strings.SplitAfter(string(b), "\n")
	if last := len(out) - 1; out[last] == "" {
		out = out[:last]
	} else {
		out[last] += "\n" + noNewline
	}
	return out
}
