package executor

import (
	"encoding/json"
	"slices"
	"strings"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
)

// TerminationMessageLimit is what Kubernetes keeps of a container's termination message.
const TerminationMessageLimit = 4096

// shortened marks text that was cut to fit the termination message; the whole result is on the pod's log.
const shortened = " …(shortened; the full result is in the pod's log)"

// TerminationMessage encodes a result as JSON of at most limit bytes: diffs, then messages, then timestamps are
// shortened until it fits, so that the manager always gets the outcome, the steps and the changed paths. The
// full result goes to stdout (the pod's log) unshortened.
func TerminationMessage(res v1alpha1.ExecutorResult, limit int) []byte {
	if limit <= 0 {
		limit = TerminationMessageLimit
	}
	fits := func(r v1alpha1.ExecutorResult) ([]byte, bool) {
		b, err := json.Marshal(r)
		return b, err == nil && len(b) <= limit
	}
	if b, ok := fits(res); ok {
		return b
	}
	r := deepCopy(res)
	// Each pass cuts deeper; the order is what the manager needs least first.
	passes := []func(){
		func() { cutDiffs(&r, 20) },
		func() { cutDiffs(&r, 6) },
		// A diff of few, long lines (a conflist written on one line): its start, rather than nothing.
		func() { cutDiffBytes(&r, limit/2) },
		func() { cutStepMessages(&r, 300) },
		func() { r.Message = cut(r.Message, 1000) },
		func() { cutDiffs(&r, 0) },
		func() { cutStepMessages(&r, 100) },
		func() {
			for i := range r.Steps {
				r.Steps[i].Started, r.Steps[i].Finished = nil, nil
			}
		},
		func() { r.Message = cut(r.Message, 300) },
		func() { cutStepMessages(&r, 0) },
		func() {
			for i := range r.Changes {
				r.Changes[i].Backup = ""
			}
		},
	}
	for _, p := range passes {
		p()
		if b, ok := fits(r); ok {
			return b
		}
	}
	// Findings: the manager decides on the errors' signatures and fixes; words and warnings go first.
	for _, n := range []int{300, 120} {
		cutFindings(&r, n)
		if b, ok := fits(r); ok {
			return b
		}
	}
	r.Findings = slices.DeleteFunc(r.Findings, func(f v1alpha1.Finding) bool { return f.Severity != v1alpha1.SeverityError })
	cutFindings(&r, 0)
	if b, ok := fits(r); ok {
		return b
	}
	// Too many steps or changes for even that: keep what the manager decides on.
	n := len(r.Changes)
	r.Changes = nil
	r.Steps = nil
	r.Message = cut(r.Message, 1000) + "; steps and " + itoa(n) + " changed paths left out to fit"
	if b, ok := fits(r); ok {
		return b
	}
	r.Message = cut(r.Message, 200)
	b, _ := json.Marshal(r)
	return b
}

func deepCopy(res v1alpha1.ExecutorResult) v1alpha1.ExecutorResult {
	r := res
	r.Steps = append([]v1alpha1.StepResult(nil), res.Steps...)
	r.Changes = append([]v1alpha1.FileChange(nil), res.Changes...)
	r.Findings = append([]v1alpha1.Finding(nil), res.Findings...)
	return r
}

// cutFindings shortens each finding's summary to n bytes and drops its repair words and path.
func cutFindings(r *v1alpha1.ExecutorResult, n int) {
	for i := range r.Findings {
		f := &r.Findings[i]
		f.Summary, f.Repair, f.Path = cut(f.Summary, n), "", ""
	}
}

// cutDiffs keeps the first n lines of each diff.
func cutDiffs(r *v1alpha1.ExecutorResult, n int) {
	for i := range r.Changes {
		d := r.Changes[i].Diff
		lines := strings.SplitAfter(d, "\n")
		if len(lines) <= n || d == "" {
			continue
		}
		r.Changes[i].Truncated = true
		if n == 0 {
			r.Changes[i].Diff = "(diff left out to fit; see the pod's log)"
			continue
		}
		r.Changes[i].Diff = strings.Join(lines[:n], "") + shortened
	}
}

// cutDiffBytes shares budget bytes among the diffs, cutting each one longer than its share.
func cutDiffBytes(r *v1alpha1.ExecutorResult, budget int) {
	if len(r.Changes) == 0 {
		return
	}
	share := budget / len(r.Changes)
	for i := range r.Changes {
		if d := r.Changes[i].Diff; len(d) > share {
			r.Changes[i].Diff = cut(d, share)
			r.Changes[i].Truncated = true
		}
	}
}

func cutStepMessages(r *v1alpha1.ExecutorResult, n int) {
	for i := range r.Steps {
		r.Steps[i].Message = cut(r.Steps[i].Message, n)
	}
}

// cut shortens s to about n bytes, on a rune boundary.
func cut(s string, n int) string {
	if len(s) <= n {
		return s
	}
	if n == 0 {
		return ""
	}
	i := n
	for i > 0 && !utf8Start(s[i]) {
		i--
	}
	return s[:i] + shortened
}

func utf8Start(b byte) bool { return b&0xC0 != 0x80 }

func itoa(n int) string {
	b, _ := json.Marshal(n)
	return string(b)
}
