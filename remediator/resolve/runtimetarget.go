package resolve

import (
	"fmt"
	"os"
	"path"
	"slices"
	"strings"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
	"github.com/cnimedic/cnimedic/remediator/runtimecfg"
	"github.com/cnimedic/cnimedic/remediator/step"
)

// runtimeEdits decides where a repair of containerd's CNI settings is written so that it lasts, and computes each
// byte-exact edit:
//   - a key set in a drop-in is edited in that drop-in (containerd merges it last, so an edit of config.toml would
//     change nothing);
//   - where config.toml is generated at every start of its unit (k3s, RKE2), the rest goes to the template it is
//     generated from, when the template is plain TOML; with no template, or one with Go template actions, the
//     step is refused with the exact change a person must make;
//   - otherwise config.toml itself.
//
// A bin dir that holds the node's plugins is kept (such as GKE's /home/kubernetes/bin): the plan's bin_dir, the
// policy's default, is not written over it. notes say in words what was decided.
func runtimeEdits(env step.Env, cfgPath string, want runtimecfg.Want) (edits []step.Edit, notes []string, err error) {
	if l := env.Layout; l != nil && l.RuntimeConfigTemplate != "" && cfgPath == l.RuntimeConfigTemplate && generatedBy(env, l.RuntimeConfig) != nil {
		// A plan that names the template (the manager's, from the layout): what is in effect is read from the
		// config generated from it, and the edit goes to the template as below, or is refused saying what to do.
		cfgPath = l.RuntimeConfig
	}
	cfg := runtimecfg.Read(env.Root, cfgPath)
	if cfg.ParseError != "" {
		return nil, nil, fmt.Errorf("%s does not parse (%s); it is not rewritten", cfgPath, cfg.ParseError)
	}
	if want.BinDir != "" && !slices.Contains(cfg.Settings.BinDirs, want.BinDir) {
		for _, d := range cfg.Settings.BinDirs {
			if holdsPlugins(env, d) {
				notes = append(notes, fmt.Sprintf("the node's bin dir %s holds its CNI plugins and is kept (the plan's %s is not written)", d, want.BinDir))
				want.BinDir = ""
				break
			}
		}
	}

	// Each wanted key goes to the file whose value is in effect.
	byFile := map[string]*runtimecfg.Want{}
	var order []string
	to := func(key string) *runtimecfg.Want {
		f := cfg.SourceOf(key)
		if key == "bin_dir" {
			if _, ok := cfg.Sources["bin_dirs"]; ok {
				f = cfg.SourceOf("bin_dirs")
			}
		}
		if byFile[f] == nil {
			byFile[f] = &runtimecfg.Want{Version: want.Version}
			order = append(order, f)
		}
		return byFile[f]
	}
	if want.BinDir != "" {
		to("bin_dir").BinDir = want.BinDir
	}
	if want.ConfDir != "" {
		to("conf_dir").ConfDir = want.ConfDir
	}
	if want.ConfTemplate != nil {
		to("conf_template").ConfTemplate = want.ConfTemplate
	}
	if want.MaxConfNum != nil {
		to("max_conf_num").MaxConfNum = want.MaxConfNum
	}

	for _, f := range order {
		w := *byFile[f]
		target, raw, exists := f, []byte(nil), false
		if f == cfgPath {
			raw, exists = cfg.Raw(), cfg.Exists
			if l := generatedBy(env, cfgPath); l != nil {
				// Edited in the template; what config.toml would get tells whether anything changes at all.
				if _, changes, err := runtimecfg.Edit(raw, exists, w); err != nil || len(changes) == 0 {
					if err != nil {
						return nil, nil, fmt.Errorf("%s: %w", cfgPath, err)
					}
					continue
				}
				t, err := templateTarget(env, *l, cfg, w)
				if err != nil {
					return nil, nil, err
				}
				target = t
				tc := runtimecfg.Read(env.Root, t)
				raw, exists = tc.Raw(), tc.Exists
				notes = append(notes, fmt.Sprintf("%s is generated from %s at every start of %s: the template is edited, so the repair lasts", cfgPath, t, strings.Join(l.Units, ", ")))
			}
		} else {
			d := runtimecfg.Read(env.Root, f)
			if d.ParseError != "" {
				return nil, nil, fmt.Errorf("%s does not parse (%s); it is not rewritten", f, d.ParseError)
			}
			raw, exists = d.Raw(), d.Exists
			notes = append(notes, fmt.Sprintf("the drop-in %s sets the key, so it is edited there", f))
		}
		edited, changes, err := runtimecfg.Edit(raw, exists, w)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", target, err)
		}
		if len(changes) == 0 {
			continue
		}
		var words []string
		for _, c := range changes {
			words = append(words, fmt.Sprintf("%s %s -> %s", c.Key, c.From, c.To))
		}
		mode := ConfMode
		if st, err := os.Stat(env.Root.Path(target)); err == nil {
			mode = st.Mode().Perm()
		}
		edits = append(edits, step.Edit{Path: target, Content: edited, Mode: mode, Why: "set containerd's CRI CNI settings: " + strings.Join(words, ", ")})
	}
	return edits, notes, nil
}

