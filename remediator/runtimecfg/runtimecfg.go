// Package runtimecfg reads and edits containerd's CRI CNI settings (bin_dir, conf_dir, conf_template,
// max_conf_num) in its config.toml. Edits are surgical: the value bytes of the keys that change are replaced (or
// the missing keys inserted next to their siblings) and every other byte of the file, comments included, is kept.
// Each edit is checked by decoding the result: only the intended settings may differ.
package runtimecfg

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/pelletier/go-toml/v2"

	"github.com/cnimedic/cnimedic/remediator/host"
)

// Containerd's defaults for the CRI CNI settings (the same in 1.6, 1.7 and 2.x).
const (
	DefaultBinDir     = "/opt/cni/bin"
	DefaultConfDir    = "/etc/cni/net.d"
	DefaultMaxConfNum = 1
	DefaultPath       = "/etc/containerd/config.toml"
)

// CNITable returns the path of the CRI CNI table for a config version: version 1 (no version key, containerd
// 1.x) uses plugins.cri.cni, version 2 (containerd 1.x and 2.x) plugins."io.containerd.grpc.v1.cri".cni and version
// 3 and 4 (containerd 2.x) plugins."io.containerd.cri.v1.runtime".cni.
func CNITable(version int) []string {
	switch {
	case version >= 3:
		return []string{"plugins", "io.containerd.cri.v1.runtime", "cni"}
	case version == 2:
		return []string{"plugins", "io.containerd.grpc.v1.cri", "cni"}
	default:
		return []string{"plugins", "cri", "cni"}
	}
}

// Settings are the CRI CNI settings in effect (the file's values, or containerd's defaults where the file is
// silent).
type Settings struct {
	BinDirs      []string `json:"binDirs"`
	ConfDir      string   `json:"confDir"`
	ConfTemplate string   `json:"confTemplate"`
	MaxConfNum   int      `json:"maxConfNum"`
}

// Config is what the node's config.toml says about CNI.
type Config struct {
	// Path is the host path.
	Path string `json:"path"`
	// Exists is false when there is no file: containerd then runs on its defaults.
	Exists bool `json:"exists"`
	// ParseError is the TOML error, with its line and column, when the file does not parse. The file is then never
	// edited.
	ParseError string `json:"parseError,omitempty"`
	// Version is the config format version (1, 2 or 3).
	Version int `json:"version,omitempty"`
	// Table is the CNI table's path, such as plugins."io.containerd.grpc.v1.cri".cni.
	Table string `json:"table,omitempty"`
	// Settings in effect.
	Settings Settings `json:"settings"`
	// Explicit lists the CNI keys the file sets itself (the rest are defaults).
	Explicit []string `json:"explicit,omitempty"`
	// Imports are the file's imports as it writes them (paths or glob patterns, relative ones to its directory).
	Imports []string `json:"imports,omitempty"`
	// DropIns are the files containerd merges over this one, in the order it merges them (Read follows the
	// imports as containerd does: breadth first, globs expanded in lexical order, each file once).
	DropIns []string `json:"dropIns,omitempty"`
	// Sources names, for each CNI key a drop-in sets, the drop-in whose value is in effect (the last one to set it).
	// Keys not listed come from Path, or are containerd's defaults.
	Sources map[string]string `json:"sources,omitempty"`
	// DropInErrors are drop-ins containerd would fail on: missing, unreadable, not TOML, or of a higher version
	// than Path (containerd refuses to start with them).
	DropInErrors []string `json:"dropInErrors,omitempty"`

	raw []byte
}

// Raw returns the file's bytes.
func (c Config) Raw() []byte { return c.raw }

// Read reads containerd's config at a host path and the drop-ins it imports, merged as containerd merges them:
// each file's CNI table read by that file's own version (containerd migrates each file before merging), and a key
// a later file sets replaces the earlier value (containerd's merge of plugin tables). Settings are the result.
func Read(root host.Root, path string) Config {
	c := readFile(root, path)
	if !c.Exists || c.ParseError != "" {
		return c
	}
	loaded := map[string]bool{path: true}
	pending := resolveImports(root, path, c.Imports)
	for len(pending) > 0 {
		p := pending[0]
		pending = pending[1:]
		if loaded[p] {
			continue
		}
		loaded[p] = true
		c.DropIns = append(c.DropIns, p)
		d := readFile(root, p)
		switch {
		case !d.Exists:
			c.DropInErrors = append(c.DropInErrors, p+": does not exist")
			continue
		case d.ParseError != "":
			c.DropInErrors = append(c.DropInErrors, p+": "+d.ParseError)
			continue
		case d.Version > c.Version:
			c.DropInErrors = append(c.DropInErrors, fmt.Sprintf("%s: version %d is higher than %s's %d", p, d.Version, path, c.Version))
		}
		for _, k := range d.Explicit {
			c.override(k, d.Settings)
			if c.Sources == nil {
				c.Sources = map[string]string{}
			}
			c.Sources[k] = p
			// bin_dir and bin_dirs both say the bin dirs: the later file's word is the one in effect.
			switch k {
			case "bin_dir":
				delete(c.Sources, "bin_dirs")
			case "bin_dirs":
				delete(c.Sources, "bin_dir")
			}
			if !slices.Contains(c.Explicit, k) {
				c.Explicit = append(c.Explicit, k)
			}
		}
		pending = append(pending, resolveImports(root, p, d.Imports)...)
	}
	return c
}

