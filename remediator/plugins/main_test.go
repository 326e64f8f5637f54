package plugins

import (
	"testing"

	"github.com/cnimedic/cnimedic/test/labtest"
)

func TestMain(m *testing.M) { labtest.Main(m) }
