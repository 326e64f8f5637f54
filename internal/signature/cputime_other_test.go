//go:build !unix

package signature

import "time"

// processCPUTime is unavailable here: the benchmarks then report wall-clock rates only.
func processCPUTime() (time.Duration, bool) { return 0, false }
