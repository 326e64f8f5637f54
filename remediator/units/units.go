// Package units stops, starts and restarts systemd units through systemd's D-Bus API (go-systemd), waiting for
// each job's result and then for the unit's ActiveState, so that "stopped" means the unit is inactive and "started"
// means it is active and stayed active for a settle period (a kubelet that crashes on a bad config is reported as
// a failed start, not as a job that said "done").
//
// The bus is given by address, so the same code drives the node's systemd from the executor pod (the host's
// /run/dbus/system_bus_socket mounted into the pod), from a host-side transient unit, and from tests that point it
// at a systemd-nspawn node's bus.
package units

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	sd "github.com/coreos/go-systemd/v22/dbus"
	"github.com/godbus/dbus/v5"
)

// DefaultSystemBus is the system bus of a Debian-like host; DBUS_SYSTEM_BUS_ADDRESS overrides it as for any D-Bus
// client.
const DefaultSystemBus = "unix:path=/run/dbus/system_bus_socket"

// Defaults of Manager's timings.
const (
	DefaultSettle  = 2 * time.Second
	DefaultPoll    = 50 * time.Millisecond
	DefaultTimeout = 3 * time.Minute
)

// ActiveState values (org.freedesktop.systemd1.Unit.ActiveState).
const (
	Active       = "active"
	Activating   = "activating"
	Deactivating = "deactivating"
	Inactive     = "inactive"
	Failed       = "failed"
	Reloading    = "reloading"
)

// ErrNotFound is returned for a unit systemd has no unit file for.
var ErrNotFound = errors.New("unit not found")

// State is what systemd says about a unit.
type State struct {
	Unit        string `json:"unit"`
	LoadState   string `json:"loadState"`
	ActiveState string `json:"activeState"`
	SubState    string `json:"subState"`
	// Result of the unit's last run, such as "success", "exit-code", "signal" (services only).
	Result  string `json:"result,omitempty"`
	MainPID uint32 `json:"mainPID,omitempty"`
	// InvocationID changes on every start of the unit, so it tells a unit that stayed up from one that crashed
	// and was restarted between two polls.
	InvocationID string `json:"invocationID,omitempty"`
}

// Stopped reports whether the unit is not running.
func (s State) Stopped() bool { return s.ActiveState == Inactive || s.ActiveState == Failed }

func (s State) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s (%s)", s.ActiveState, s.SubState)
	if s.Result != "" && s.Result != "success" {
		fmt.Fprintf(&b, ", result %s", s.Result)
	}
	if s.LoadState != "" && s.LoadState != "loaded" {
		fmt.Fprintf(&b, ", %s", s.LoadState)
	}
	return b.String()
}

// Transition is how one stop, start or restart went.
type Transition struct {
	Unit string `json:"unit"`
	// Op is "stop", "start" or "restart".
	Op string `json:"op"`
	// Job is systemd's job result ("done", "failed", "timeout", "canceled", "dependency", "skipped"), empty when no job
	// was needed because the unit already was as asked.
	Job    string `json:"job,omitempty"`
	Before State  `json:"before"`
	After  State  `json:"after"`
	// Took is from the job request to the unit reaching the wanted state (settle period excluded).
	Took time.Duration `json:"took"`
}

// Changed reports whether a job ran.
func (t Transition) Changed() bool { return t.Job != "" }

func (t Transition) String() string {
	if !t.Changed() {
		return fmt.Sprintf("%s already %s", t.Unit, t.After)
	}
	return fmt.Sprintf("%s %s: %s -> %s in %s (job %s)", t.Op, t.Unit, t.Before, t.After, t.Took.Round(time.Millisecond), t.Job)
}

// Manager talks to one systemd over one bus connection.
type Manager struct {
	conn *sd.Conn
	addr string
	// Settle is how long a started unit must stay active, with the same invocation, before the start counts.
	Settle time.Duration
	// Poll is the interval of ActiveState polls.
	Poll time.Duration
	// Timeout bounds each operation when the caller's context has no earlier deadline.
	Timeout time.Duration
}

