package nspawn

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// cgroupDirName is the node's own cgroup, created as a child of the caller's cgroup in every hierarchy.
func cgroupDirName(name string) string { return "cnimedic-nspawn-" + name }

// nodeCgroupDirs returns, for every cgroup hierarchy mounted on the host (each v1 controller, name=systemd and the
// unified v2 one), the directory of the node's own cgroup: a child of the calling process's cgroup there.
//
// Why every hierarchy: on this cgroup v1 hybrid host, nspawn gives the container a cgroup namespace rooted at the
// cgroups its payload starts in. Had the node shared the caller's cgroup in, say, the memory hierarchy, two nodes'
// kubelets would each see the same root, build one kubepods tree and garbage-collect each other's pods.
func nodeCgroupDirs(name string) ([]string, error) {
	mounts, err := readMountInfo()
	if err != nil {
		return nil, err
	}
	own, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return nil, err
	}
	var dirs []string
	for line := range strings.SplitSeq(strings.TrimSpace(string(own)), "\n") {
		// "ID:CONTROLLERS:PATH"; CONTROLLERS is empty for the v2 hierarchy.
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			return nil, fmt.Errorf("unexpected line in /proc/self/cgroup: %q", line)
		}
		m, ok := hierarchyMount(mounts, parts[1])
		if !ok {
			continue // a hierarchy nobody mounted here (e.g. a named one of another tool): nothing to place
		}
		rel, ok := strings.CutPrefix(parts[2], strings.TrimSuffix(m.root, "/"))
		if !ok || (rel != "" && !strings.HasPrefix(rel, "/")) {
			return nil, fmt.Errorf("this process's cgroup %q in hierarchy %q is outside its mount %s (root %s)",
				parts[2], parts[1], m.mountPoint, m.root)
		}
		dirs = append(dirs, filepath.Join(m.mountPoint, rel, cgroupDirName(name)))
	}
	if len(dirs) == 0 {
		return nil, errors.New("no cgroup hierarchy is mounted on this host")
	}
	return dirs, nil
}

// hierarchyMount finds where the hierarchy with the given controller list ("cpu", "name=systemd", "" for v2) is
// mounted; for a hierarchy mounted several times, the mount closest to its root wins.
func hierarchyMount(mounts []mountInfo, controllers string) (mountInfo, bool) {
	var best mountInfo
	found := false
	for _, m := range mounts {
		switch {
		case controllers == "" && m.fsType == "cgroup2":
		case controllers != "" && m.fsType == "cgroup" && hasAll(m.superOpts, strings.Split(controllers, ",")):
		default:
			continue
		}
		if !found || len(m.root) < len(best.root) {
			best, found = m, true
		}
	}
	return best, found
}

func hasAll(have, want []string) bool {
	for _, w := range want {
		if !slices.Contains(have, w) {
			return false
		}
	}
	return true
}

// createCgroups creates the node's cgroup directories. A new v1 cpuset cgroup has no CPUs and no memory nodes, and
// the kernel refuses to move a process into it: copy both from the parent.
func createCgroups(dirs []string) error {
	for _, dir := range dirs {
		if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
			return fmt.Errorf("create cgroup: %w", err)
		}
		for _, file := range []string{"cpuset.cpus", "cpuset.mems"} {
			own := filepath.Join(dir, file)
			cur, err := os.ReadFile(own)
			if err != nil || strings.TrimSpace(string(cur)) != "" {
				continue // not a cpuset hierarchy, or already set
			}
			parent, err := os.ReadFile(filepath.Join(filepath.Dir(dir), file))
			if err != nil {
				return fmt.Errorf("read the parent's %s: %w", file, err)
			}
			if err := os.WriteFile(own, parent, 0o644); err != nil {
				return fmt.Errorf("set %s: %w", own, err)
			}
		}
	}
	return nil
}

// cgroupTree lists dir and all cgroups below it, deepest first (the order in which they can be removed).
func cgroupTree(dir string) ([]string, error) {
	var tree []string
	err := filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				return nil // removed while walking (systemd inside tidying up)
			}
			return err
		}
		if d.IsDir() {
			tree = append(tree, path)
		}
		return nil
	})
	slices.Reverse(tree) // WalkDir visits parents before children
	return tree, err
}

// cgroupPIDs returns every process in the given cgroups and their descendants.
func cgroupPIDs(dirs []string) ([]int, error) {
	seen := map[int]bool{}
	var pids []int
	for _, dir := range dirs {
		tree, err := cgroupTree(dir)
		if err != nil {
			return nil, err
		}
		for _, cg := range tree {
			f, err := os.Open(filepath.Join(cg, "cgroup.procs"))
			if errors.Is(err, os.ErrNotExist) {
				continue
			}
			if err != nil {
				return nil, err
			}
			sc := bufio.NewScanner(f)
			for sc.Scan() {
				pid, err := strconv.Atoi(strings.TrimSpace(sc.Text()))
				if err == nil && !seen[pid] {
					seen[pid] = true
					pids = append(pids, pid)
				}
			}
			f.Close()
		}
	}
	return pids, nil
}

// killCgroups SIGKILLs every process in the node's cgroups until none is left. v1 has no cgroup.kill, and a process
// may fork while we kill its siblings, hence the loop.
func killCgroups(ctx context.Context, dirs []string) error {
	for {
		pids, err := cgroupPIDs(dirs)
		if err != nil {
			return err
		}
		if len(pids) == 0 {
			return nil
		}
		for _, pid := range pids {
			_ = unix.Kill(pid, unix.SIGKILL)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("processes still in the node's cgroups: %v: %w", pids, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// removeCgroups removes the node's cgroups bottom-up: nspawn leaves its payload/supervisor groups and the node's
// systemd leaves init.scope behind. A cgroup whose last process just died can stay busy for a moment, so EBUSY is
// retried until ctx ends.
func removeCgroups(ctx context.Context, dirs []string) error {
	for _, dir := range dirs {
		for {
			err := removeCgroupTree(dir)
			if err == nil {
				break
			}
			if !errors.Is(err, unix.EBUSY) {
				return err
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("%w (gave up: %v)", err, ctx.Err())
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
	return nil
}

func removeCgroupTree(dir string) error {
	tree, err := cgroupTree(dir)
	if err != nil {
		return err
	}
	for _, cg := range tree {
		// os.Remove would try unlink first; cgroup directories only take rmdir.
		if err := unix.Rmdir(cg); err != nil && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("remove cgroup %s: %w", cg, err)
		}
	}
	return nil
}
