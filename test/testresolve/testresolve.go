// Package testresolve holds small but real resolvers and a verifier for the executor's own tests. They read the
// node's files and decide edits the way the read side's resolvers do (remediator/resolve), so that the executor's
// tests do not depend on the read side, and are simple enough that a test can predict every byte they write.
//
// They are linked only into test binaries.
package testresolve

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
	"github.com/cnimedic/cnimedic/remediator/step"
)

// versionRE finds the conflist's top-level cniVersion member; the edit replaces its value and keeps every other
// byte, the way a careful resolver does.
var versionRE = regexp.MustCompile(`("cniVersion"\s*:\s*)"[^"]*"`)

// SetCNIVersion resolves StepSetCNIVersion: the conflist's cniVersion becomes s.CNIVersion.
func SetCNIVersion(_ context.Context, env step.Env, s v1alpha1.PlanStep) (step.Resolution, error) {
	name := filepath.Join(env.ConfDir, s.ConfList)
	data, err := os.ReadFile(env.Root.Path(name))
	if err != nil {
		return step.Resolution{}, err
	}
	var doc map[string]any
	if err := json.Unmarshal(data, &doc); err != nil {
		return step.Resolution{}, fmt.Errorf("%s does not parse: %w", name, err)
	}
	if doc["cniVersion"] == s.CNIVersion {
		return step.Resolution{Message: fmt.Sprintf("%s already has cniVersion %s", name, s.CNIVersion)}, nil
	}
	var out []byte
	if versionRE.Match(data) {
		out = versionRE.ReplaceAll(data, []byte(`${1}"`+s.CNIVersion+`"`))
	} else {
		out = bytes.Replace(data, []byte("{"), []byte(`{"cniVersion": "`+s.CNIVersion+`", `), 1)
	}
	return step.Resolution{
		Edits:   []step.Edit{{Path: name, Content: out, Why: "cniVersion " + s.CNIVersion}},
		Message: fmt.Sprintf("%s: cniVersion %v -> %s", name, doc["cniVersion"], s.CNIVersion),
	}, nil
}

// InstallPlugins resolves StepInstallReferencePlugins: each plugin of s.Plugins is copied from env.BundleDir (a
// local directory here) into the first bin dir unless it is there with the same content.
func InstallPlugins(_ context.Context, env step.Env, s v1alpha1.PlanStep) (step.Resolution, error) {
	if len(env.BinDirs) == 0 {
		return step.Resolution{}, errors.New("no CNI bin dir")
	}
	var res step.Resolution
	for _, p := range s.Plugins {
		want, err := os.ReadFile(filepath.Join(env.BundleDir, p))
		if err != nil {
			return step.Resolution{}, fmt.Errorf("bundle: %w", err)
		}
		dst := filepath.Join(env.BinDirs[0], p)
		have, err := os.ReadFile(env.Root.Path(dst))
		if err == nil && bytes.Equal(have, want) {
			continue
		}
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return step.Resolution{}, err
		}
		res.Edits = append(res.Edits, step.Edit{Path: dst, Content: want, Mode: 0o755, Why: "bundled " + p})
	}
	res.Message = fmt.Sprintf("%d of %d plugins to install", len(res.Edits), len(s.Plugins))
	return res, nil
}

// MarkerAction is a repeatable host action: it creates a file.
type MarkerAction struct{ Path string }

// Describe says what the action does.
func (a MarkerAction) Describe() string { return "create marker " + a.Path }

// Do creates the marker (again).
func (a MarkerAction) Do(context.Context) error { return os.WriteFile(a.Path, []byte("done\n"), 0o644) }

// Resolvers are the test resolvers by step type.
func Resolvers() map[v1alpha1.StepType]step.Resolver {
	return map[v1alpha1.StepType]step.Resolver{
		v1alpha1.StepSetCNIVersion:           SetCNIVersion,
		v1alpha1.StepInstallReferencePlugins: InstallPlugins,
	}
}

// VerifyVersion returns a verifier that wants the conflist at confList (a host path) to have cniVersion want and
// the given plugins present and executable in the first bin dir.
func VerifyVersion(confList, want string, plugins ...string) func(context.Context, step.Env) (string, error) {
	return func(_ context.Context, env step.Env) (string, error) {
		data, err := os.ReadFile(env.Root.Path(confList))
		if err != nil {
			return "", err
		}
		var doc map[string]any
		if err := json.Unmarshal(data, &doc); err != nil {
			return "", fmt.Errorf("%s does not parse: %w", confList, err)
		}
		if doc["cniVersion"] != want {
			return "", fmt.Errorf("%s has cniVersion %v, want %s", confList, doc["cniVersion"], want)
		}
		for _, p := range plugins {
			fi, err := os.Stat(env.Root.Path(filepath.Join(env.BinDirs[0], p)))
			if err != nil {
				return "", err
			}
			if fi.Mode().Perm()&0o111 == 0 {
				return "", fmt.Errorf("%s is not executable", p)
			}
		}
		return fmt.Sprintf("cniVersion %s, plugins %s present", want, strings.Join(plugins, ",")), nil
	}
}
