package detection

import (
	"sort"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/types"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
	"github.com/cnimedic/cnimedic/internal/signature"
)

// store aggregates evidence per node and signature, in memory. It is rebuilt from the API server after a restart:
// the event informers list the events still stored there (kubelet's events live an hour), and node conditions
// come with the nodes. Nothing in it is a decision: the reconciler decides from a snapshot of it.
type store struct {
	mu    sync.Mutex
	nodes map[string]map[string]*sigEvidence // node -> signature -> evidence
	// counts remembers the last count seen per event, so that an updated event adds only its new occurrences.
	counts map[string]int32
	// retention bounds memory: occurrences older than this are dropped whatever the policies say.
	retention time.Duration
	// consumed is, per node and signature, the end of the node's last finished remediation of that signature:
	// what happened up to then belonged to that incident (it was counted, quoted and acted on) and never counts
	// again, not even when the events are listed again after a restart (consume).
	consumed map[string]map[string]time.Time
}

// sigEvidence is what one node showed of one signature.
type sigEvidence struct {
	signature string
	custom    bool
	action    v1alpha1.RepairAction
	alt       v1alpha1.RepairAction
	hits      []hit // occurrences, oldest first
	pods      map[v1alpha1.PodReference]*podSeen
	// conditions are the node's conditions that carry the signature, by condition type: its Ready condition
	// (readyKey) and the conditions the policy maps (spec.detection.nodeConditions). Several may hold at once.
	conditions map[string]*conditionState
	// confirmed is the last time the node itself confirmed the signature through its pods (pods bound to it whose
	// kubelet-written status had shown the sandbox failing for minStuckDuration, and their events): what a storm
	// counts (confirmedNodesWith), whatever the per-node thresholds. Events alone never set it.
	confirmed time.Time
}

// conditionState is one node condition while it carries a signature.
type conditionState struct {
	// message is what the evidence quotes, since when the condition carries the signature, params the parameters
	// it gave, detail the mapped condition (nil for the Ready condition).
	message string
	since   time.Time
	params  map[string]string
	detail  *v1alpha1.ConditionEvidence
}

type hit struct {
	at time.Time
	n  int32
}

// podSeen is what the events said of one pod: each occurrence, oldest first, with the pod UID the event named (a
// pod of the same name created again is another pod).
type podSeen struct {
	hits []podHit // in arrival order
	// params and samples are what the pod's events said: hints, taken only when the pod is confirmed.
	params  map[string]string
	samples []sample
}

type podHit struct {
	hit
	uid types.UID
	// params is what the occurrence's message gave (shared, never written), so that consume can rebuild a pod's
	// parameters from the occurrences it keeps.
	params map[string]string
}

// sample is a message and when it was said.
type sample struct {
	at  time.Time
	msg string
}

const maxSamples = 5

func newStore(retention time.Duration) *store {
	return &store{nodes: map[string]map[string]*sigEvidence{}, counts: map[string]int32{}, retention: retention,
		consumed: map[string]map[string]time.Time{}}
}

func (s *store) entry(node string, res signature.Result) *sigEvidence {
	sigs := s.nodes[node]
	if sigs == nil {
		sigs = map[string]*sigEvidence{}
		s.nodes[node] = sigs
	}
	e := sigs[res.Signature]
	if e == nil {
		e = &sigEvidence{signature: res.Signature, pods: map[v1alpha1.PodReference]*podSeen{}}
		sigs[res.Signature] = e
	}
	e.custom, e.action, e.alt = res.Custom, res.Action, res.Alternative
	return e
}

// observeEvent records a classified event. key identifies the event (its UID) and count is its occurrence count;
// only the occurrences not seen before are added. pod and uid are the pod the event names, if any: none of it is
// evidence yet, the reconciler counts a pod's occurrences only once the pod's own status confirms them.
func (s *store) observeEvent(node, key string, count int32, at time.Time, pod *v1alpha1.PodReference, uid types.UID, res signature.Result, message string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if count < 1 {
		count = 1
	}
	n := count - s.counts[key]
	if n <= 0 {
		return
	}
	s.counts[key] = count
	if !at.After(s.consumed[node][res.Signature]) {
		return // a finished remediation of the node consumed it (its count is remembered above)
	}
	e := s.entry(node, res)
	e.hits = append(e.hits, hit{at: at, n: n})
	if pod != nil {
		ps := e.pods[*pod]
		if ps == nil {
			ps = &podSeen{}
			e.pods[*pod] = ps
		}
		ps.hits = append(ps.hits, podHit{hit: hit{at: at, n: n}, uid: uid, params: res.Params})
		if ps.params == nil {
			ps.params = map[string]string{}
		}
		for k, v := range res.Params {
			ps.params[k] = v
		}
		ps.samples = addTimedSample(ps.samples, sample{at: at, msg: message})
	}
	// An event that names no pod counts for nothing and gives nothing: no pod of it can be confirmed.
}

// addSample adds a message to samples, once, keeping the newest maxSamples.
func addSample(samples []string, msg string) []string {
	if len(msg) > 2048 {
		msg = msg[:2048]
	}
	for _, s := range samples {
		if s == msg {
			return samples
		}
	}
	if len(samples) == maxSamples {
		samples = samples[1:]
	}
	return append(samples, msg)
}

