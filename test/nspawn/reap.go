package nspawn

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// ReapOrphans tears down every Ephemeral node on this host whose owner (the process that booted it) is gone, and
// returns their names. Nodes of a living owner and non-ephemeral nodes (the lab's) are left alone.
//
// Boot already clears a node left in its own state directory; this finds the others, e.g. a killed test run's nodes
// with names or state directories the next run never uses again. Nodes are found through their cgroups, named
// after them, and each one's state directory through its nspawn's --directory argument.
func ReapOrphans(ctx context.Context) ([]string, error) {
	own, err := nodeCgroupDirs("x")
	if err != nil {
		return nil, err
	}
	// Candidate nodes: cgroups named like ours beside where ours would be, in every hierarchy (a node booted from
	// another cgroup is still found in the hierarchies where both sit at the root).
	dirsByName := map[string][]string{}
	for _, dir := range own {
		parent := filepath.Dir(dir)
		entries, err := os.ReadDir(parent)
		if err != nil {
			return nil, err
		}
		for _, e := range entries {
			if name, ok := strings.CutPrefix(e.Name(), cgroupDirName("")); ok && e.IsDir() {
				dirsByName[name] = append(dirsByName[name], filepath.Join(parent, e.Name()))
			}
		}
	}
	var reaped []string
	var errs []error
	for name, dirs := range dirsByName {
		stateDir, ok := orphanStateDir(name, dirs)
		if !ok {
			continue
		}
		if err := Cleanup(ctx, stateDir); err != nil {
			errs = append(errs, err)
			continue
		}
		reaped = append(reaped, name)
	}
	return reaped, errors.Join(errs...)
}

// orphanStateDir returns the state directory of the node with these cgroups if it is an Ephemeral node whose owner
// is gone.
func orphanStateDir(name string, dirs []string) (string, bool) {
	pids, err := cgroupPIDs(dirs)
	if err != nil {
		return "", false
	}
	for _, pid := range pids {
		args := cmdline(pid)
		if len(args) == 0 || filepath.Base(args[0]) != "systemd-nspawn" || !slices.Contains(args, "--machine="+name) {
			continue
		}
		for _, a := range args {
			root, ok := strings.CutPrefix(a, "--directory=")
			if !ok {
				continue
			}
			stateDir := filepath.Dir(root)
			st, err := readState(stateDir)
			// Only a node this package booted, as its state file says, with an owner that is gone.
			if err != nil || st == nil || st.Name != name || st.PID != pid || st.Owner == 0 || alive(st.Owner, st.OwnerStart) {
				return "", false
			}
			return stateDir, true
		}
	}
	return "", false
}

func cmdline(pid int) []string {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil || len(data) == 0 {
		return nil
	}
	return strings.Split(strings.TrimSuffix(string(data), "\x00"), "\x00")
}
