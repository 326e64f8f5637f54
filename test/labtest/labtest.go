// Package labtest holds what the test suites share: where their files go.
//
// Test files live under the repository's .lab/tmp (gitignored), never in /tmp: on shared machines files in /tmp
// have been seen to vanish under a running test, and a systemd-nspawn node's root must not sit on a tmpfs that a
// node could fill.
package labtest

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/cnimedic/cnimedic/test/repo"
)

// TmpDir is the directory test files go under: .lab/tmp in the repository.
func TmpDir() string { return filepath.Join(repo.Root(), ".lab", "tmp") }

// Main runs a package's tests with TMPDIR pointing at TmpDir, so that t.TempDir and os.MkdirTemp stay out of /tmp.
// Use it from TestMain: func TestMain(m *testing.M) { labtest.Main(m) }.
func Main(m *testing.M) {
	if err := os.MkdirAll(TmpDir(), 0o755); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if err := os.Setenv("TMPDIR", TmpDir()); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(m.Run())
}
