// Package detection turns cluster evidence into one NodeRemediation per broken node, with the signature and the
// parameters the repair needs. It watches, cheaply:
//
//   - Warning events of the reasons the signatures accept, one server-side filtered watch per reason
//     (eventsource.go): the rest of a busy cluster's events never reach the manager;
//   - Nodes, from the manager's cache (images and managed fields stripped), for their Ready condition and the
//     conditions a policy maps (spec.detection.nodeConditions, conditions.go);
//   - pods only on demand, for one candidate node at a time, to confirm the failure from their own status.
//
// An event is a hint; the node is the evidence (confirm.go). Whoever may write events (the built-in edit role may)
// chooses an event's source, count, timestamps and the pod it names, so events only give the message and a count:
// a node counts as failing through its own Ready condition (or a condition its policy maps), or through pods bound
// to it whose kubelet-written status shows a sandbox that cannot be set up or torn down, and only those pods' events
// count.
//
// Evidence is aggregated per node and signature in memory (store.go) and counted the way the covering policy says:
// occurrences and distinct confirmed pods inside the window, how long the pods' status has shown the failure, the
// boot grace, and expiry so that stale evidence stops counting. A storm (too many covered nodes that confirm one
// signature themselves) opens nothing and sets the policy's StormActive condition (storm.go).
package detection

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
	"github.com/cnimedic/cnimedic/internal/events"
	"github.com/cnimedic/cnimedic/internal/policy"
	"github.com/cnimedic/cnimedic/internal/signature"
)

// FieldManager owns the storm fields of a policy's status (server-side apply).
const FieldManager = "cnimedic-detection"

// retention bounds the evidence kept in memory, whatever the policies' windows: kubelet's events live an hour.
const retention = 2 * time.Hour

// Reconciler is the detection controller. Its reconcile key is a node name.
type Reconciler struct {
	Client    client.Client
	APIReader client.Reader
	Kube      kubernetes.Interface
	Clock     clock.PassiveClock
	Events    events.Recorder
	// Requeue is how often a node with evidence is counted again (default 15s).
	Requeue time.Duration
	// MinWriteInterval throttles evidence updates of an open NodeRemediation (default 15s).
	MinWriteInterval time.Duration

	store   *store
	source  *eventSource
	wake    chan event.GenericEvent
	sets    sync.Map // policy name -> compiledSet
	writeMu sync.Mutex
	written map[string]time.Time // node -> last evidence write
	// nodeGen counts the node changes that can change which nodes a policy covers (created, deleted, labels
	// changed), as the cache sees them; covered keeps each policy's covered nodes for one value of it.
	nodeGen atomic.Uint64
	covered sync.Map // policy name -> coveredNodes
	// onReconcile, when set (tests), hears of every reconcile of a node before it counts.
	onReconcile func(node string)
}

type compiledSet struct {
	generation int64
	set        *signature.Set
	rules      []ConditionRule
}

// +kubebuilder:rbac:groups="",resources=events,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=nodes,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=pods,verbs=get;list
// +kubebuilder:rbac:groups=apps,resources=daemonsets,verbs=get;list
// +kubebuilder:rbac:groups=cnimedic.io,resources=noderemediations,verbs=get;list;watch;create;patch
// +kubebuilder:rbac:groups=cnimedic.io,resources=remediationpolicies,verbs=get;list;watch
// +kubebuilder:rbac:groups=cnimedic.io,resources=remediationpolicies/status,verbs=get;patch

