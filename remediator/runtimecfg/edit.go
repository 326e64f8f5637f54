package runtimecfg

import (
	"bytes"
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strconv"
	"strings"

	"github.com/pelletier/go-toml/v2/unstable"
)

// Want is what the CNI settings should be. Empty fields and nil pointers leave the file's value alone.
type Want struct {
	BinDir       string
	ConfDir      string
	ConfTemplate *string
	MaxConfNum   *int
	// Version is the config version to write when the file does not exist yet (default 2, which containerd 1.6+
	// and 2.x both read).
	Version int
}

// Change is one setting an edit changes.
type Change struct {
	Key  string `json:"key"`
	From string `json:"from"`
	To   string `json:"to"`
}

// defaults are containerd's values for the CNI keys a file leaves out.
var defaults = map[string]any{
	"bin_dir":       DefaultBinDir,
	"bin_dirs":      []any{DefaultBinDir},
	"conf_dir":      DefaultConfDir,
	"conf_template": "",
	"max_conf_num":  int64(DefaultMaxConfNum),
}

// setting is one key to write, with its TOML text and the value it must decode to.
type setting struct {
	key   string
	text  string
	value any
}

// Edit returns raw (the bytes of config.toml; nil when the file does not exist) with the CNI settings of w, and
// the settings that change. An unchanged file comes back as is with no changes. A file that does not parse is
// refused: it is reported, never rewritten.
func Edit(raw []byte, exists bool, w Want) ([]byte, []Change, error) {
	if !exists {
		v := w.Version
		if v == 0 {
			v = 2
		}
		raw = []byte(fmt.Sprintf("version = %d\n", v))
	}
	doc, err := decode(raw)
	if err != nil {
		return nil, nil, fmt.Errorf("config.toml does not parse (%v); refusing to edit it", err)
	}
	version := versionOf(doc)
	table := CNITable(version)
	cur, _ := lookup(doc, table).(map[string]any)

	var sets []setting
	var changes []Change
	want := func(key string, value any, text string) {
		if old, ok := cur[key]; ok && reflect.DeepEqual(old, value) {
			return
		}
		// A key the file does not set already has containerd's default: writing the default changes nothing.
		if _, ok := cur[key]; !ok && reflect.DeepEqual(defaults[key], value) {
			return
		}
		from := "(unset)"
		if old, ok := cur[key]; ok {
			from = fmt.Sprint(old)
		}
		sets = append(sets, setting{key: key, text: text, value: value})
		changes = append(changes, Change{Key: key, From: from, To: fmt.Sprint(value)})
	}
	if w.BinDir != "" {
		// containerd 2.x reads bin_dirs (a list); a version 3 file that still spells bin_dir keeps bin_dir, the key
		// its containerd reads.
		_, hasOld := cur["bin_dir"]
		_, hasNew := cur["bin_dirs"]
		if version >= 3 && (hasNew || !hasOld) {
			want("bin_dirs", []any{w.BinDir}, "["+basicString(w.BinDir)+"]")
		} else {
			want("bin_dir", w.BinDir, basicString(w.BinDir))
		}
	}
	if w.ConfDir != "" {
		want("conf_dir", w.ConfDir, basicString(w.ConfDir))
	}
	if w.ConfTemplate != nil {
		want("conf_template", *w.ConfTemplate, basicString(*w.ConfTemplate))
	}
	if w.MaxConfNum != nil {
		want("max_conf_num", int64(*w.MaxConfNum), strconv.Itoa(*w.MaxConfNum))
	}
	if len(sets) == 0 {
		if !exists {
			return nil, nil, nil
		}
		return raw, nil, nil
	}

	out, err := splice(raw, table, sets)
	if err != nil {
		return nil, nil, err
	}
	if err := verify(doc, out, table, sets); err != nil {
		return nil, nil, fmt.Errorf("the edit of config.toml would not be exact (%v); refusing it", err)
	}
	return out, changes, nil
}

