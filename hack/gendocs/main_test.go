package main

import (
	"bytes"
	"os"
	"strings"
	"testing"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
)

// TestSignaturesPageIsCurrent fails when docs/signatures.md was not regenerated after a change to the catalog or
// the planner.
func TestSignaturesPageIsCurrent(t *testing.T) {
	want, err := render()
	if err != nil {
		t.Fatal(err)
	}
	have, err := os.ReadFile("../../docs/signatures.md")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(have, want) {
		t.Fatal("docs/signatures.md is stale: run go run ./hack/gendocs and commit it")
	}
}

// TestSignaturesPageCoversTheContract: every built-in id has its section, and rendering is reproducible.
func TestSignaturesPageCoversTheContract(t *testing.T) {
	a, err := render()
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 5; i++ {
		b, _ := render()
		if !bytes.Equal(a, b) {
			t.Fatal("two renderings differ")
		}
	}
	for _, id := range v1alpha1.BuiltinSignatures {
		if !strings.Contains(string(a), "\n## "+string(id)+"\n") {
			t.Errorf("no section for %s", id)
		}
	}
}