// SetupWithManager registers the controller, its event watches and its storm check.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.Requeue == 0 {
		r.Requeue = 15 * time.Second
	}
	if r.MinWriteInterval == 0 {
		r.MinWriteInterval = 15 * time.Second
	}
	r.store = newStore(retention)
	r.written = map[string]time.Time{}
	r.wake = make(chan event.GenericEvent, 1024)
	r.source = newEventSource(r.Kube, r.observeEvent, func(ev *corev1.Event) { r.store.forgetEvent(string(ev.UID)) })
	for _, d := range signature.Definitions() {
		for _, reason := range d.Reasons {
			r.source.ensure(reason)
		}
	}
	if err := mgr.Add(r.source); err != nil {
		return fmt.Errorf("adding the event source to the manager: %w", err)
	}
	if err := mgr.Add(&stormTicker{r: r}); err != nil {
		return fmt.Errorf("adding the storm ticker to the manager: %w", err)
	}
	return ctrl.NewControllerManagedBy(mgr).
		Named("detection").
		// Nodes are independent and a reconcile mostly waits on the API server (the node's pods, its remediations, the
		// create): when many nodes break at once, one worker would open their remediations one after the other
		// (make bench: detection latency). The work queue never hands one node to two workers.
		WithOptions(controller.Options{MaxConcurrentReconciles: 16}).
		// A node's Ready condition carries cni-not-initialized, and the conditions a policy maps carry their signature;
		// only their changes matter, never a heartbeat.
		For(&corev1.Node{}, builder.WithPredicates(r.nodeChanged())).
		WatchesRawSource(source.Channel(r.wake, &handler.EnqueueRequestForObject{})).
		Watches(&corev1.Node{}, r.nodeMembership()).
		Watches(&v1alpha1.RemediationPolicy{}, handler.EnqueueRequestsFromMapFunc(r.policyChanged), builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		// A remediation that ends consumes its evidence; the node is counted again (another signature may wait).
		Watches(&v1alpha1.NodeRemediation{}, handler.EnqueueRequestsFromMapFunc(r.remediationEnded)).
		Complete(r)
}

// observeEvent classifies one event as it streams in and records it as evidence of its node.
func (r *Reconciler) observeEvent(ev *corev1.Event) {
	nodeName := eventNode(ev)
	if nodeName == "" {
		return
	}
	ctx := context.Background()
	node := &corev1.Node{}
	if err := r.Client.Get(ctx, types.NamespacedName{Name: nodeName}, node); err != nil {
		return
	}
	p := r.policyFor(ctx, node)
	if p == nil {
		return // no policy covers the node: no regular expression runs
	}
	res, ok := r.setFor(p).Match(ev.Reason, ev.Message)
	if !ok {
		return
	}
	at, count := eventTime(ev)
	if now := r.Clock.Now(); at.After(now) {
		at = now // a timestamp in the future would keep the evidence fresh for as long as its writer likes
	}
	// The pod the event names, by its own namespace and name (an events.k8s.io event may name a pod of another
	// namespace than its own): confirm reads that pod, among those bound to the node, before anything counts.
	var pod *v1alpha1.PodReference
	if ev.InvolvedObject.Kind == "Pod" {
		pod = &v1alpha1.PodReference{Namespace: ev.InvolvedObject.Namespace, Name: ev.InvolvedObject.Name}
	}
	r.store.observeEvent(nodeName, string(ev.UID), count, at, pod, ev.InvolvedObject.UID, res, ev.Message)
	evidenceObservedTotal.WithLabelValues(res.Signature, "event").Inc()
	r.enqueue(nodeName)
}

func (r *Reconciler) enqueue(node string) {
	select {
	case r.wake <- event.GenericEvent{Object: &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: node}}}:
	default:
		// The queue is full of wake-ups already; the node's periodic requeue will count it.
	}
}

// policyFor is the policy covering the node: the first by name among those that cover it.
func (r *Reconciler) policyFor(ctx context.Context, node *corev1.Node) *v1alpha1.RemediationPolicy {
	list := &v1alpha1.RemediationPolicyList{}
	if err := r.Client.List(ctx, list); err != nil {
		return nil
	}
	sort.Slice(list.Items, func(i, j int) bool { return list.Items[i].Name < list.Items[j].Name })
	for i := range list.Items {
		p := &list.Items[i]
		if sel, err := policy.NewSelector(p); err == nil && sel.Covers(node) {
			return p
		}
	}
	return nil
}

// setFor is the policy's compiled signature set, compiled once per policy generation. Custom signatures that do
// not compile are left out here and reported on the policy by the policy controller.
func (r *Reconciler) setFor(p *v1alpha1.RemediationPolicy) *signature.Set {
	if v, ok := r.sets.Load(p.Name); ok && v.(compiledSet).generation == p.Generation {
		return v.(compiledSet).set
	}
	set, _ := signature.CompilePolicy(&p.Spec)
	rules, _ := ConditionRules(p, set) // a rule naming a signature the policy cannot name is reported by the policy controller
	r.sets.Store(p.Name, compiledSet{generation: p.Generation, set: set, rules: rules})
	for _, c := range p.Spec.CustomSignatures {
		for _, reason := range c.Reasons {
			r.source.ensure(reason)
		}
	}
	return set
}

