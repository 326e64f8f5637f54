package plugins

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"path/filepath"
	"sort"
	"strings"

	"github.com/cnimedic/cnimedic/remediator/host"
)

// ManifestName is the bundle's manifest: one "<sha256>  <file name>" line per plugin, as sha256sum writes it
// (hack/build-cni-plugins.sh makes it).
const ManifestName = "SHA256SUMS"

// Bundle is the set of reference plugins the executor image ships.
type Bundle struct {
	// Dir is the bundle's directory in the executor's own filesystem (not a host path).
	Dir string
	// Sums maps each plugin file name to its expected sha256, hex encoded.
	Sums map[string]string
}

// LoadBundle reads the manifest of a bundle directory. Only the manifest is read here; each binary is verified
// when it is read for installation, so that what is checked is exactly what gets written.
func LoadBundle(dir string) (*Bundle, error) {
	raw, err := host.ReadFile(filepath.Join(dir, ManifestName), host.MaxManifest)
	if err != nil {
		return nil, fmt.Errorf("reading the plugin bundle's manifest: %w", err)
	}
	b := &Bundle{Dir: dir, Sums: map[string]string{}}
	sc := bufio.NewScanner(bytes.NewReader(raw))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		sum, name, ok := strings.Cut(line, " ")
		name = strings.TrimPrefix(strings.TrimSpace(name), "*") // sha256sum marks binary mode with '*'
		if !ok || len(sum) != sha256.Size*2 || name == "" || strings.ContainsRune(name, '/') {
			return nil, fmt.Errorf("%s line %d: want \"<sha256>  <file>\", got %q", ManifestName, n, line)
		}
		if _, err := hex.DecodeString(sum); err != nil {
			return nil, fmt.Errorf("%s line %d: %w", ManifestName, n, err)
		}
		b.Sums[name] = strings.ToLower(sum)
	}
	if len(b.Sums) == 0 {
		return nil, fmt.Errorf("%s in %s lists no plugin", ManifestName, dir)
	}
	return b, nil
}

// Has reports whether the bundle ships a plugin.
func (b *Bundle) Has(name string) bool { _, ok := b.Sums[name]; return ok }

// Names lists the bundled plugins, sorted.
func (b *Bundle) Names() []string {
	out := make([]string, 0, len(b.Sums))
	for n := range b.Sums {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// Verified returns a bundled plugin's bytes after checking them against the manifest.
func (b *Bundle) Verified(name string) ([]byte, error) {
	want, ok := b.Sums[name]
	if !ok {
		return nil, fmt.Errorf("the bundle has no plugin %q", name)
	}
	raw, err := host.ReadFile(filepath.Join(b.Dir, name), host.MaxPlugin)
	if err != nil {
		return nil, err
	}
	got := sha256.Sum256(raw)
	if hex.EncodeToString(got[:]) != want {
		return nil, fmt.Errorf("bundled plugin %s: sha256 %x does not match the manifest's %s; refusing to install it", name, got, want)
	}
	return raw, nil
}