// addTimedSample is addSample for samples that keep when they were said (the newest time of a repeated message).
func addTimedSample(samples []sample, sm sample) []sample {
	if len(sm.msg) > 2048 {
		sm.msg = sm.msg[:2048]
	}
	for i := range samples {
		if samples[i].msg == sm.msg {
			if sm.at.After(samples[i].at) {
				samples[i].at = sm.at
			}
			return samples
		}
	}
	if len(samples) == maxSamples {
		samples = samples[1:]
	}
	return append(samples, sm)
}

// consume records that a remediation of the node for the signature ended at end: every occurrence up to end, the
// pods seen only then, their parameters and messages belonged to it, and are dropped; occurrences that arrive
// later with a time up to end are ignored (observeEvent). The node condition, which kubelet keeps writing, stays,
// but counts toward minStuckDuration only from end on (snapshot). It reports whether it moved the node's mark for
// the signature (false: an end at or before one already consumed).
func (s *store) consume(node, sig string, end time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if end.IsZero() || !end.After(s.consumed[node][sig]) {
		return false
	}
	if s.consumed[node] == nil {
		s.consumed[node] = map[string]time.Time{}
	}
	s.consumed[node][sig] = end
	e := s.nodes[node][sig]
	if e == nil {
		return true
	}
	if !e.confirmed.After(end) {
		e.confirmed = time.Time{}
	}
	kept := e.hits[:0]
	for _, h := range e.hits {
		if h.at.After(end) {
			kept = append(kept, h)
		}
	}
	e.hits = kept
	for ref, ps := range e.pods {
		hits := ps.hits[:0]
		params := map[string]string{}
		for _, h := range ps.hits {
			if h.at.After(end) {
				hits = append(hits, h)
				for k, v := range h.params {
					params[k] = v
				}
			}
		}
		if len(hits) == 0 {
			delete(e.pods, ref)
			continue
		}
		samples := ps.samples[:0]
		for _, sm := range ps.samples {
			if sm.at.After(end) {
				samples = append(samples, sm)
			}
		}
		ps.hits, ps.params, ps.samples = hits, params, samples
	}
	return true
}

// observeConditions records the node's conditions that carry a signature, all of them at once (its Ready
// condition under readyKey, the mapped ones under their type): a condition that is not among them any more, or
// that carries another signature now, stops being evidence of the one it carried.
func (s *store) observeConditions(node string, seen []conditionSeen) {
	s.mu.Lock()
	defer s.mu.Unlock()
	carries := make(map[string]string, len(seen))
	for _, cs := range seen {
		carries[cs.key] = cs.res.Signature
	}
	for _, e := range s.nodes[node] {
		for k := range e.conditions {
			if carries[k] != e.signature {
				delete(e.conditions, k)
			}
		}
	}
	for _, cs := range seen {
		e := s.entry(node, cs.res)
		if e.conditions == nil {
			e.conditions = map[string]*conditionState{}
		}
		st := e.conditions[cs.key]
		if st == nil {
			st = &conditionState{}
			e.conditions[cs.key] = st
		}
		// A new message or a new transition starts the count again from the condition's transition.
		if st.message != cs.message || st.since.IsZero() || cs.since.After(st.since) {
			st.since = cs.since
		}
		st.message, st.params, st.detail = cs.message, copyMap(cs.res.Params), cs.detail
	}
}

// forget drops everything known of a node (deleted).
func (s *store) forget(node string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.nodes, node)
	delete(s.consumed, node)
}

// forgetEvent drops the count memory of a deleted event.
func (s *store) forgetEvent(key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.counts, key)
}

// candidate is a snapshot of one signature's evidence on a node, counted as a policy counts it.
type candidate struct {
	signature string
	custom    bool
	action    v1alpha1.RepairAction
	alt       v1alpha1.RepairAction
	params    map[string]string
	samples   []string
	// events and pods are, in a snapshot, every occurrence and every pod the events named inside the window: an
	// upper bound, since events prove nothing. confirm narrows them to the pods whose own status confirms the
	// failure on the node, and to those pods' occurrences.
	events int32
	pods   []v1alpha1.PodReference
	// condition is set when some node condition carries the signature (the text of one of them); readyMessage is
	// the Ready condition's message when it is one of them, conditions the mapped ones (in type order).
	condition    string
	readyMessage string
	conditions   []v1alpha1.ConditionEvidence
	// conditionFor is how long the node condition has carried the signature (the longest-held one).
	conditionFor time.Duration
	first, last  time.Time
	// ripens is the next moment a pod of the window will have shown its failure long enough to count (zero: none
	// will); set by confirm.
	ripens time.Time
	// named is, per pod named, the window's occurrences and what its events said, for confirm.
	named map[v1alpha1.PodReference]podWindow
	// conditionFirst is when the node condition began to count: when it began to carry the signature, or the end
	// of the last remediation that consumed the signature's evidence if later (zero: it does not carry it).
	conditionFirst time.Time
	// conditionBegan is when the node condition began to carry the signature, whatever was consumed since.
	conditionBegan time.Time
	// failingSince is when the earliest confirmed pod began to show its sandbox failing (set by confirm).
	failingSince time.Time
}