// rulesFor is the policy's node condition rules, resolved once per policy generation (setFor).
func (r *Reconciler) rulesFor(p *v1alpha1.RemediationPolicy, set *signature.Set) []ConditionRule {
	if v, ok := r.sets.Load(p.Name); ok && v.(compiledSet).generation == p.Generation && v.(compiledSet).set == set {
		return v.(compiledSet).rules
	}
	rules, _ := ConditionRules(p, set)
	return rules
}

// policyChanged re-counts every node with evidence, and every node that shows a condition the policy maps (a new
// rule may make evidence of a condition no watch event will announce), and starts watching the reasons of new
// custom signatures.
func (r *Reconciler) policyChanged(ctx context.Context, o client.Object) []reconcile.Request {
	names := map[string]bool{}
	if p, ok := o.(*v1alpha1.RemediationPolicy); ok {
		set := r.setFor(p)
		if rules := r.rulesFor(p, set); len(rules) > 0 {
			nodes := &corev1.NodeList{}
			if err := r.Client.List(ctx, nodes, client.UnsafeDisableDeepCopy); err != nil {
				log.FromContext(ctx).Error(err, "listing nodes for the node conditions of policy "+p.Name+"; they are counted at their next change")
			}
			for i := range nodes.Items {
				if len(mappedConditions(&nodes.Items[i], rules)) > 0 {
					names[nodes.Items[i].Name] = true
				}
			}
		}
	}
	for _, n := range r.store.nodeNames() {
		names[n] = true
	}
	reqs := make([]reconcile.Request, 0, len(names))
	for n := range names {
		reqs = append(reqs, reconcile.Request{NamespacedName: types.NamespacedName{Name: n}})
	}
	return reqs
}

// remediationEnded marks what a finished remediation consumed (store.consume: every occurrence of its signature on
// its node up to its end) and counts the node again. The manager's cache lists every finished remediation when it
// starts, so evidence listed again after a restart is consumed as well.
func (r *Reconciler) remediationEnded(_ context.Context, o client.Object) []reconcile.Request {
	nr, ok := o.(*v1alpha1.NodeRemediation)
	if !ok || !nr.Status.Phase.IsTerminal() || nr.Spec.NodeName == "" {
		return nil
	}
	if !r.store.consume(nr.Spec.NodeName, nr.Spec.Signature, endOf(nr)) {
		return nil
	}
	return []reconcile.Request{{NamespacedName: types.NamespacedName{Name: nr.Spec.NodeName}}}
}

// Reconcile counts one node's evidence under its policy and opens (or feeds) its NodeRemediation.
func (r *Reconciler) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	ctx = log.IntoContext(ctx, log.FromContext(ctx).WithValues("node", req.Name))
	if r.onReconcile != nil {
		r.onReconcile(req.Name)
	}
	node := &corev1.Node{}
	if err := r.Client.Get(ctx, req.NamespacedName, node); err != nil {
		if apierrors.IsNotFound(err) {
			r.store.forget(req.Name)
			return reconcile.Result{}, nil
		}
		return reconcile.Result{}, fmt.Errorf("getting node %s: %w", req.Name, err)
	}
	p := r.policyFor(ctx, node)
	if p == nil {
		return reconcile.Result{}, nil
	}
	set := r.setFor(p)
	var seen []conditionSeen
	if msg, since, notReady := readyCondition(node); notReady {
		if res, ok := set.MatchNodeCondition(msg); ok {
			seen = append(seen, conditionSeen{key: readyKey, res: res, since: since, message: msg})
		}
	}
	// The conditions the policy maps are the node's word like its Ready condition (conditions.go).
	seen = append(seen, mappedConditions(node, r.rulesFor(p, set))...)
	for _, cs := range seen {
		evidenceObservedTotal.WithLabelValues(cs.res.Signature, "node-condition").Inc()
	}
	r.store.observeConditions(node.Name, seen)

	now := r.Clock.Now()
	d := p.Spec.Detection
	w := window{now: now, from: now.Add(-d.Window.Duration)}
	graceEnd := bootTime(node).Add(d.BootGracePeriod.Duration)
	if graceEnd.After(w.from) {
		w.from = graceEnd
	}
	cands, stale := r.store.snapshot(node.Name, w)
	evidenceDroppedStaleTotal.Add(float64(stale))
	if len(cands) == 0 {
		return reconcile.Result{}, nil
	}
	inGrace := now.Before(graceEnd)
	// The node's remediations are read while its pods are (two round trips at once instead of one after the
	// other), but only when a candidate may qualify: most events leave a node below the thresholds.
	var nrs *remediationsRead
	if mayQualify(p, cands, inGrace) {
		nrs = r.readRemediations(ctx, node.Name)
	}
	best, err := r.qualifying(ctx, p, node, cands, inGrace, now)
	if err != nil {
		return reconcile.Result{}, fmt.Errorf("counting the evidence on node %s: %w", node.Name, err)
	}
	requeue := reconcile.Result{RequeueAfter: r.Requeue}
	if best == nil {
		// Counted again at the periodic recount, or sooner when the evidence can meet the thresholds by time alone:
		// kubelet's retries of a failing pod back off to minutes, so its next event may come long after.
		requeue.RequeueAfter = nextCount(cands, now, graceEnd, d.MinStuckDuration.Duration, r.Requeue)
		return requeue, nil
	}
	storm, err := r.checkStorm(ctx, p, best.signature, now)
	if err != nil {
		return requeue, fmt.Errorf("checking policy %s for a %s storm: %w", p.Name, best.signature, err)
	}
	if storm {
		return requeue, nil
	}
	if nrs == nil { // cannot happen: qualifying only returns what mayQualify lets through
		nrs = r.readRemediations(ctx, node.Name)
	}
	list, err := nrs.wait()
	if err != nil {
		return requeue, fmt.Errorf("listing the remediations of node %s: %w", node.Name, err)
	}
	if err := r.openOrFeed(ctx, p, node, best, list, now); err != nil {
		return requeue, fmt.Errorf("opening or feeding the %s remediation of node %s: %w", best.signature, node.Name, err)
	}
	return requeue, nil
}

