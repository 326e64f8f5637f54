package diagnose

import (
	"testing"

	"github.com/cnimedic/cnimedic/remediator/internal/labtest"
)

func TestMain(m *testing.M) { labtest.Main(m) }