// generatedBy is the layout whose unit generates cfgPath at every start (k3s, RKE2), or nil.
func generatedBy(env step.Env, cfgPath string) *v1alpha1.NodeLayout {
	l := env.Layout
	if l == nil || l.RuntimeConfig != cfgPath || (l.Kind != v1alpha1.LayoutK3s && l.Kind != v1alpha1.LayoutRKE2) {
		return nil
	}
	return l
}

// templateTarget is the template a lasting edit goes to, or the refusal that says what a person must do: k3s and
// RKE2 render a template with Go's text/template, so one with template actions is not TOML cnimedic may edit.
func templateTarget(env step.Env, l v1alpha1.NodeLayout, cfg runtimecfg.Config, w runtimecfg.Want) (string, error) {
	table := cfg.Table
	var keys []string
	if w.BinDir != "" {
		key, val := "bin_dir", fmt.Sprintf("%q", w.BinDir)
		if cfg.Version >= 3 {
			key, val = "bin_dirs", fmt.Sprintf("[%q]", w.BinDir)
		}
		keys = append(keys, key+" = "+val)
	}
	if w.ConfDir != "" {
		keys = append(keys, fmt.Sprintf("conf_dir = %q", w.ConfDir))
	}
	if w.ConfTemplate != nil {
		keys = append(keys, fmt.Sprintf("conf_template = %q", *w.ConfTemplate))
	}
	if w.MaxConfNum != nil {
		keys = append(keys, fmt.Sprintf("max_conf_num = %d", *w.MaxConfNum))
	}
	change := fmt.Sprintf("in the [%s] table set %s", table, strings.Join(keys, ", "))
	unit := strings.Join(l.Units, ", ")
	docs := "https://docs.k3s.io/advanced#configuring-containerd"
	if l.Kind == v1alpha1.LayoutRKE2 {
		docs = "https://docs.rke2.io/advanced#configuring-containerd"
	}
	if t := l.RuntimeConfigTemplate; t != "" {
		raw, err := os.ReadFile(env.Root.Local(t))
		if err != nil {
			return "", fmt.Errorf("the template %s cannot be read: %w; nothing was changed", t, err)
		}
		if strings.Contains(string(raw), "{{") {
			return "", fmt.Errorf("%s is generated from the template %s, which uses Go template actions, so cnimedic does not edit it: %s in the template (a table the base template already renders cannot be added again: replace {{ template \"base\" . }} with the rendered %s's content and edit it there), then restart %s (%s)",
				cfg.Path, t, change, cfg.Path, unit, docs)
		}
		return t, nil
	}
	name := "config.toml.tmpl"
	if cfg.Version >= 3 {
		name = "config-v3.toml.tmpl"
	}
	return "", fmt.Errorf("%s is generated by %s at every start, so an edit of it would be lost: to make the repair last, copy %s to %s and %s there, then restart %s (%s)",
		cfg.Path, unit, cfg.Path, path.Join(path.Dir(cfg.Path), name), change, unit, docs)
}

// holdsPlugins reports whether a bin dir holds CNI plugins (loopback or host-local, which every node runs).
func holdsPlugins(env step.Env, dir string) bool {
	for _, p := range []string{"loopback", "host-local"} {
		if st, err := os.Stat(env.Root.Local(path.Join(dir, p))); err == nil && st.Mode().IsRegular() {
			return true
		}
	}
	return false
}