// verify decodes the edited file and checks that it is the original document with exactly the wanted settings.
func verify(before map[string]any, out []byte, table []string, sets []setting) error {
	after, err := decode(out)
	if err != nil {
		return fmt.Errorf("the result does not parse: %w", err)
	}
	expect := deepCopy(before).(map[string]any)
	cur := expect
	for _, p := range table {
		next, ok := cur[p].(map[string]any)
		if !ok {
			next = map[string]any{}
			cur[p] = next
		}
		cur = next
	}
	for _, s := range sets {
		cur[s.key] = s.value
	}
	if !reflect.DeepEqual(expect, after) {
		return errors.New("the result decodes to a different document")
	}
	return nil
}

func deepCopy(v any) any {
	switch t := v.(type) {
	case map[string]any:
		m := make(map[string]any, len(t))
		for k, x := range t {
			m[k] = deepCopy(x)
		}
		return m
	case []any:
		s := make([]any, len(t))
		for i, x := range t {
			s[i] = deepCopy(x)
		}
		return s
	default:
		return v
	}
}

// patch replaces raw[start:end] with text.
type patch struct {
	start, end int
	text       string
}

// location is where the CNI table lives in the file, found by walking its expressions.
type location struct {
	values map[string][2]int // key -> value byte range
	// header: the table has its own [header]; afterLast is where a new key line goes (after the last key line of
	// the section, or after the header line), indent the indentation to use.
	header    bool
	afterLast int
	indent    string
	// dotted: the table exists only through dotted keys (cni.bin_dir = ...); prefix is the dotted text to repeat.
	dotted bool
	prefix string
	// inline: the table is an inline table (cni = { ... }); inlineAt is where ", key = value" goes.
	inline      bool
	inlineAt    int
	inlineEmpty bool
}

// splice applies the settings to raw by byte patches.
func splice(raw []byte, table []string, sets []setting) ([]byte, error) {
	loc, err := locate(raw, table)
	if err != nil {
		return nil, err
	}
	var patches []patch
	var missing []setting
	for _, s := range sets {
		if r, ok := loc.values[s.key]; ok {
			patches = append(patches, patch{start: r[0], end: r[1], text: s.text})
		} else {
			missing = append(missing, s)
		}
	}
	if len(missing) > 0 {
		switch {
		case loc.inline:
			var b strings.Builder
			for i, s := range missing {
				if i > 0 || !loc.inlineEmpty {
					b.WriteString(", ")
				}
				b.WriteString(keyString(s.key) + " = " + s.text)
			}
			patches = append(patches, patch{start: loc.inlineAt, end: loc.inlineAt, text: b.String()})
		case loc.header || loc.dotted:
			var b strings.Builder
			at := loc.afterLast
			if at > 0 && raw[at-1] != '\n' {
				b.WriteString(newline(raw))
			}
			for _, s := range missing {
				b.WriteString(loc.indent + loc.prefix + keyString(s.key) + " = " + s.text + newline(raw))
			}
			patches = append(patches, patch{start: at, end: at, text: b.String()})
		default:
			var b strings.Builder
			if len(raw) > 0 && raw[len(raw)-1] != '\n' {
				b.WriteString(newline(raw))
			}
			b.WriteString(newline(raw) + "[" + TableString(table) + "]" + newline(raw))
			for _, s := range missing {
				b.WriteString("  " + keyString(s.key) + " = " + s.text + newline(raw))
			}
			patches = append(patches, patch{start: len(raw), end: len(raw), text: b.String()})
		}
	}
	sort.Slice(patches, func(i, j int) bool { return patches[i].start > patches[j].start })
	out := append([]byte(nil), raw...)
	for _, p := range patches {
		out = append(out[:p.start], append([]byte(p.text), out[p.end:]...)...)
	}
	return out, nil
}

// newline returns the file's line ending, so that a CRLF file stays CRLF.
func newline(raw []byte) string {
	if bytes.Contains(raw, []byte("\r\n")) {
		return "\r\n"
	}
	return "\n"
}

