package nspawn

import (
	"bufio"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// mountInfo is one line of /proc/self/mountinfo, the fields this package needs.
type mountInfo struct {
	root       string // path inside the mounted filesystem that is mounted here
	mountPoint string
	fsType     string
	superOpts  []string
}

// readMountInfo parses /proc/self/mountinfo (proc(5)): "ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS [OPTIONAL...] -
// FSTYPE SOURCE SUPEROPTS", with spaces and other bytes in paths escaped as \ooo.
func readMountInfo() ([]mountInfo, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var mounts []mountInfo
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		sep := -1
		for i := 6; i < len(fields); i++ {
			if fields[i] == "-" {
				sep = i
				break
			}
		}
		if len(fields) < 5 || sep < 0 || sep+3 > len(fields) {
			return nil, fmt.Errorf("unexpected line in /proc/self/mountinfo: %q", sc.Text())
		}
		mounts = append(mounts, mountInfo{
			root:       unescapeMountPath(fields[3]),
			mountPoint: unescapeMountPath(fields[4]),
			fsType:     fields[sep+1],
			superOpts:  strings.Split(fields[sep+3], ","),
		})
	}
	return mounts, sc.Err()
}

func unescapeMountPath(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// mountsUnder returns the mount points at or below dir, deepest first (the order they must be unmounted in).
func mountsUnder(dir string) ([]string, error) {
	mounts, err := readMountInfo()
	if err != nil {
		return nil, err
	}
	var under []string
	for _, m := range mounts {
		if m.mountPoint == dir || strings.HasPrefix(m.mountPoint, dir+"/") {
			under = append(under, m.mountPoint)
		}
	}
	sort.Slice(under, func(i, j int) bool { return len(under[i]) > len(under[j]) })
	return under, nil
}

// unmountAll unmounts everything at or below dir. A busy mount is detached lazily so that the directory can be
// removed; the kernel frees it when its last user goes.
func unmountAll(dir string) error {
	for range 3 { // a mount may be stacked several times on one point
		mps, err := mountsUnder(dir)
		if err != nil || len(mps) == 0 {
			return err
		}
		for _, mp := range mps {
			if err := unix.Unmount(mp, 0); err != nil && err != unix.EINVAL && err != unix.ENOENT {
				if err := unix.Unmount(mp, unix.MNT_DETACH); err != nil && err != unix.EINVAL {
					return fmt.Errorf("unmount %s: %w", mp, err)
				}
			}
		}
	}
	mps, err := mountsUnder(dir)
	if err == nil && len(mps) > 0 {
		err = fmt.Errorf("still mounted after unmounting: %s", strings.Join(mps, ", "))
	}
	return err
}

// removeStateDir removes a node's state directory, but only once nothing is mounted below it: os.RemoveAll would
// otherwise descend into a mount (the node's root is an overlay over the shared base).
func removeStateDir(dir string) error {
	if err := unmountAll(dir); err != nil {
		return err
	}
	return os.RemoveAll(dir)
}
