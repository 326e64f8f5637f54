//go:build bench

package bench

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// clockTick is USER_HZ, 100 on every Linux this runs on.
const clockTick = 100

type procStat struct {
	comm         string
	ppid         int
	utime, stime int64 // clock ticks
}

func readStat(pid int) (procStat, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return procStat{}, err
	}
	s := string(raw)
	open, closing := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if open < 0 || closing < open {
		return procStat{}, fmt.Errorf("unexpected /proc/%d/stat", pid)
	}
	st := procStat{comm: s[open+1 : closing]}
	f := strings.Fields(s[closing+1:])
	// f[0] is the state; ppid is field 4 of stat, utime 14, stime 15 (1-based, comm being 2).
	if len(f) < 13 {
		return procStat{}, fmt.Errorf("short /proc/%d/stat", pid)
	}
	st.ppid, _ = strconv.Atoi(f[1])
	st.utime, _ = strconv.ParseInt(f[11], 10, 64)
	st.stime, _ = strconv.ParseInt(f[12], 10, 64)
	return st, nil
}

// CPUTime is the CPU time (user and system, all threads) the process used so far.
func CPUTime(pid int) (time.Duration, error) {
	st, err := readStat(pid)
	if err != nil {
		return 0, err
	}
	return time.Duration(st.utime+st.stime) * time.Second / clockTick, nil
}

// Memory is a process's resident memory now and at its peak, in bytes; Anon and File split RSS into the
// process's own memory and the pages of mapped files (its binary: clean, shared with the page cache).
type Memory struct{ RSS, Peak, Anon, File float64 }

// ReadMemory reads VmRSS, VmHWM, RssAnon and RssFile.
func ReadMemory(pid int) (Memory, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return Memory{}, err
	}
	defer f.Close()
	var m Memory
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		for key, dst := range map[string]*float64{"VmRSS:": &m.RSS, "VmHWM:": &m.Peak, "RssAnon:": &m.Anon, "RssFile:": &m.File} {
			if strings.HasPrefix(line, key) {
				fields := strings.Fields(line[len(key):])
				if len(fields) > 0 {
					kb, _ := strconv.ParseFloat(fields[0], 64)
					*dst = kb * 1024
				}
			}
		}
	}
	return m, sc.Err()
}

// MemAvailable is the machine's available memory (/proc/meminfo), in bytes.
func MemAvailable() float64 {
	raw, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if strings.HasPrefix(line, "MemAvailable:") {
			f := strings.Fields(line[len("MemAvailable:"):])
			if len(f) > 0 {
				kb, _ := strconv.ParseFloat(f[0], 64)
				return kb * 1024
			}
		}
	}
	return 0
}

// MiB converts bytes.
func MiB(b float64) float64 { return b / (1 << 20) }

// LoadAverage is the machine's 1-minute load average (context for the figures: the machine is shared).
func LoadAverage() string {
	raw, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(raw))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

func mustJSON(v any) []byte {
	raw, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return raw
}