// nextCount is when a node whose evidence does not qualify yet should be counted again: the earliest moment time
// alone can change the answer (a pod becomes stuck for minStuck, the node condition has lasted minStuck, the boot
// grace ends), or the periodic recount, whichever comes first. The lowest requeue wins.
func nextCount(cands []candidate, now, graceEnd time.Time, minStuck, periodic time.Duration) time.Duration {
	next := periodic
	consider := func(at time.Time) {
		if d := at.Sub(now); at.After(now) && d < next {
			next = d
		}
	}
	consider(graceEnd)
	for _, c := range cands {
		if !c.ripens.IsZero() {
			consider(c.ripens)
		}
		if c.condition != "" {
			consider(now.Add(minStuck - c.conditionFor))
		}
	}
	return next
}

// mayQualify reports whether one of the candidates may meet the policy's thresholds, before the node's pods are
// read: the checks of qualifying that need no pods (a snapshot's events and pods are upper bounds of the confirmed
// ones).
func mayQualify(p *v1alpha1.RemediationPolicy, cands []candidate, inGrace bool) bool {
	d := p.Spec.Detection
	for _, c := range cands {
		if !c.custom && !policy.EnablesSignature(p, v1alpha1.SignatureID(c.signature)) {
			continue
		}
		if c.condition != "" && !inGrace && c.conditionFor >= d.MinStuckDuration.Duration {
			return true
		}
		if c.events >= d.MinOccurrences && int32(len(c.pods)) >= max(d.MinPods, 1) {
			return true
		}
	}
	return false
}

