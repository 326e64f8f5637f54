package nspawn

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Layout of a node's state directory.
const (
	stateFile      = "node.json"
	consoleLogFile = "console.log"
	rootDir        = "root"       // the overlay mount: the node's / seen from the host
	upperDir       = "upper"      // the overlay's writable layer
	workDir        = "work"       // overlayfs's scratch directory
	busDir         = "bus"        // bound to the node's /run/dbus: system_bus_socket appears here
	containerdDir  = "containerd" // bound to /var/lib/containerd, off the overlay (see Boot)
)

// state is what a later process needs to find and tear down a node: written before each step of Boot that leaves
// something on the host, so that a crash at any point is recoverable by Cleanup.
type state struct {
	Name     string   `json:"name"`
	BaseRoot string   `json:"baseRoot"`
	Cgroups  []string `json:"cgroups"`
	// PID is the systemd-nspawn process; PIDStart its start time (clock ticks after boot, /proc/PID/stat field 22)
	// so that a recycled PID is never mistaken for the node.
	PID      int    `json:"pid,omitempty"`
	PIDStart uint64 `json:"pidStart,omitempty"`
	// Leader is the node's PID 1 (systemd) as seen from the host.
	Leader int `json:"leader,omitempty"`
	// Owner and OwnerStart identify the process that booted an Ephemeral node (see ReapOrphans).
	Owner      int    `json:"owner,omitempty"`
	OwnerStart uint64 `json:"ownerStart,omitempty"`
	// LockFile is the image lock nspawn takes in /run/systemd/nspawn/locks; it stays there if nspawn is killed.
	LockFile string `json:"lockFile,omitempty"`
}

func writeState(dir string, s *state) error {
	data, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	tmp := filepath.Join(dir, stateFile+".tmp")
	if err := os.WriteFile(tmp, append(data, '\n'), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(dir, stateFile))
}

// readState returns nil, nil when the directory holds no state file: nothing was ever started there.
func readState(dir string) (*state, error) {
	data, err := os.ReadFile(filepath.Join(dir, stateFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var s state
	if err := json.Unmarshal(data, &s); err != nil {
		return nil, fmt.Errorf("read %s: %w", filepath.Join(dir, stateFile), err)
	}
	return &s, nil
}

// processStart returns the start time of a process (field 22 of /proc/PID/stat), or an error if there is none.
func processStart(pid int) (uint64, error) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	// The command name (field 2) is in parentheses and may contain spaces: count fields after the last ')'.
	s := string(data)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("unexpected /proc/%d/stat", pid)
	}
	fields := strings.Fields(s[i+1:])
	if len(fields) < 20 { // field 3 is fields[0], so field 22 is fields[19]
		return 0, fmt.Errorf("unexpected /proc/%d/stat", pid)
	}
	return strconv.ParseUint(fields[19], 10, 64)
}

// alive tells whether the process recorded as (pid, start) still runs (a zombie counts as gone).
func alive(pid int, start uint64) bool {
	if pid <= 0 {
		return false
	}
	got, err := processStart(pid)
	if err != nil || got != start {
		return false
	}
	st, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	s := string(st)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	return len(fields) > 0 && fields[0] != "Z" && fields[0] != "X"
}
