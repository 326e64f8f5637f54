package lab

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Proc is a control-plane process the lab started on the host. It outlives the command that started it (`lab up`
// returns, the lab stays), so it is found again by its PID and start time, never by name: a recycled PID or
// another engineer's etcd on this machine is never mistaken for the lab's.
type Proc struct {
	Name  string   `json:"name"`
	PID   int      `json:"pid"`
	Start uint64   `json:"start"` // /proc/PID/stat field 22, clock ticks after boot
	Argv  []string `json:"argv"`
	Log   string   `json:"log"`
}

// startProc starts argv detached (its own session, stdin from /dev/null, output to logFile) and returns it. The
// process is reaped by a goroutine while this process lives; after that, init adopts it.
func startProc(name string, argv []string, logFile string) (*Proc, error) {
	if err := os.MkdirAll(filepath.Dir(logFile), 0o755); err != nil {
		return nil, err
	}
	log, err := os.OpenFile(logFile, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer log.Close()
	fmt.Fprintf(log, "\n==== %s: %s\n", time.Now().Format(time.RFC3339), strings.Join(argv, " "))
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = log, log
	// Not the caller's environment: a KUBECONFIG or proxy variable of the user's shell must not change how the
	// control plane behaves.
	cmd.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root"}
	// Its own session: a ^C meant for `make lab-up` or `go test` does not reach it; lab down stops it.
	cmd.SysProcAttr = &unix.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("lab: start %s: %w", name, err)
	}
	go func() { _ = cmd.Wait() }()
	start, err := procStart(cmd.Process.Pid)
	if err != nil {
		return nil, fmt.Errorf("lab: %s exited at once; see %s", name, logFile)
	}
	return &Proc{Name: name, PID: cmd.Process.Pid, Start: start, Argv: argv, Log: logFile}, nil
}

// Alive reports whether the process still runs (a zombie counts as gone).
func (p *Proc) Alive() bool {
	if p == nil || p.PID <= 0 {
		return false
	}
	st, err := os.ReadFile("/proc/" + strconv.Itoa(p.PID) + "/stat")
	if err != nil {
		return false
	}
	fields, ok := statFields(string(st))
	if !ok || len(fields) < 20 {
		return false
	}
	start, err := strconv.ParseUint(fields[19], 10, 64)
	return err == nil && start == p.Start && fields[0] != "Z" && fields[0] != "X"
}

// Stop sends SIGTERM and waits up to grace for the process to exit (kube-apiserver can take more than 10 s here),
// then kills it.
func (p *Proc) Stop(ctx context.Context, grace time.Duration) error {
	if !p.Alive() {
		return nil
	}
	_ = unix.Kill(p.PID, unix.SIGTERM)
	deadline := time.Now().Add(grace)
	for p.Alive() {
		if time.Now().After(deadline) || ctx.Err() != nil {
			_ = unix.Kill(p.PID, unix.SIGKILL)
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	for i := 0; i < 100 && p.Alive(); i++ {
		time.Sleep(50 * time.Millisecond)
	}
	if p.Alive() {
		return fmt.Errorf("lab: %s (pid %d) survived SIGKILL", p.Name, p.PID)
	}
	return nil
}

// RSS is the process's resident memory in bytes (0 when it is gone).
func (p *Proc) RSS() int64 {
	if !p.Alive() {
		return 0
	}
	return rssOf(p.PID)
}

func rssOf(pid int) int64 {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0
	}
	for line := range strings.SplitSeq(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(rest)
			if len(f) >= 1 {
				kb, _ := strconv.ParseInt(f[0], 10, 64)
				return kb * 1024
			}
		}
	}
	return 0
}

func statFields(s string) ([]string, bool) {
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return nil, false
	}
	return strings.Fields(s[i+1:]), true
}

func procStart(pid int) (uint64, error) {
	st, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	fields, ok := statFields(string(st))
	if !ok || len(fields) < 20 {
		return 0, errors.New("unexpected /proc stat")
	}
	return strconv.ParseUint(fields[19], 10, 64)
}

// logTail is the end of a log file, for error messages.
func logTail(file string, max int) string {
	data, err := os.ReadFile(file)
	if err != nil {
		return ""
	}
	if len(data) > max {
		data = data[len(data)-max:]
	}
	return strings.TrimSpace(string(data))
}
