// Package repo finds the repository's top directory, for tests, benchmarks and the lab tools that read files of
// the tree (the CRDs, the chart, bin/) wherever `go test` or `go run` started them.
package repo

import (
	"path/filepath"
	"runtime"
)

// Root is the repository's top directory, found from this file's location.
func Root() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}
