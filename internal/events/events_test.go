package events

import (
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"
	clocktesting "k8s.io/utils/clock/testing"
)

func TestIdenticalEventsArePublishedOncePerTimeout(t *testing.T) {
	clk := clocktesting.NewFakeClock(time.Now())
	fake := events.NewFakeRecorder(100)
	rec := NewRecorder(fake, clk)
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "w-1", UID: "uid-1"}}
	other := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "w-2", UID: "uid-2"}}

	drain := func(left string) Event {
		return Event{Regarding: node, Type: corev1.EventTypeNormal, Reason: "DrainProgress", Action: "Drain",
			Message: "pods left: " + left, DedupeValues: []string{"progress"}}
	}
	rec.Publish(drain("3"), drain("2"), drain("1")) // one loop, three reconciles
	rec.Publish(Event{Regarding: other, Type: corev1.EventTypeNormal, Reason: "DrainProgress", Action: "Drain", Message: "pods left: 3", DedupeValues: []string{"progress"}})
	if got := len(fake.Events); got != 2 {
		t.Fatalf("published %d events, want 2 (one per object)", got)
	}
	clk.Step(DefaultDedupeTimeout + time.Second)
	rec.Publish(drain("1"))
	if got := len(fake.Events); got != 3 {
		t.Fatalf("after the timeout the event must be published again; published %d, want 3", got)
	}
}

func TestMessagesWithPercentAreNotFormatted(t *testing.T) {
	fake := events.NewFakeRecorder(1)
	rec := NewRecorder(fake, clocktesting.NewFakeClock(time.Now()))
	rec.Publish(Event{Regarding: &corev1.Node{}, Type: corev1.EventTypeWarning, Reason: "Storm", Action: "Detect", Message: "30% of nodes"})
	if got := <-fake.Events; got != "Warning Storm 30% of nodes" {
		t.Fatalf("got %q", got)
	}
}

// TestALongMessageIsShortenedToANoteTheAPIServerAccepts: a message over 1 kB (a diagnosis summary, a long
// escalation) was refused by the API server, and the event lost; it is cut to fit, at a character boundary.
func TestALongMessageIsShortenedToANoteTheAPIServerAccepts(t *testing.T) {
	long := strings.Repeat("é", 800) // 1600 bytes
	got := Note(long)
	if len(got) > MaxNote || !utf8.ValidString(got) || !strings.Contains(got, "shortened") {
		t.Errorf("%d bytes, valid %v: %q", len(got), utf8.ValidString(got), got[len(got)-60:])
	}
	if short := "node w1 repaired"; Note(short) != short {
		t.Error("a short message was changed")
	}
}
