package conflist

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// applyDiff runs patch(1) with the diff on a copy of before and returns the patched file.
func applyDiff(t *testing.T, before []byte, diff string) []byte {
	t.Helper()
	if _, err := exec.LookPath("patch"); err != nil {
		t.Skip("patch(1) is not installed (apt-get install patch)")
	}
	dir := t.TempDir()
	name := filepath.Join(dir, "10-net.conflist")
	if err := os.WriteFile(name, before, 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("patch", "--batch", "--silent", "--no-backup-if-mismatch", name)
	cmd.Stdin = strings.NewReader(diff)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("patch: %v\n%s\ndiff:\n%s", err, out, diff)
	}
	after, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return after
}

// The diff of a file without a final newline carries GNU diff's marker on the side that lacks it, and patch(1)
// turns a copy of the old file into the new one byte for byte, whichever side ends without a newline.
func TestDiffsMarkAMissingFinalNewlineAndApplyWithPatchByteForByte(t *testing.T) {
	body := "{\n  \"cniVersion\": \"1.1.0\",\n  \"name\": \"lab\",\n  \"plugins\": [{\"type\": \"bridge\"}]\n}"
	edited := strings.Replace(body, "1.1.0", "1.0.0", 1)
	cases := []struct {
		name          string
		before, after string
		markers       int
	}{
		{"neither side ends with a newline, the last line is context", body, edited, 1},
		{"the old side only", body, edited + "\n", 1},
		{"the new side only", body + "\n", edited, 1},
		{"both end with a newline", body + "\n", edited + "\n", 0},
		{"the last line itself changes", "a\nb\nc", "a\nb\nd", 2},
		{"a file created", "", edited, 1},
		{"a one-line file", "x", "y\n", 1},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			diff := UnifiedDiff("/etc/cni/net.d/10-net.conflist", []byte(c.before), []byte(c.after))
			if got := strings.Count(diff, "\n\\ No newline at end of file\n"); got != c.markers {
				t.Errorf("%d markers, want %d:\n%s", got, c.markers, diff)
			}
			if got := applyDiff(t, []byte(c.before), diff); !bytes.Equal(got, []byte(c.after)) {
				t.Errorf("patch made %q, want %q; diff:\n%s", got, c.after, diff)
			}
		})
	}
}