// Connect connects to the systemd behind a D-Bus address: a bus daemon (unix:path=.../system_bus_socket) or
// systemd's private socket (unix:path=/run/systemd/private, which needs no bus daemon but is reachable only from
// the host itself). Empty means $DBUS_SYSTEM_BUS_ADDRESS, else DefaultSystemBus. Close it when done.
func Connect(ctx context.Context, address string) (*Manager, error) {
	if address == "" {
		address = os.Getenv("DBUS_SYSTEM_BUS_ADDRESS")
	}
	if address == "" {
		address = DefaultSystemBus
	}
	// systemd's private socket is a direct peer connection: no bus daemon, so no Hello.
	hello := !strings.Contains(address, "/systemd/private")
	dial := func() (*dbus.Conn, error) {
		// The connection's own context must outlive this call: godbus closes the connection when it is done.
		c, err := dbus.Dial(address, dbus.WithContext(context.Background()))
		if err != nil {
			return nil, fmt.Errorf("dial %s: %w", address, err)
		}
		if err := c.Auth([]dbus.Auth{dbus.AuthExternal(strconv.Itoa(os.Getuid()))}); err != nil {
			_ = c.Close()
			return nil, fmt.Errorf("authenticate on %s: %w", address, err)
		}
		if hello {
			if err := c.Hello(); err != nil {
				_ = c.Close()
				return nil, fmt.Errorf("hello on %s: %w", address, err)
			}
		}
		return c, nil
	}
	type result struct {
		c   *sd.Conn
		err error
	}
	ch := make(chan result, 1)
	go func() {
		c, err := sd.NewConnection(dial)
		ch <- result{c, err}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			return nil, r.err
		}
		// Job completions (JobRemoved) reach a connection only if it subscribed, on systemd's private socket at
		// least; on a bus daemon it costs nothing more.
		if err := r.c.Subscribe(); err != nil {
			r.c.Close()
			return nil, fmt.Errorf("subscribe to systemd on %s: %w", address, err)
		}
		return &Manager{conn: r.c, addr: address, Settle: DefaultSettle, Poll: DefaultPoll, Timeout: DefaultTimeout}, nil
	case <-ctx.Done():
		go func() {
			if r := <-ch; r.c != nil {
				r.c.Close()
			}
		}()
		return nil, fmt.Errorf("connect to %s: %w", address, ctx.Err())
	}
}

// Address is the D-Bus address the manager is connected to.
func (m *Manager) Address() string { return m.addr }

// Close closes the bus connection.
func (m *Manager) Close() { m.conn.Close() }

// Conn is the underlying go-systemd connection, for calls this package does not wrap.
func (m *Manager) Conn() *sd.Conn { return m.conn }

// State reads a unit's state. A unit systemd knows nothing about has LoadState "not-found".
func (m *Manager) State(ctx context.Context, unit string) (State, error) {
	props, err := m.conn.GetUnitPropertiesContext(ctx, unit)
	if err != nil {
		return State{Unit: unit}, fmt.Errorf("read state of %s: %w", unit, err)
	}
	s := State{
		Unit:        unit,
		LoadState:   str(props["LoadState"]),
		ActiveState: str(props["ActiveState"]),
		SubState:    str(props["SubState"]),
	}
	if id, ok := props["InvocationID"].([]byte); ok {
		s.InvocationID = hex.EncodeToString(id)
	}
	if strings.HasSuffix(unit, ".service") && s.LoadState == "loaded" {
		if p, err := m.conn.GetServicePropertyContext(ctx, unit, "Result"); err == nil {
			s.Result = str(p.Value.Value())
		}
		if p, err := m.conn.GetServicePropertyContext(ctx, unit, "MainPID"); err == nil {
			if pid, ok := p.Value.Value().(uint32); ok {
				s.MainPID = pid
			}
		}
	}
	return s, nil
}