// qualifying returns the candidate that meets the policy's thresholds, the most specific one when several do. Each
// candidate that may qualify, or whose events name pods, is narrowed to what the node confirms (confirm): its pods to
// those bound to the node whose status shows the failure for minStuckDuration, its occurrences to those pods' events.
// A candidate left with pods is recorded as confirmed by the node (store.markConfirmed), under the thresholds too: a
// storm counts every node that confirms the signature, and only those. The candidates are updated in place, so that
// the caller knows when a pod will have shown its failure long enough (ripens).
func (r *Reconciler) qualifying(ctx context.Context, p *v1alpha1.RemediationPolicy, node *corev1.Node, cands []candidate, inGrace bool, now time.Time) (*candidate, error) {
	d := p.Spec.Detection
	minPods := max(d.MinPods, 1)
	var ok []candidate
	var livePods map[v1alpha1.PodReference]*corev1.Pod
	read := false
	for i := range cands {
		c := &cands[i]
		if !c.custom && !policy.EnablesSignature(p, v1alpha1.SignatureID(c.signature)) {
			continue
		}
		// A node condition, written by the node's kubelet, proves the failure on its own.
		byCondition := c.condition != "" && !inGrace && c.conditionFor >= d.MinStuckDuration.Duration
		if !byCondition && len(c.pods) == 0 {
			continue // nothing to confirm; a condition that carries the signature counts for a storm as it is
		}
		if len(c.pods) > 0 && !read {
			var err error
			if livePods, err = r.podsOn(ctx, node.Name); err != nil {
				return nil, fmt.Errorf("confirming the %s evidence: %w", c.signature, err)
			}
			read = true
		}
		c.confirm(livePods, kubeletReporting(node), now, d.MinStuckDuration.Duration)
		if len(c.pods) > 0 {
			r.store.markConfirmed(node.Name, c.signature, now)
		}
		if byCondition || (c.events >= d.MinOccurrences && int32(len(c.pods)) >= minPods) {
			ok = append(ok, *c)
		}
	}
	if len(ok) == 0 {
		return nil, nil
	}
	order := precedence(p)
	sort.SliceStable(ok, func(i, j int) bool { return order(ok[i].signature) < order(ok[j].signature) })
	return &ok[0], nil
}

// precedence orders signatures as the matcher does: the policy's custom signatures first, then the catalog's
// order (most specific cause first).
func precedence(p *v1alpha1.RemediationPolicy) func(string) int {
	rank := map[string]int{}
	for _, c := range p.Spec.CustomSignatures {
		rank[c.Name] = len(rank)
	}
	for _, d := range signature.Definitions() {
		rank[string(d.ID)] = len(rank)
	}
	return func(s string) int {
		if r, ok := rank[s]; ok {
			return r
		}
		return len(rank)
	}
}

// podsOn reads the node's pods from the API server: pods are not cached (a copy of every pod in a large cluster
// would cost more memory than all the rest of the manager). ResourceVersion "0" lets the API server answer from its
// watch cache at once instead of first catching up with etcd (a consistent read, several times slower under load:
// make bench, detection latency). The answer may lag the latest writes by a moment: a pod that just recovered may
// still read as failing; that is harmless, the workflow reads every pod of the evidence live again before it
// touches the node (remediation/revalidate.go). A lagging read cannot make a failure up: every status it shows was
// written by the node's kubelet, or by someone allowed to write pods/status (confirm.go).
func (r *Reconciler) podsOn(ctx context.Context, node string) (map[v1alpha1.PodReference]*corev1.Pod, error) {
	list := &corev1.PodList{}
	if err := r.APIReader.List(ctx, list, client.MatchingFields{"spec.nodeName": node},
		&client.ListOptions{Raw: &metav1.ListOptions{ResourceVersion: "0"}}); err != nil {
		return nil, fmt.Errorf("listing the pods of node %s: %w", node, err)
	}
	out := make(map[v1alpha1.PodReference]*corev1.Pod, len(list.Items))
	for i := range list.Items {
		pod := &list.Items[i]
		out[v1alpha1.PodReference{Namespace: pod.Namespace, Name: pod.Name}] = pod
	}
	return out, nil
}

// readyCondition is the node's Ready condition message and since when it holds, when it is not True.
func readyCondition(node *corev1.Node) (string, time.Time, bool) {
	for _, c := range node.Status.Conditions {
		if c.Type == corev1.NodeReady && c.Status != corev1.ConditionTrue {
			return c.Message, c.LastTransitionTime.Time, true
		}
	}
	return "", time.Time{}, false
}

// bootTime estimates when the node's kubelet last started: the node's registration, or the last time its Ready
// condition turned True (a rebooted node goes Unknown and back). A NotReady transition is a failure, not a boot.
func bootTime(node *corev1.Node) time.Time {
	t := node.CreationTimestamp.Time
	for _, c := range node.Status.Conditions {
		if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue && c.LastTransitionTime.After(t) {
			t = c.LastTransitionTime.Time
		}
	}
	return t
}

