package main

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
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

// TestSafetyPageNamesRealTests keeps docs/safety.md and docs/security.md honest: every test they name as
// `dir: TestName` (and every further TestName in the same item) is a test function of that directory, so a renamed
// or deleted test shows here.
func TestSafetyPageNamesRealTests(t *testing.T) {
	for _, doc := range []struct {
		name string
		min  int // fewer found means the parser is broken
	}{{"safety.md", 40}, {"security.md", 40}} {
		checkPage(t, doc.name, doc.min)
	}
}

func checkPage(t *testing.T, name string, min int) {
	page, err := os.ReadFile("../../docs/" + name)
	if err != nil {
		t.Fatal(err)
	}
	named := regexp.MustCompile("`([a-z0-9/-]+): (Test\\w+)`")
	bare := regexp.MustCompile("`(Test\\w+)`")
	checked := 0
	// An item is a list entry with its continuation lines; later bare names in it belong to the same directory.
	for _, item := range strings.Split(string(page), "\n- ") {
		m := named.FindStringSubmatch(item)
		if m == nil {
			if bare.MatchString(item) {
				t.Errorf("docs/%s: an item names a test without its directory: %q", name, strings.SplitN(item, "\n", 2)[0])
			}
			continue
		}
		dir := m[1]
		for _, loc := range named.FindAllStringSubmatchIndex(item, -1) {
			dir = item[loc[2]:loc[3]]
			checked += checkTest(t, name, dir, item[loc[4]:loc[5]])
			// Bare names that follow belong to this directory until the next named one.
			rest := item[loc[1]:]
			if next := named.FindStringIndex(rest); next != nil {
				rest = rest[:next[0]]
			}
			for _, b := range bare.FindAllStringSubmatch(rest, -1) {
				checked += checkTest(t, name, dir, b[1])
			}
		}
	}
	if checked < min {
		t.Errorf("only %d tests found on docs/%s: the parser is broken", checked, name)
	}
}

func checkTest(t *testing.T, page, dir, name string) int {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join("..", "..", dir, "*_test.go"))
	def := regexp.MustCompile(`(?m)^func ` + name + `\(`)
	for _, f := range files {
		src, err := os.ReadFile(f)
		if err == nil && def.Match(src) {
			return 1
		}
	}
	t.Errorf("docs/%s names %s: %s, which is not a test there", page, dir, name)
	return 1
}
