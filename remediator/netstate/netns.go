package netstate

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/cnimedic/cnimedic/remediator/host"
)

// DefaultNetnsDir is where containerd and `ip netns` bind-mount named network namespaces.
const DefaultNetnsDir = "/var/run/netns"

// Netns is one entry of the netns dir.
type Netns struct {
	// Path is the host path.
	Path string `json:"path"`
	// Mounted tells whether a namespace is bind-mounted there; an unmounted file is a leftover of a teardown that
	// died halfway.
	Mounted bool `json:"mounted"`
	// UsedBySandbox names the live sandbox whose namespace this is, per the runtime.
	UsedBySandbox string `json:"usedBySandbox,omitempty"`
	// Processes counts processes running in the namespace (read from /proc; needs the host's PID namespace).
	Processes int `json:"processes"`
	// Stale: no live sandbox uses it and no process runs in it. Only meaningful when the runtime was asked.
	Stale bool `json:"stale"`
}

// ListNetns reads the netns dir (a host path). live maps a namespace's host path to the sandbox using it; nil
// means the runtime could not be asked, and then nothing is called stale. procDir is the /proc to scan for
// processes inside each namespace (the executor runs in the host's PID namespace).
func ListNetns(root host.Root, dir string, live map[string]string, procDir string) ([]Netns, error) {
	entries, err := os.ReadDir(root.Local(dir))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading netns dir %s: %w", dir, err)
	}
	users := nsUsers(procDir)
	var out []Netns
	for _, e := range entries {
		if e.IsDir() {
			continue
		}
		path := filepath.Join(dir, e.Name())
		lp := root.Local(path)
		n := Netns{Path: path, Mounted: isNsfs(lp)}
		if n.Mounted {
			if ino, err := inode(lp); err == nil {
				n.Processes = users[ino]
			}
		}
		if live != nil {
			n.UsedBySandbox = live[path]
			n.Stale = n.UsedBySandbox == "" && n.Processes == 0
		}
		out = append(out, n)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out, nil
}

// nsfsMagic is the filesystem type of a bind-mounted namespace (NSFS_MAGIC).
const nsfsMagic = 0x6e736673

func isNsfs(path string) bool {
	var st unix.Statfs_t
	return unix.Statfs(path, &st) == nil && st.Type == nsfsMagic
}

func inode(path string) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0, err
	}
	return st.Ino, nil
}

// nsUsers counts, per network namespace inode, the processes in it.
func nsUsers(procDir string) map[uint64]int {
	out := map[uint64]int{}
	if procDir == "" {
		return out
	}
	entries, err := os.ReadDir(procDir)
	if err != nil {
		return out
	}
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		if ino, err := inode(filepath.Join(procDir, e.Name(), "ns", "net")); err == nil {
			out[ino]++
		}
	}
	return out
}

// RemoveNetns is the host action that unmounts a named network namespace and removes its file. A namespace that
// is already gone is fine, so the action is safe to repeat.
type RemoveNetns struct {
	// HostPath is reported; Local is where this process sees it.
	HostPath string
	Local    string
}

// Describe says what the action does.
func (r RemoveNetns) Describe() string { return "unmount and remove network namespace " + r.HostPath }

// Do unmounts (lazily: a process that still holds the namespace keeps it alive without the name) and removes.
func (r RemoveNetns) Do(context.Context) error {
	if isNsfs(r.Local) {
		if err := unix.Unmount(r.Local, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("unmounting %s: %w", r.HostPath, err)
		}
	}
	if err := os.Remove(r.Local); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("removing %s: %w", r.HostPath, err)
	}
	return nil
}
