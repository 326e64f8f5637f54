package resolve

import (
	"context"
	"fmt"
	"strings"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
	"github.com/cnimedic/cnimedic/remediator/cnicache"
	"github.com/cnimedic/cnimedic/remediator/conflist"
	"github.com/cnimedic/cnimedic/remediator/step"
)

// RemoveStaleCNIResults removes the cached results that block teardowns (see package cnicache):
//   - those of sandboxes the runtime no longer knows (sandboxes in any state count as live);
//   - with s.ResultVersion, those of that version on network s.Network while the network's configuration now has
//     another version: the evidence ("no converter for CNI result version A to B") shows that the runtime cannot
//     read them, so every teardown of those sandboxes fails until they go. Without a cached result, libcni runs the
//     DEL without a previous result, which the plugins handle.
//
// The executor backs every removed file up, as it does lease files.
func RemoveStaleCNIResults(ctx context.Context, env step.Env, s v1alpha1.PlanStep) (step.Resolution, error) {
	sbs, live, err := liveSandboxIDs(ctx, env)
	if err != nil {
		return step.Resolution{}, err
	}
	dir := env.CNICacheDir
	if dir == "" {
		dir = cnicache.DefaultDir
	}
	entries, err := cnicache.Read(env.Root, dir)
	if err != nil {
		return step.Resolution{}, err
	}
	configured := ""
	if s.ResultVersion != "" {
		if s.Network == "" {
			return step.Resolution{}, fmt.Errorf("RemoveStaleCNIResults with resultVersion %s needs the network", s.ResultVersion)
		}
		if configured, err = networkVersion(env, s.Network); err != nil {
			return step.Resolution{}, err
		}
	}
	var res step.Resolution
	stale, unreadable := 0, 0
	for _, e := range entries {
		switch {
		case !live[e.ContainerID]:
			stale++
			res.Edits = append(res.Edits, step.Edit{Path: e.Path, Remove: true,
				Why: fmt.Sprintf("cached result of network %s for sandbox %s, which no longer exists", e.Network, short(e.ContainerID))})
		case configured != "" && e.Network == s.Network && e.ResultVersion == s.ResultVersion && configured != s.ResultVersion:
			unreadable++
			res.Edits = append(res.Edits, step.Edit{Path: e.Path, Remove: true,
				Why: fmt.Sprintf("cached result %s of network %s for live sandbox %s: the network is now configured with %s and the runtime cannot convert it, so the sandbox cannot be torn down",
					e.ResultVersion, e.Network, short(e.ContainerID), configured)})
		}
	}
	res.Message = fmt.Sprintf("%d cached result(s) in %s, %d live sandbox(es): %d of sandboxes that no longer exist", len(entries), dir, len(sbs), stale)
	if s.ResultVersion != "" {
		res.Message += fmt.Sprintf(", %d of version %s on network %s (configured %s)", unreadable, s.ResultVersion, s.Network, configured)
	}
	return res, nil
}

// networkVersion is the cniVersion the conf dir's configuration of network now has.
func networkVersion(env step.Env, network string) (string, error) {
	files, err := conflist.List(env.Root, confDir(env))
	if err != nil {
		return "", err
	}
	var names []string
	for _, f := range files {
		if f.Valid() && f.Network == network {
			return f.EffectiveVersion, nil
		}
		names = append(names, f.Network)
	}
	return "", fmt.Errorf("no configuration of network %q in %s (networks: %s): the cached results' version cannot be compared",
		network, confDir(env), strings.Join(names, ", "))
}

// short is a sandbox id as crictl prints it.
func short(id string) string {
	if len(id) > 13 {
		return id[:13]
	}
	return id
}
