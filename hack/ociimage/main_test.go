package ociimage

import (
	"testing"

	"github.com/cnimedic/cnimedic/test/labtest"
)

// TestMain keeps the tests' temporary files under the repository's .lab/tmp, never /tmp (files there have been seen
// to vanish under running tests on shared machines).
func TestMain(m *testing.M) { labtest.Main(m) }
