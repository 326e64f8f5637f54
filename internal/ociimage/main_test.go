package ociimage

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"testing"
)

// TestMain keeps the tests' temporary files under the repository's .lab/tmp, never /tmp (files there have been seen
// to vanish under running tests on shared machines).
func TestMain(m *testing.M) {
	_, file, _, _ := runtime.Caller(0)
	tmp := filepath.Join(filepath.Dir(file), "..", "..", ".lab", "tmp")
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if err := os.Setenv("TMPDIR", tmp); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(m.Run())
}