func str(v any) string {
	s, _ := v.(string)
	return s
}

func (m *Manager) opContext(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok || m.Timeout <= 0 {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, m.Timeout)
}

func (m *Manager) loaded(ctx context.Context, unit string) (State, error) {
	s, err := m.State(ctx, unit)
	if err != nil {
		return s, err
	}
	if s.LoadState == "not-found" {
		return s, fmt.Errorf("%s: %w", unit, ErrNotFound)
	}
	return s, nil
}

// Stop stops a unit and waits until it is inactive (or failed: a unit whose main process exits non-zero on
// SIGTERM is stopped all the same). Stopping a stopped unit does nothing.
func (m *Manager) Stop(ctx context.Context, unit string) (Transition, error) {
	ctx, cancel := m.opContext(ctx)
	defer cancel()
	before, err := m.loaded(ctx, unit)
	if err != nil {
		return Transition{Unit: unit, Op: "stop", Before: before}, err
	}
	t := Transition{Unit: unit, Op: "stop", Before: before, After: before}
	if before.Stopped() {
		return t, nil
	}
	start := time.Now()
	t.Job, err = m.job(ctx, func(ch chan<- string) (int, error) {
		return m.conn.StopUnitContext(ctx, unit, "replace", ch)
	})
	if err != nil {
		t.After, _ = m.State(ctx, unit)
		return t, fmt.Errorf("stop %s: %w", unit, err)
	}
	t.After, err = m.waitFor(ctx, unit, State.Stopped)
	t.Took = time.Since(start)
	if err != nil {
		return t, fmt.Errorf("stop %s: job %s but %w", unit, t.Job, err)
	}
	if t.Job != "done" {
		return t, fmt.Errorf("stop %s: job %s, unit %s", unit, t.Job, t.After)
	}
	return t, nil
}

// Start starts a unit and waits until it is active and has stayed active with the same invocation for Settle.
// Starting an active unit does nothing. A failed unit's failure state (and start rate limit) is reset first, so
// that an earlier crash loop does not refuse the start.
func (m *Manager) Start(ctx context.Context, unit string) (Transition, error) {
	return m.startOrRestart(ctx, unit, "start")
}

// Restart restarts a unit (starting it if it is stopped) and waits as Start does.
func (m *Manager) Restart(ctx context.Context, unit string) (Transition, error) {
	return m.startOrRestart(ctx, unit, "restart")
}

