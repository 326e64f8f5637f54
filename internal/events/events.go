// Package events publishes Kubernetes events for cnimedic's controllers, deduplicated so that a reconcile loop that
// runs many times for one condition leaves one event, not a storm of them. Each controller package declares its own
// events (events.go there) as constructors returning Event; this package only delivers them.
package events

import (
	"fmt"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Event is one event to publish.
type Event struct {
	// Regarding is the object the event is about (the NodeRemediation, the Node, the policy).
	Regarding client.Object
	// Related is an optional second object (the Node of a NodeRemediation event, the executor pod...).
	Related runtime.Object
	// Type is corev1.EventTypeNormal or corev1.EventTypeWarning.
	Type string
	// Reason is CamelCase and stable: tools and alerts match on it.
	Reason string
	// Action is what cnimedic did or is doing (events.k8s.io requires one), such as Detect, Approve, Drain.
	Action string
	// Message says in words what happened and, for warnings, what to do.
	Message string
	// DedupeValues, when set, replace the message in the deduplication key: events that differ only in details
	// (pods left: 3, then 2) are published once per DedupeTimeout.
	DedupeValues []string
	// DedupeTimeout is how long an identical event is suppressed; zero means DefaultDedupeTimeout.
	DedupeTimeout time.Duration
}

// DefaultDedupeTimeout suppresses identical events for two minutes: long enough to absorb a requeue loop, short
// enough that a condition that persists shows up again in `kubectl events --watch`.
const DefaultDedupeTimeout = 2 * time.Minute

// Recorder publishes events.
type Recorder interface {
	Publish(evts ...Event)
}

// NewRecorder wraps an events.k8s.io recorder with deduplication on an injected clock.
func NewRecorder(rec events.EventRecorder, clk clock.PassiveClock) Recorder {
	return &dedupingRecorder{rec: rec, clock: clk, seen: map[string]time.Time{}}
}

type dedupingRecorder struct {
	rec   events.EventRecorder
	clock clock.PassiveClock

	mu   sync.Mutex
	seen map[string]time.Time // key -> suppressed until
}

func (r *dedupingRecorder) Publish(evts ...Event) {
	for _, e := range evts {
		if r.suppressed(e) {
			continue
		}
		// The message is passed as an argument, never as a format: it may contain '%' from a node's messages.
		r.rec.Eventf(e.Regarding, e.Related, e.Type, e.Reason, e.Action, "%s", Note(e.Message))
	}
}

// MaxNote is the longest note the API server accepts on an events.k8s.io Event (1 kB); a longer one is refused
// and the event is lost.
const MaxNote = 1024

// Note shortens a message to fit an event's note, cutting at a character boundary and saying it was cut; the
// full text stays in the object's status.
func Note(msg string) string {
	if len(msg) <= MaxNote {
		return msg
	}
	const more = " …(shortened; see the object's status)"
	cut := MaxNote - len(more)
	for cut > 0 && !utf8.RuneStart(msg[cut]) {
		cut--
	}
	return msg[:cut] + more
}

func (r *dedupingRecorder) suppressed(e Event) bool {
	key := dedupeKey(e)
	now := r.clock.Now()
	timeout := e.DedupeTimeout
	if timeout == 0 {
		timeout = DefaultDedupeTimeout
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if until, ok := r.seen[key]; ok && now.Before(until) {
		return true
	}
	r.seen[key] = now.Add(timeout)
	if len(r.seen) > 4096 {
		// Keep memory bounded in long-running managers: drop what has expired.
		for k, until := range r.seen {
			if !now.Before(until) {
				delete(r.seen, k)
			}
		}
	}
	return false
}

func dedupeKey(e Event) string {
	var uid types.UID
	if e.Regarding != nil {
		uid = e.Regarding.GetUID()
	}
	values := e.DedupeValues
	if len(values) == 0 {
		values = []string{e.Message}
	}
	return fmt.Sprintf("%s\x00%s\x00%s\x00%s", uid, e.Type, e.Reason, strings.Join(values, "\x00"))
}