// override takes the setting of key from s.
func (c *Config) override(key string, s Settings) {
	switch key {
	case "bin_dir", "bin_dirs":
		c.Settings.BinDirs = s.BinDirs
	case "conf_dir":
		c.Settings.ConfDir = s.ConfDir
	case "conf_template":
		c.Settings.ConfTemplate = s.ConfTemplate
	case "max_conf_num":
		c.Settings.MaxConfNum = s.MaxConfNum
	}
}

// SourceOf is the file whose value of key is in effect: the drop-in that set it last, else Path.
func (c Config) SourceOf(key string) string {
	if p, ok := c.Sources[key]; ok {
		return p
	}
	return c.Path
}

// resolveImports turns a file's imports into host paths as containerd does: a relative path is relative to the
// importing file's directory, and a path with "*" is a glob, expanded in lexical order (here under the host
// root).
func resolveImports(root host.Root, parent string, imports []string) []string {
	var out []string
	for _, p := range imports {
		p = filepath.Clean(p)
		if !filepath.IsAbs(p) {
			p = filepath.Join(filepath.Dir(parent), p)
		}
		if !strings.Contains(p, "*") {
			out = append(out, p)
			continue
		}
		matches, err := filepath.Glob(root.Path(p))
		if err != nil {
			continue
		}
		for _, m := range matches {
			out = append(out, root.HostPath(m))
		}
	}
	return out
}

// readFile reads one config file at a host path, without its imports.
func readFile(root host.Root, path string) Config {
	c := Config{Path: path, Settings: Settings{BinDirs: []string{DefaultBinDir}, ConfDir: DefaultConfDir, MaxConfNum: DefaultMaxConfNum}}
	raw, err := host.ReadFile(root.Local(path), host.MaxContainerdConfig)
	if errors.Is(err, os.ErrNotExist) {
		c.Version = 2
		c.Table = TableString(CNITable(2))
		return c
	}
	c.Exists = true
	if err != nil {
		c.ParseError = err.Error()
		return c
	}
	c.raw = raw
	doc, err := decode(raw)
	if err != nil {
		c.ParseError = err.Error()
		return c
	}
	c.Version = versionOf(doc)
	table := CNITable(c.Version)
	c.Table = TableString(table)
	if imps, ok := doc["imports"].([]any); ok {
		for _, i := range imps {
			if s, ok := i.(string); ok {
				c.Imports = append(c.Imports, s)
			}
		}
	}
	cni, _ := lookup(doc, table).(map[string]any)
	if v, ok := cni["bin_dir"].(string); ok {
		c.Settings.BinDirs = []string{v}
		c.Explicit = append(c.Explicit, "bin_dir")
	}
	// bin_dirs (containerd 2.x) wins over bin_dir when both are set, as containerd's own migration does.
	if vs, ok := cni["bin_dirs"].([]any); ok && len(vs) > 0 {
		var dirs []string
		for _, v := range vs {
			if s, ok := v.(string); ok {
				dirs = append(dirs, s)
			}
		}
		c.Settings.BinDirs = dirs
		c.Explicit = append(c.Explicit, "bin_dirs")
	}
	if v, ok := cni["conf_dir"].(string); ok {
		c.Settings.ConfDir = v
		c.Explicit = append(c.Explicit, "conf_dir")
	}
	if v, ok := cni["conf_template"].(string); ok {
		c.Settings.ConfTemplate = v
		c.Explicit = append(c.Explicit, "conf_template")
	}
	if v, ok := cni["max_conf_num"].(int64); ok {
		c.Settings.MaxConfNum = int(v)
		c.Explicit = append(c.Explicit, "max_conf_num")
	}
	return c
}

// decode parses TOML into a generic document, with the error's line and column in its text.
func decode(raw []byte) (map[string]any, error) {
	var doc map[string]any
	if err := toml.Unmarshal(raw, &doc); err != nil {
		var de *toml.DecodeError
		if errors.As(err, &de) {
			row, col := de.Position()
			return nil, fmt.Errorf("line %d column %d: %s", row, col, de.Error())
		}
		return nil, err
	}
	if doc == nil {
		doc = map[string]any{}
	}
	return doc, nil
}

// versionOf returns the config format version; a file without one is version 1. Version 4 (containerd 2.2 and
// later) moved the server's settings into plugins and keeps version 3's CRI tables.
func versionOf(doc map[string]any) int {
	if v, ok := doc["version"].(int64); ok && v >= 1 && v <= 4 {
		return int(v)
	}
	return 1
}

func lookup(doc map[string]any, path []string) any {
	var cur any = doc
	for _, p := range path {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		cur = m[p]
	}
	return cur
}

// TableString spells a table path as TOML does, quoting the parts that are not bare keys.
func TableString(path []string) string {
	parts := make([]string, len(path))
	for i, p := range path {
		parts[i] = keyString(p)
	}
	return strings.Join(parts, ".")
}

func keyString(k string) string {
	if k != "" && strings.Trim(k, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-") == "" {
		return k
	}
	return basicString(k)
}

// basicString encodes s as a TOML basic string. strconv.Quote is not used: its \x and \a escapes are not TOML.
func basicString(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"':
			b.WriteString(`\"`)
		case r == '\\':
			b.WriteString(`\\`)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\t':
			b.WriteString(`\t`)
		case r == '\r':
			b.WriteString(`\r`)
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&b, `\u%04X`, r)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}