// nodeChanged lets through a node's creation and deletion, and the updates that change its labels, its Ready
// condition or a condition some policy maps (conditionsKey): never a heartbeat, nor a change of a condition no
// policy maps.
func (r *Reconciler) nodeChanged() predicate.Predicate {
	return predicate.Funcs{
		UpdateFunc: func(e event.UpdateEvent) bool {
			o, ok1 := e.ObjectOld.(*corev1.Node)
			n, ok2 := e.ObjectNew.(*corev1.Node)
			if !ok1 || !ok2 {
				return true
			}
			oc, _, onr := readyCondition(o)
			nc, _, nnr := readyCondition(n)
			if oc != nc || onr != nnr || !slices.Equal(labelsOf(o), labelsOf(n)) {
				return true
			}
			mapped := r.mappedTypes()
			return !slices.Equal(conditionsKey(o, mapped), conditionsKey(n, mapped))
		},
		CreateFunc:  func(event.CreateEvent) bool { return true },
		DeleteFunc:  func(event.DeleteEvent) bool { return true },
		GenericFunc: func(event.GenericEvent) bool { return true },
	}
}

func labelsOf(n *corev1.Node) []string {
	out := make([]string, 0, len(n.Labels))
	for k, v := range n.Labels {
		out = append(out, k+"="+v)
	}
	sort.Strings(out)
	return out
}

// nodeEvidence builds the NodeRemediation's evidence from a candidate.
func nodeEvidence(c *candidate) v1alpha1.Evidence {
	ev := v1alpha1.Evidence{EventCount: c.events, PodCount: int32(len(c.pods)), NodeCondition: truncate(c.readyMessage, 1024),
		Conditions: c.conditions}
	if len(c.pods) > 20 {
		ev.Pods = c.pods[:20]
	} else {
		ev.Pods = c.pods
	}
	if !c.first.IsZero() {
		ev.FirstSeen = &metav1.Time{Time: c.first}
	}
	if !c.last.IsZero() {
		ev.LastSeen = &metav1.Time{Time: c.last}
	}
	for _, s := range c.samples {
		ev.SampleMessages = append(ev.SampleMessages, truncate(s, 2048))
	}
	return ev
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

// remediationName is a readable, unique name: node, signature and the minute it was opened.
func remediationName(node, sig string, now time.Time) string {
	suffix := fmt.Sprintf("-%s-%s", sig, strconv.FormatInt(now.Unix(), 36))
	if max := 253 - len(suffix); len(node) > max {
		node = node[:max]
	}
	return strings.Trim(node+suffix, "-.")
}

// nodeMembership enqueues nothing: it moves nodeGen on every node change that can change a policy's coverage, so
// that coveredBy recounts. The cache holds a change before its handlers hear of it, so a count is never kept past a
// change the cache has seen.
func (r *Reconciler) nodeMembership() handler.TypedEventHandler[client.Object, reconcile.Request] {
	return handler.Funcs{
		CreateFunc: func(context.Context, event.CreateEvent, workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			r.nodeGen.Add(1)
		},
		UpdateFunc: func(_ context.Context, e event.UpdateEvent, _ workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			if e.ObjectOld == nil || e.ObjectNew == nil || !maps.Equal(e.ObjectOld.GetLabels(), e.ObjectNew.GetLabels()) {
				r.nodeGen.Add(1)
			}
		},
		DeleteFunc: func(context.Context, event.DeleteEvent, workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			r.nodeGen.Add(1)
		},
	}
}

// coveredNodes is a policy's covered nodes as counted at one generation of the policy and of the nodes.
type coveredNodes struct {
	uid        types.UID
	generation int64
	nodeGen    uint64
	nodes      map[string]bool
}

// coveredBy is the set of nodes the policy covers, from the cache: counted again only when the policy's spec or a
// node's membership changed since the last count (listing every node of a large cluster for each reconcile was
// most of the detection's CPU and garbage: make bench, detection latency).
func (r *Reconciler) coveredBy(ctx context.Context, p *v1alpha1.RemediationPolicy) (map[string]bool, error) {
	gen := r.nodeGen.Load()
	if v, ok := r.covered.Load(p.Name); ok {
		if c := v.(coveredNodes); c.uid == p.UID && c.generation == p.Generation && c.nodeGen == gen && gen != 0 {
			return c.nodes, nil
		}
	}
	nodes, err := policy.CoveredNodes(ctx, r.Client, p)
	if err != nil {
		return nil, fmt.Errorf("listing the nodes policy %s covers: %w", p.Name, err)
	}
	r.covered.Store(p.Name, coveredNodes{uid: p.UID, generation: p.Generation, nodeGen: gen, nodes: nodes})
	return nodes, nil
}