// locate walks the file's top-level expressions, tracking the current table, and records where the CNI table's
// keys are and where new ones would go.
func locate(raw []byte, table []string) (location, error) {
	loc := location{values: map[string][2]int{}, afterLast: -1}
	var p unstable.Parser
	p.Reset(raw)
	var current []string
	inTarget := false
	for p.NextExpression() {
		e := p.Expression()
		switch e.Kind {
		case unstable.Table, unstable.ArrayTable:
			current = keyParts(e.Key())
			inTarget = e.Kind == unstable.Table && equal(current, table)
			if inTarget {
				loc.header = true
				loc.afterLast = lineEnd(raw, headerEnd(raw, e))
				loc.indent = lineIndent(raw, firstKeyStart(e)) + "  "
			}
		case unstable.KeyValue:
			parts := keyParts(e.Key())
			full := append(append([]string(nil), current...), parts...)
			kvStart, kvEnd := int(e.Raw.Offset), int(e.Raw.Offset+e.Raw.Length)
			switch {
			case inTarget && len(parts) == 1:
				loc.values[parts[0]] = [2]int{valueStart(raw, e), kvEnd}
				loc.afterLast = lineEnd(raw, kvEnd)
				loc.indent = lineIndent(raw, kvStart)
			case len(full) == len(table)+1 && equal(full[:len(table)], table):
				// A dotted key reaching into the table from a parent: cni.bin_dir = "..." under the CRI table.
				loc.values[full[len(full)-1]] = [2]int{valueStart(raw, e), kvEnd}
				if !loc.header {
					loc.dotted = true
					loc.afterLast = lineEnd(raw, kvEnd)
					loc.indent = lineIndent(raw, kvStart)
					loc.prefix = string(raw[kvStart:lastKeyStart(e)])
				}
			case equal(full, table) && e.Value().Kind == unstable.InlineTable:
				loc.inline = true
				loc.inlineAt = kvEnd - 1 // the closing brace
				loc.inlineEmpty = true
				it := e.Value().Children()
				for it.Next() {
					c := it.Node()
					if c.Kind != unstable.KeyValue {
						continue
					}
					cparts := keyParts(c.Key())
					cEnd := int(c.Raw.Offset + c.Raw.Length)
					if len(cparts) == 1 {
						loc.values[cparts[0]] = [2]int{valueStart(raw, c), cEnd}
					}
					loc.inlineAt = cEnd
					loc.inlineEmpty = false
				}
			}
		}
	}
	if err := p.Error(); err != nil {
		return loc, err
	}
	return loc, nil
}

func keyParts(it unstable.Iterator) []string {
	var out []string
	for it.Next() {
		out = append(out, string(it.Node().Data))
	}
	return out
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func firstKeyStart(e *unstable.Node) int {
	it := e.Key()
	it.Next()
	return int(it.Node().Raw.Offset)
}

func lastKeyStart(e *unstable.Node) int {
	it := e.Key()
	var last *unstable.Node
	for it.Next() {
		last = it.Node()
	}
	return int(last.Raw.Offset)
}

func lastKeyEnd(e *unstable.Node) int {
	it := e.Key()
	var last *unstable.Node
	for it.Next() {
		last = it.Node()
	}
	return int(last.Raw.Offset + last.Raw.Length)
}

// headerEnd is the offset just after a table header's closing bracket.
func headerEnd(raw []byte, e *unstable.Node) int {
	i := lastKeyEnd(e)
	for i < len(raw) && raw[i] != ']' {
		i++
	}
	for i < len(raw) && raw[i] == ']' {
		i++
	}
	return i
}

// valueStart is where a key/value's value begins: after the last key part, the '=' and blanks.
func valueStart(raw []byte, e *unstable.Node) int {
	i := lastKeyEnd(e)
	for i < len(raw) && (raw[i] == ' ' || raw[i] == '\t') {
		i++
	}
	if i < len(raw) && raw[i] == '=' {
		i++
	}
	for i < len(raw) && (raw[i] == ' ' || raw[i] == '\t') {
		i++
	}
	return i
}

// lineEnd is the offset just after the newline ending the line that holds offset i (or the end of the file).
func lineEnd(raw []byte, i int) int {
	if j := bytes.IndexByte(raw[i:], '\n'); j >= 0 {
		return i + j + 1
	}
	return len(raw)
}

// lineIndent is the blank text before offset i on its line.
func lineIndent(raw []byte, i int) string {
	start := bytes.LastIndexByte(raw[:i], '\n') + 1
	ind := raw[start:i]
	if len(bytes.Trim(ind, " \t")) != 0 {
		return ""
	}
	return string(ind)
}
