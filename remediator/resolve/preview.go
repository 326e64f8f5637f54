package resolve

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
	"github.com/cnimedic/cnimedic/remediator/conflist"
	"github.com/cnimedic/cnimedic/remediator/step"
)

// PlanPreview is a plan with what each step would change on this node, resolved now. Each step is resolved
// against the node as it is, before any earlier step ran: a step that depends on an earlier one (a cniVersion
// only the plugins about to be installed support) shows the error it would have today.
type PlanPreview struct {
	Plan  v1alpha1.Plan `json:"plan"`
	Steps []StepPreview `json:"steps"`
}

// StepPreview is one step's resolution.
type StepPreview struct {
	Index int               `json:"index"`
	Type  v1alpha1.StepType `json:"type"`
	// Unit is the unit a StopUnit or StartUnit step acts on.
	Unit    string       `json:"unit,omitempty"`
	Message string       `json:"message,omitempty"`
	Error   string       `json:"error,omitempty"`
	Changes []FileChange `json:"changes,omitempty"`
	Actions []string     `json:"actions,omitempty"`
}

// FileChange is one file a step would write or remove.
type FileChange struct {
	Path   string      `json:"path"`
	Why    string      `json:"why"`
	Remove bool        `json:"remove,omitempty"`
	Mode   fs.FileMode `json:"mode,omitempty"`
	// OldMode is the file's mode today (0 when it does not exist).
	OldMode fs.FileMode `json:"oldMode,omitempty"`
	// Diff is the unified diff of a text file; binaries are described by size and sha256 instead.
	Diff   string `json:"diff,omitempty"`
	Binary string `json:"binary,omitempty"`
}

// Preview resolves every step of a plan against the node without changing anything. Each file a step would
// change is checked against the node's allowlist as the executor checks it before writing (step.Paths): a step
// that would be refused there shows the refusal here, and a file behind a symlink is read only where the link
// may be followed. The plan itself is checked by executor.Validate before it is previewed.
func Preview(ctx context.Context, env step.Env, plan v1alpha1.Plan) PlanPreview {
	p := PlanPreview{Plan: plan}
	paths, pathsErr := step.NewPaths(env)
	for i, s := range plan.Steps {
		sp := StepPreview{Index: i + 1, Type: s.Type, Unit: s.Unit}
		r, ok := For(s.Type)
		if !ok {
			sp.Message = executedDirectly(s)
			p.Steps = append(p.Steps, sp)
			continue
		}
		if pathsErr != nil {
			sp.Error = "this node's paths are refused: " + pathsErr.Error()
			p.Steps = append(p.Steps, sp)
			continue
		}
		res, err := r(ctx, env, s)
		if err == nil {
			sp.Changes, err = describeAll(paths, res.Edits)
		}
		if err != nil {
			sp.Error = err.Error()
			p.Steps = append(p.Steps, sp)
			continue
		}
		sp.Message = res.Message
		for _, a := range res.Actions {
			sp.Actions = append(sp.Actions, a.Describe())
		}
		p.Steps = append(p.Steps, sp)
	}
	return p
}

func executedDirectly(s v1alpha1.PlanStep) string {
	switch s.Type {
	case v1alpha1.StepStopUnit:
		return "stop " + s.Unit + " and wait until it is inactive"
	case v1alpha1.StepStartUnit:
		return "start " + s.Unit + " and wait until it is active"
	case v1alpha1.StepVerifyNode:
		return "verify: configurations load, plugins support the configured version, the runtime reports NetworkReady"
	}
	return "no resolver for this step type"
}

// describeAll describes each edit, or says why the executor would refuse one.
func describeAll(paths step.Paths, edits []step.Edit) ([]FileChange, error) {
	var out []FileChange
	for _, e := range edits {
		local, err := paths.Resolve(e.Path)
		if err != nil {
			return nil, fmt.Errorf("refused: %w", err)
		}
		out = append(out, describe(local, e))
	}
	return out, nil
}

// describe turns an edit into what a person reviews: the exact diff of a text file. local is where the file is,
// its symlinks resolved inside the host root.
func describe(local string, e step.Edit) FileChange {
	fc := FileChange{Path: e.Path, Why: e.Why, Remove: e.Remove, Mode: e.Mode}
	old, err := os.ReadFile(local)
	if err != nil {
		old = nil
	}
	if st, err := os.Stat(local); err == nil {
		fc.OldMode = st.Mode().Perm()
	}
	newContent := e.Content
	if e.Remove {
		newContent = nil
		fc.Mode = 0
	}
	if isBinary(old) || isBinary(newContent) {
		if !e.Remove {
			sum := sha256.Sum256(newContent)
			fc.Binary = fmt.Sprintf("%d bytes, sha256 %s", len(newContent), hex.EncodeToString(sum[:]))
		}
		return fc
	}
	fc.Diff = conflist.UnifiedDiff(e.Path, old, newContent)
	return fc
}

func isBinary(b []byte) bool { return bytes.IndexByte(b, 0) >= 0 }

// WritePreviewText writes a preview for a person.
func WritePreviewText(w io.Writer, p PlanPreview) error {
	var b strings.Builder
	for _, s := range p.Steps {
		head := fmt.Sprintf("%d. %s", s.Index, s.Type)
		if s.Unit != "" {
			head += " " + s.Unit
		}
		b.WriteString(head + "\n")
		if s.Error != "" {
			b.WriteString("   WOULD FAIL: " + s.Error + "\n")
		}
		if s.Message != "" {
			b.WriteString("   " + s.Message + "\n")
		}
		for _, c := range s.Changes {
			switch {
			case c.Remove:
				fmt.Fprintf(&b, "   remove %s: %s\n", c.Path, c.Why)
			case c.Binary != "":
				fmt.Fprintf(&b, "   write %s (%s, mode %#o): %s\n", c.Path, c.Binary, c.Mode, c.Why)
			case c.Diff == "" && c.OldMode != c.Mode:
				fmt.Fprintf(&b, "   chmod %s %#o -> %#o\n", c.Path, c.OldMode, c.Mode)
			default:
				fmt.Fprintf(&b, "   write %s (mode %#o):\n", c.Path, c.Mode)
				for _, l := range strings.SplitAfter(c.Diff, "\n") {
					if l != "" {
						b.WriteString("     " + l)
					}
				}
			}
		}
		for _, a := range s.Actions {
			b.WriteString("   " + a + "\n")
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}