func (m *Manager) startOrRestart(ctx context.Context, unit, op string) (Transition, error) {
	ctx, cancel := m.opContext(ctx)
	defer cancel()
	before, err := m.loaded(ctx, unit)
	if err != nil {
		return Transition{Unit: unit, Op: op, Before: before}, err
	}
	t := Transition{Unit: unit, Op: op, Before: before, After: before}
	if op == "start" && before.ActiveState == Active {
		return t, nil
	}
	if before.ActiveState == Failed {
		// Best effort: a failed unit starts without it unless its start limit was hit.
		_ = m.conn.ResetFailedUnitContext(ctx, unit)
	}
	start := time.Now()
	enqueue := func(ch chan<- string) (int, error) {
		if op == "restart" {
			return m.conn.RestartUnitContext(ctx, unit, "replace", ch)
		}
		return m.conn.StartUnitContext(ctx, unit, "replace", ch)
	}
	t.Job, err = m.job(ctx, enqueue)
	if err == nil && t.Job == "failed" {
		// A unit stopped and started several times within StartLimitIntervalSec (default 5 starts in 10 s) is
		// refused with result start-limit-hit. The limit is there against crash loops, not against a deliberate
		// restart: reset it, as `systemctl reset-failed` does, and try once more.
		if s, _ := m.State(ctx, unit); s.Result == "start-limit-hit" {
			_ = m.conn.ResetFailedUnitContext(ctx, unit)
			t.Job, err = m.job(ctx, enqueue)
		}
	}
	if err != nil {
		t.After, _ = m.State(ctx, unit)
		return t, fmt.Errorf("%s %s: %w", op, unit, err)
	}
	if t.Job != "done" {
		t.After, _ = m.State(ctx, unit)
		return t, fmt.Errorf("%s %s: job %s, unit %s", op, unit, t.Job, t.After)
	}
	t.After, err = m.waitFor(ctx, unit, func(s State) bool { return s.ActiveState == Active })
	t.Took = time.Since(start)
	if err != nil {
		return t, fmt.Errorf("%s %s: job done but %w", op, unit, err)
	}
	// Settle: the same invocation must stay active. A crash-looping unit (Restart=always) shows up as a new
	// InvocationID or as activating (auto-restart) between polls.
	deadline := time.Now().Add(m.Settle)
	for time.Now().Before(deadline) {
		if err := sleep(ctx, m.Poll); err != nil {
			return t, fmt.Errorf("%s %s: %w", op, unit, err)
		}
		s, err := m.State(ctx, unit)
		if err != nil {
			return t, err
		}
		if s.ActiveState != Active || s.InvocationID != t.After.InvocationID {
			t.After = s
			return t, fmt.Errorf("%s %s: the unit did not stay up: %s after %s", op, unit, s,
				time.Since(start).Round(time.Millisecond))
		}
	}
	return t, nil
}

// job enqueues a job and waits for its result.
func (m *Manager) job(ctx context.Context, enqueue func(chan<- string) (int, error)) (string, error) {
	ch := make(chan string, 1)
	if _, err := enqueue(ch); err != nil {
		return "", err
	}
	select {
	case r := <-ch:
		return r, nil
	case <-ctx.Done():
		return "", fmt.Errorf("waiting for the job: %w", ctx.Err())
	}
}

// waitFor polls the unit until ok holds. Right after a job ends the state usually holds already.
func (m *Manager) waitFor(ctx context.Context, unit string, ok func(State) bool) (State, error) {
	for {
		s, err := m.State(ctx, unit)
		if err != nil {
			return s, err
		}
		if ok(s) {
			return s, nil
		}
		if s.ActiveState == Failed || s.ActiveState == Inactive || s.SubState == "auto-restart" {
			// Nothing more will happen by itself, or the unit died and waits to be restarted.
			return s, fmt.Errorf("unit is %s", s)
		}
		if err := sleep(ctx, m.Poll); err != nil {
			return s, fmt.Errorf("unit still %s: %w", s, err)
		}
	}
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// StartTransient creates and starts a transient unit (with auxiliary transient units, such as a timer's service)
// and waits for the start job. For a service of Type=exec the job ends once the main process is running.
func (m *Manager) StartTransient(ctx context.Context, name string, props []sd.Property, aux []sd.PropertyCollection) (string, error) {
	ctx, cancel := m.opContext(ctx)
	defer cancel()
	if aux == nil {
		aux = []sd.PropertyCollection{}
	}
	job, err := m.job(ctx, func(ch chan<- string) (int, error) {
		return m.conn.StartTransientUnitAux(ctx, name, "fail", props, aux, ch)
	})
	if err != nil {
		return job, fmt.Errorf("start transient unit %s: %w", name, err)
	}
	if job != "done" {
		s, _ := m.State(ctx, name)
		return job, fmt.Errorf("start transient unit %s: job %s, unit %s", name, job, s)
	}
	return job, nil
}

// StopIfLoaded stops a unit that may not exist (such as a transient timer that already elapsed and was unloaded).
func (m *Manager) StopIfLoaded(ctx context.Context, unit string) error {
	s, err := m.State(ctx, unit)
	if err != nil {
		return err
	}
	if s.LoadState == "not-found" || s.Stopped() {
		return nil
	}
	_, err = m.Stop(ctx, unit)
	return err
}
