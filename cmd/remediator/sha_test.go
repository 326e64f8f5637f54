package main

import (
	"os"
	"path/filepath"
	"testing"
)

// The executor image records the remediator's sha256 (sha256sum format); apply checks the binary against it
// unless a flag gives another, and outside the image there is nothing to check against.
func TestExpectedSHA256(t *testing.T) {
	dir := t.TempDir()
	rec := filepath.Join(dir, "remediator.sha256")
	if err := os.WriteFile(rec, []byte("abc123  remediator\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		o    applyOptions
		want string
	}{
		{applyOptions{binarySHA256File: rec}, "abc123"},
		{applyOptions{binarySHA256: "fff", binarySHA256File: rec}, "fff"},
		{applyOptions{binarySHA256File: filepath.Join(dir, "missing")}, ""},
	} {
		if got := expectedSHA256(tc.o); got != tc.want {
			t.Errorf("expectedSHA256(%+v) = %q, want %q", tc.o, got, tc.want)
		}
	}
}
