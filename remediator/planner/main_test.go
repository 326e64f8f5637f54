package planner

import (
	"testing"

	"github.com/cnimedic/cnimedic/internal/labtest"
)

func TestMain(m *testing.M) { labtest.Main(m) }