// podWindow is what the events said of one pod inside the window.
type podWindow struct {
	hits    []podHit
	params  map[string]string
	samples []string
}

// window is how a policy counts.
type window struct {
	now time.Time
	// from is the start of the counting window (now - window, or the end of the boot grace if later).
	from time.Time
}

// snapshot returns the node's candidates under w and prunes what no policy can count any more. stale reports how
// many occurrences were dropped as too old.
func (s *store) snapshot(node string, w window) (cands []candidate, stale int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for sig, e := range s.nodes[node] {
		stale += e.prune(w.now.Add(-s.retention))
		c := candidate{signature: e.signature, custom: e.custom, action: e.action, alt: e.alt, params: map[string]string{}}
		for _, h := range e.hits {
			if !h.at.Before(w.from) {
				c.events += h.n
				if c.first.IsZero() || h.at.Before(c.first) {
					c.first = h.at
				}
				if h.at.After(c.last) {
					c.last = h.at
				}
			}
		}
		for ref, ps := range e.pods {
			var in []podHit
			for _, h := range ps.hits {
				if !h.at.Before(w.from) {
					in = append(in, h)
				}
			}
			if len(in) == 0 {
				continue
			}
			if c.named == nil {
				c.named = map[v1alpha1.PodReference]podWindow{}
			}
			pw := podWindow{hits: in, params: copyMap(ps.params)}
			for _, sm := range ps.samples {
				pw.samples = append(pw.samples, sm.msg)
			}
			c.named[ref] = pw
			c.pods = append(c.pods, ref)
		}
		sortPods(c.pods)
		if len(e.conditions) > 0 {
			keys := make([]string, 0, len(e.conditions))
			for k := range e.conditions {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			var from, began time.Time
			for _, k := range keys {
				st := e.conditions[k]
				if c.condition == "" {
					c.condition = st.message
				}
				if k == readyKey && st.detail == nil {
					c.readyMessage = st.message
				} else if st.detail != nil {
					c.conditions = append(c.conditions, *st.detail)
				}
				for pk, pv := range st.params {
					c.params[pk] = pv
				}
				c.samples = addSample(c.samples, st.message)
				if began.IsZero() || st.since.Before(began) {
					began = st.since
				}
			}
			// A condition that already carried the signature when a remediation of it ended counts from that end:
			// the remediation consumed what came before.
			from = began
			if end := s.consumed[node][sig]; end.After(from) {
				from = end
			}
			c.conditionFor = w.now.Sub(from)
			c.conditionFirst = from
			c.conditionBegan = began
			if c.last.Before(w.now) {
				c.last = w.now
			}
			if c.first.IsZero() || from.Before(c.first) {
				c.first = from
			}
		}
		if c.events == 0 && c.condition == "" {
			if len(e.hits) == 0 {
				delete(s.nodes[node], sig)
			}
			continue
		}
		cands = append(cands, c)
	}
	if len(s.nodes[node]) == 0 {
		delete(s.nodes, node)
	}
	return cands, stale
}

// prune drops occurrences and pods older than cutoff and returns how many occurrences it dropped.
func (e *sigEvidence) prune(cutoff time.Time) int {
	i := 0
	dropped := 0
	for i < len(e.hits) && e.hits[i].at.Before(cutoff) {
		dropped += int(e.hits[i].n)
		i++
	}
	e.hits = e.hits[i:]
	for ref, ps := range e.pods {
		kept := ps.hits[:0]
		for _, h := range ps.hits {
			if !h.at.Before(cutoff) {
				kept = append(kept, h)
			}
		}
		if ps.hits = kept; len(ps.hits) == 0 {
			delete(e.pods, ref)
		}
	}
	return dropped
}

func sortPods(pods []v1alpha1.PodReference) {
	sort.Slice(pods, func(i, j int) bool {
		return pods[i].Namespace+"/"+pods[i].Name < pods[j].Namespace+"/"+pods[j].Name
	})
}

// markConfirmed records that the node's pods confirmed the signature at at (candidate.confirm left pods).
func (s *store) markConfirmed(node, sig string, at time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e := s.nodes[node][sig]; e != nil && at.After(e.confirmed) {
		e.confirmed = at
	}
}

// confirmedNodesWith returns the nodes that confirmed the signature themselves since from: their Ready condition
// or a condition the policy maps carries it, or their pods confirmed it (markConfirmed). A node that only events name is not among them: whoever
// may write events chooses the node they name.
func (s *store) confirmedNodesWith(sig string, from time.Time) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for node, sigs := range s.nodes {
		e := sigs[sig]
		if e == nil {
			continue
		}
		if len(e.conditions) > 0 || (!e.confirmed.IsZero() && !e.confirmed.Before(from)) {
			out = append(out, node)
		}
	}
	sort.Strings(out)
	return out
}

// nodeNames lists the nodes with evidence.
func (s *store) nodeNames() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, 0, len(s.nodes))
	for n := range s.nodes {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

func copyMap(m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}
