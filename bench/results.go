package bench

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/cnimedic/cnimedic/test/repo"
)

// Figure is one measured figure of the report, with its target and the baseline measured in the same run.
type Figure struct {
	Name  string  `json:"name"`
	Value float64 `json:"value"`
	Unit  string  `json:"unit"`
	// Target is the text of the target ("< 250 ms", ">= 1000000"); empty when the figure has none (context).
	Target string `json:"target,omitempty"`
	// Pass is nil when the figure has no target.
	Pass *bool `json:"pass,omitempty"`
	// Baseline names the same-run reference the ratio is taken against, with its value.
	Baseline      string  `json:"baseline,omitempty"`
	BaselineValue float64 `json:"baselineValue,omitempty"`
	Ratio         float64 `json:"ratio,omitempty"`
	Note          string  `json:"note,omitempty"`
}

// Section is what one benchmark writes to bin/bench/results/<id>.json.
type Section struct {
	ID      string    `json:"id"`
	Title   string    `json:"title"`
	Started time.Time `json:"started"`
	Seconds float64   `json:"seconds"`
	Figures []Figure  `json:"figures"`
	// Notes are lines printed under the figures: set-up, what limited the run, what the figures mean.
	Notes []string `json:"notes,omitempty"`
	// Failed is set when the benchmark could not produce its figures (the report says why, in Notes).
	Failed bool `json:"failed,omitempty"`
}

// Add appends a figure.
func (s *Section) Add(f Figure) { s.Figures = append(s.Figures, f) }

// Notef appends a note.
func (s *Section) Notef(format string, args ...any) {
	s.Notes = append(s.Notes, fmt.Sprintf(format, args...))
}

// Below is a figure whose target is value < limit.
func Below(name string, value float64, unit string, limit float64) Figure {
	pass := value < limit
	return Figure{Name: name, Value: value, Unit: unit, Target: fmt.Sprintf("< %s %s", trim(limit), unit), Pass: &pass}
}

// AtMost is a figure whose target is value <= limit.
func AtMost(name string, value float64, unit string, limit float64) Figure {
	pass := value <= limit
	return Figure{Name: name, Value: value, Unit: unit, Target: fmt.Sprintf("<= %s %s", trim(limit), unit), Pass: &pass}
}

// AtLeast is a figure whose target is value >= limit.
func AtLeast(name string, value float64, unit string, limit float64) Figure {
	pass := value >= limit
	return Figure{Name: name, Value: value, Unit: unit, Target: fmt.Sprintf(">= %s %s", trim(limit), unit), Pass: &pass}
}

// Info is a figure without a target.
func Info(name string, value float64, unit string) Figure {
	return Figure{Name: name, Value: value, Unit: unit}
}

// Against sets the figure's baseline and ratio.
func (f Figure) Against(baseline string, value float64) Figure {
	f.Baseline, f.BaselineValue = baseline, value
	if value != 0 {
		f.Ratio = f.Value / value
	}
	return f
}

// With sets the figure's note.
func (f Figure) With(note string) Figure { f.Note = note; return f }

func trim(v float64) string {
	if v == float64(int64(v)) {
		return fmt.Sprintf("%d", int64(v))
	}
	return fmt.Sprintf("%.4g", v)
}

// OutDir is where the benchmarks write: $BENCH_OUT, else bin/bench.
func OutDir() string {
	if d := os.Getenv("BENCH_OUT"); d != "" {
		return d
	}
	return filepath.Join(repo.Root(), "bin", "bench")
}

// Write stores the section in OutDir()/results/<id>.json.
func (s *Section) Write() error {
	s.Seconds = time.Since(s.Started).Seconds()
	dir := filepath.Join(OutDir(), "results")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	raw, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, s.ID+".json"), append(raw, '\n'), 0o644)
}

// ReadSections reads every section in dir, ordered by id.
func ReadSections(dir string) ([]Section, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.json"))
	if err != nil {
		return nil, err
	}
	var out []Section
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		var s Section
		if err := json.Unmarshal(raw, &s); err != nil {
			return nil, fmt.Errorf("%s: %w", f, err)
		}
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// Percentile is the p-th percentile (0..100) of xs by the nearest-rank method; xs is sorted in place.
func Percentile(xs []float64, p float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	sort.Float64s(xs)
	rank := int(float64(len(xs))*p/100+0.999999) - 1
	rank = max(0, min(rank, len(xs)-1))
	return xs[rank]
}
