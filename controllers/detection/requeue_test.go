package detection

import (
	"testing"
	"time"
)

// A node below the thresholds is counted again as soon as time alone can change the answer, not only at the
// periodic recount: kubelet's retries back off, so the event that would wake detection may come minutes later.
func TestNextCountIsTheEarliestMomentTimeCanChangeTheAnswer(t *testing.T) {
	now := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	const periodic, minStuck = 15 * time.Second, 10 * time.Second
	cases := []struct {
		name     string
		cands    []candidate
		graceEnd time.Time
		want     time.Duration
	}{
		{"nothing will ripen: the periodic recount", []candidate{{events: 1}}, time.Time{}, periodic},
		{"a pod becomes stuck long enough in 4s", []candidate{{ripens: now.Add(9 * time.Second)}, {ripens: now.Add(4 * time.Second)}}, time.Time{}, 4 * time.Second},
		{"ripening after the periodic recount does not delay it", []candidate{{ripens: now.Add(time.Minute)}}, time.Time{}, periodic},
		{"the node condition reaches minStuck in 3s", []candidate{{condition: "NetworkReady=false", conditionFor: 7 * time.Second}}, time.Time{}, 3 * time.Second},
		{"a condition already old enough adds nothing", []candidate{{condition: "NetworkReady=false", conditionFor: time.Minute}}, time.Time{}, periodic},
		{"the boot grace ends in 2s", []candidate{{ripens: now.Add(5 * time.Second)}}, now.Add(2 * time.Second), 2 * time.Second},
		{"a past ripening is not a requeue in the past", []candidate{{ripens: now.Add(-time.Second)}}, now.Add(-time.Hour), periodic},
	}
	for _, c := range cases {
		if got := nextCount(c.cands, now, c.graceEnd, minStuck, periodic); got != c.want {
			t.Errorf("%s: next count in %s, want %s", c.name, got, c.want)
		}
	}
}
