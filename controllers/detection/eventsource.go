package detection

import (
	"context"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/log"
)

// eventSource watches the Warning events of the reasons the signatures accept, one watch per reason, filtered by
// the API server (field selectors reason= and type=): the manager never receives, let alone stores, the other
// events of a busy cluster. Reasons can be added while it runs (a policy's custom signature may name a new one).
type eventSource struct {
	kube    kubernetes.Interface
	handle  func(ev *corev1.Event)
	forget  func(ev *corev1.Event)
	resync  time.Duration
	mu      sync.Mutex
	ctx     context.Context
	running map[string]context.CancelFunc
	pending []string
}

func newEventSource(kube kubernetes.Interface, handle, forget func(*corev1.Event)) *eventSource {
	return &eventSource{kube: kube, handle: handle, forget: forget, running: map[string]context.CancelFunc{}}
}

// Start runs the watches until ctx ends (a manager Runnable).
func (s *eventSource) Start(ctx context.Context) error {
	s.mu.Lock()
	s.ctx = ctx
	pending := s.pending
	s.pending = nil
	s.mu.Unlock()
	for _, r := range pending {
		s.ensure(r)
	}
	<-ctx.Done()
	return nil
}

// NeedLeaderElection: only the leader detects (it is the one that creates NodeRemediations).
func (s *eventSource) NeedLeaderElection() bool { return true }

// ensure watches the reason if it is not watched yet.
func (s *eventSource) ensure(reason string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.running[reason]; ok {
		return
	}
	if s.ctx == nil {
		for _, p := range s.pending {
			if p == reason {
				return
			}
		}
		s.pending = append(s.pending, reason)
		return
	}
	ctx, cancel := context.WithCancel(s.ctx)
	s.running[reason] = cancel
	selector := fields.AndSelectors(fields.OneTermEqualSelector("reason", reason), fields.OneTermEqualSelector("type", corev1.EventTypeWarning)).String()
	lw := &toolscache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			o.FieldSelector = selector
			return s.kube.CoreV1().Events(metav1.NamespaceAll).List(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			o.FieldSelector = selector
			return s.kube.CoreV1().Events(metav1.NamespaceAll).Watch(ctx, o)
		},
	}
	inf := toolscache.NewSharedIndexInformer(lw, &corev1.Event{}, s.resync, toolscache.Indexers{})
	// Keep only what the detection reads: the informer's store holds every event of the reason for an hour.
	// Neither call can fail on an informer that has not started; were one to, the watch would be useless: say so.
	if err := inf.SetTransform(stripEvent); err != nil {
		log.FromContext(ctx).Error(err, "setting the transform of the event informer", "reason", reason)
	}
	if _, err := inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc:    func(o any) { s.dispatch(o) },
		UpdateFunc: func(_, o any) { s.dispatch(o) },
		DeleteFunc: func(o any) {
			if d, ok := o.(toolscache.DeletedFinalStateUnknown); ok {
				o = d.Obj
			}
			if ev, ok := o.(*corev1.Event); ok {
				s.forget(ev)
			}
		},
	}); err != nil {
		log.FromContext(ctx).Error(err, "adding the handler of the event informer", "reason", reason)
	}
	log.FromContext(ctx).Info("watching events", "reason", reason)
	go inf.RunWithContext(ctx)
}

func (s *eventSource) dispatch(o any) {
	if ev, ok := o.(*corev1.Event); ok {
		s.handle(ev)
	}
}

// stripEvent drops what the detection never reads.
func stripEvent(o any) (any, error) {
	ev, ok := o.(*corev1.Event)
	if !ok {
		return o, nil
	}
	return &corev1.Event{
		ObjectMeta: metav1.ObjectMeta{Name: ev.Name, Namespace: ev.Namespace, UID: ev.UID, ResourceVersion: ev.ResourceVersion},
		InvolvedObject: corev1.ObjectReference{Kind: ev.InvolvedObject.Kind, Namespace: ev.InvolvedObject.Namespace,
			Name: ev.InvolvedObject.Name, UID: ev.InvolvedObject.UID},
		Reason: ev.Reason, Message: ev.Message, Type: ev.Type, Count: ev.Count, Series: ev.Series,
		Source: ev.Source, ReportingInstance: ev.ReportingInstance,
		FirstTimestamp: ev.FirstTimestamp, LastTimestamp: ev.LastTimestamp, EventTime: ev.EventTime,
	}, nil
}

// eventNode is the node an event comes from: kubelet names itself as the event's source host (core/v1) or
// reporting instance (events.k8s.io).
func eventNode(ev *corev1.Event) string {
	if ev.InvolvedObject.Kind == "Node" {
		return ev.InvolvedObject.Name
	}
	if ev.Source.Host != "" {
		return ev.Source.Host
	}
	return ev.ReportingInstance
}

// eventTime is when the event last occurred, and count how often, across the legacy and the series forms.
func eventTime(ev *corev1.Event) (time.Time, int32) {
	if ev.Series != nil {
		return ev.Series.LastObservedTime.Time, ev.Series.Count
	}
	t := ev.LastTimestamp.Time
	if t.IsZero() {
		t = ev.EventTime.Time
	}
	if t.IsZero() {
		t = ev.FirstTimestamp.Time
	}
	return t, ev.Count
}
