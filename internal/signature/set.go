package signature

import (
	"fmt"
	"regexp"
	"slices"
	"sync"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
)

// Result is a classified message.
type Result struct {
	// Signature is the built-in signature id or the custom signature's name.
	Signature string
	// Custom is set when a policy's custom signature matched.
	Custom bool
	// Params are the parameters the message gave (see the Param* keys; a custom signature's named groups).
	Params map[string]string
	// Action is what the catalog (or the custom signature) says to do about it.
	Action v1alpha1.RepairAction
	// Alternative, when set, replaces Action when the policy allows it (cni-daemon-unavailable: restart the
	// node's CNI agent pod instead of only escalating).
	Alternative v1alpha1.RepairAction
	// Family is set when the signature names a kind of failure, not its cause (cni-unclassified): the node's
	// diagnosis decides what is repaired (FamilyOutcome).
	Family bool
}

// ActionFor is what cnimedic does about r under a policy that allows the given actions: the alternative when it
// is allowed, else the action when it is allowed, else Escalate (the API's rule for disallowed actions).
func (r Result) ActionFor(allowed []v1alpha1.RepairAction) v1alpha1.RepairAction {
	if r.Alternative != "" && slices.Contains(allowed, r.Alternative) {
		return r.Alternative
	}
	if slices.Contains(allowed, r.Action) {
		return r.Action
	}
	return v1alpha1.ActionEscalate
}

// CustomSignatureError says why a policy's custom signature was left out of a Set. Its message names the
// signature, so that it can go into the policy's SignaturesValid condition as it is.
type CustomSignatureError struct {
	// Name is the custom signature's name ("" when the name itself is missing).
	Name string
	// Field is the CustomSignature field at fault: name, pattern, action or reasons.
	Field string
	Err   error
}

func (e *CustomSignatureError) Error() string {
	return fmt.Sprintf("custom signature %q: %s: %v", e.Name, e.Field, e.Err)
}

func (e *CustomSignatureError) Unwrap() error { return e.Err }

// rule is one regular expression of a Set, with what a match of it means.
type rule struct {
	signature string
	custom    bool
	// enabled is false for a built-in the policy does not act on: it still takes part in precedence, so that
	// a message whose cause is disabled is not blamed on a lesser consequence the policy does act on.
	enabled       bool
	re            *regexp.Regexp
	implies       map[string]string
	extract       []compiledExtractor
	reasons       []string
	nodeCondition bool
	action        v1alpha1.RepairAction
	alternative   v1alpha1.RepairAction
	decide        func(map[string]string) v1alpha1.RepairAction
	family        bool
	// triggers: the rule is a candidate when the message contains every piece of one of them. always is set
	// when some alternative of the expression has no usable piece.
	triggers []pieceSet
	always   bool
}

// Set matches messages against the built-in signatures a policy enables and its custom signatures. It is
// immutable and safe for concurrent use; build one per policy generation with Compile.
type Set struct {
	rules   []rule
	scanner *scanner
	// reasons is every event reason some rule accepts: anything else is rejected before scanning.
	reasons []string
	// anyAlways is set when some rule has no piece to prefilter on and must see every message.
	anyAlways bool
}

// builtinRules are the catalog's expressions, compiled once (the catalog is constant; a bad expression is a bug
// that the package's tests catch).
var builtinRules = sync.OnceValue(func() []rule {
	var rules []rule
	for i := range catalog {
		d := &catalog[i]
		var extract []compiledExtractor
		for _, e := range append(append([]Extractor(nil), d.Extract...), commonExtractors...) {
			extract = append(extract, compileExtractor(e))
		}
		for _, p := range d.Patterns {
			rules = append(rules, rule{
				signature:     string(d.ID),
				enabled:       true,
				re:            regexp.MustCompile(p.Regexp),
				implies:       p.Implies,
				extract:       extract,
				reasons:       d.Reasons,
				nodeCondition: d.NodeCondition,
				action:        d.Action,
				alternative:   d.Alternative,
				decide:        d.decide,
				family:        d.Family,
			})
		}
	}
	return rules
})

var defaultSet = sync.OnceValue(func() *Set {
	s, errs := Compile(nil, nil)
	if len(errs) > 0 {
		panic(fmt.Sprintf("built-in signatures: %v", errs))
	}
	return s
})

// Default returns the Set of every built-in signature and no custom one (what a policy with no signatures list
// and no custom signatures uses). It is built once.
func Default() *Set {
	return defaultSet()
}

// CompilePolicy compiles the signatures a RemediationPolicy spec enables and defines.
func CompilePolicy(spec *v1alpha1.RemediationPolicySpec) (*Set, []error) {
	return Compile(spec.Signatures, spec.CustomSignatures)
}

// Compile builds the Set for a policy: the built-in signatures listed in enabled (all of them when enabled is
// empty) and the custom signatures. Custom signatures come first in precedence, in the order given: a site's own
// pattern is more specific than the catalog. A custom signature that is invalid (pattern that does not compile,
// unknown action, name clash) is left out and reported as a *CustomSignatureError; the returned Set is always
// usable. An unknown built-in id is reported too.
func Compile(enabled []v1alpha1.SignatureID, custom []v1alpha1.CustomSignature) (*Set, []error) {
	var errs []error
	on := map[string]bool{}
	for _, id := range enabled {
		if _, ok := Lookup(id); !ok {
			errs = append(errs, fmt.Errorf("unknown built-in signature %q", id))
			continue
		}
		on[string(id)] = true
	}

	var rules []rule
	names := map[string]bool{}
	for _, c := range custom {
		r, err := compileCustom(c, names)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		names[c.Name] = true
		rules = append(rules, r)
	}
	for _, r := range builtinRules() {
		r.enabled = len(enabled) == 0 || on[r.signature]
		rules = append(rules, r)
	}

	s := &Set{rules: rules}
	s.index()
	return s, errs
}

// defaultCustomReasons is the API's default for CustomSignature.reasons, for objects that did not go through
// defaulting (tests, the CLI).
var defaultCustomReasons = []string{ReasonFailedCreatePodSandBox, ReasonFailedKillPod}

func compileCustom(c v1alpha1.CustomSignature, taken map[string]bool) (rule, error) {
	fail := func(field string, err error) (rule, error) {
		return rule{}, &CustomSignatureError{Name: c.Name, Field: field, Err: err}
	}
	switch {
	case c.Name == "":
		return fail("name", fmt.Errorf("must not be empty"))
	case taken[c.Name]:
		return fail("name", fmt.Errorf("defined twice"))
	}
	if _, builtin := Lookup(v1alpha1.SignatureID(c.Name)); builtin {
		return fail("name", fmt.Errorf("is a built-in signature id"))
	}
	if !IsValidAction(c.Action) {
		return fail("action", fmt.Errorf("unknown action %q", c.Action))
	}
	re, err := regexp.Compile(c.Pattern)
	if err != nil {
		return fail("pattern", fmt.Errorf("does not compile: %w", err))
	}
	reasons := c.Reasons
	if len(reasons) == 0 {
		reasons = defaultCustomReasons
	}
	for _, r := range reasons {
		if r == "" {
			return fail("reasons", fmt.Errorf("an empty reason would match nothing"))
		}
	}
	return rule{
		signature: c.Name,
		custom:    true,
		enabled:   true,
		re:        re,
		reasons:   reasons,
		action:    c.Action,
	}, nil
}

// index derives the pieces of the rules, builds the scanner over them and collects the accepted reasons.
func (s *Set) index() {
	ids := map[string]int{}
	var pieces []string
	// piece returns the id of p, registering it, or -1 when the scanner is full.
	piece := func(p string) int {
		if id, ok := ids[p]; ok {
			return id
		}
		if len(pieces) == maxPieces {
			return -1
		}
		ids[p] = len(pieces)
		pieces = append(pieces, p)
		return ids[p]
	}
	// prefilter returns the triggers of an expression, and whether it must be tried whatever the message holds.
	prefilter := func(re *regexp.Regexp) ([]pieceSet, bool) {
		alts, err := triggers(re.String())
		if err != nil {
			// regexp accepted it, so syntax will too; if not, the expression is simply never skipped.
			return nil, true
		}
		var out []pieceSet
		always := false
		for _, alt := range alts {
			var t pieceSet
			n := 0
			for _, p := range alt {
				// Out of room, a piece is dropped: requiring fewer pieces keeps the prefilter sound.
				if id := piece(p); id >= 0 {
					t.add(id)
					n++
				}
			}
			always = always || n == 0
			out = append(out, t)
		}
		return out, always
	}
	for i := range s.rules {
		r := &s.rules[i]
		r.triggers, r.always = prefilter(r.re)
		s.anyAlways = s.anyAlways || r.always
		// The extractors are shared with the catalog; their gates belong to this Set's piece numbering.
		r.extract = slices.Clone(r.extract)
		for j := range r.extract {
			ex := &r.extract[j]
			ex.gates = make([]int, len(ex.After))
			for k, a := range ex.After {
				ex.gates[k] = -1
				if p := literalPiece(a); p != "" {
					ex.gates[k] = piece(p)
				}
			}
		}
		for _, reason := range r.reasons {
			if !slices.Contains(s.reasons, reason) {
				s.reasons = append(s.reasons, reason)
			}
		}
	}
	s.scanner = newScanner(pieces)
}

// evidence says where a message came from.
type evidence int

const (
	fromEvent evidence = iota
	fromNodeCondition
)

// Match classifies an event message. reason is the event's reason; an empty reason means it is unknown (a log
// line, a pasted message) and lets every signature try. It returns false when no signature matches, or when the
// signature with precedence is one the policy does not enable.
func (s *Set) Match(reason, message string) (Result, bool) {
	if reason != "" && !slices.Contains(s.reasons, reason) {
		return Result{}, false
	}
	return s.match(fromEvent, reason, message)
}

// MatchNodeCondition classifies the message of a node's Ready condition (for example "container runtime network
// not ready: NetworkReady=false reason:NetworkPluginNotReady message:Network plugin returns error: cni plugin
// not initialized"). Only signatures that a node condition proves on its own take part; custom signatures match
// event messages only.
func (s *Set) MatchNodeCondition(message string) (Result, bool) {
	return s.match(fromNodeCondition, "", message)
}

func (s *Set) match(from evidence, reason, message string) (Result, bool) {
	found := s.scanner.scan(message)
	if found.empty() && !s.anyAlways {
		return Result{}, false
	}
	normalized, haveNormalized := "", false
	for i := range s.rules {
		r := &s.rules[i]
		if !r.candidate(&found) || !r.accepts(from, reason) {
			continue
		}
		if !haveNormalized {
			normalized, haveNormalized = normalize(message), true
		}
		loc, ok := r.find(normalized)
		if !ok {
			continue
		}
		if !r.enabled {
			return Result{}, false
		}
		return r.result(normalized, loc, &found), true
	}
	return Result{}, false
}

// find matches the rule's expression, returning the submatch positions only when it has groups to read (most
// have none, and MatchString does not allocate).
func (r *rule) find(normalized string) ([]int, bool) {
	if r.re.NumSubexp() == 0 {
		return nil, r.re.MatchString(normalized)
	}
	loc := r.re.FindStringSubmatchIndex(normalized)
	return loc, loc != nil
}

func (r *rule) accepts(from evidence, reason string) bool {
	if from == fromNodeCondition {
		return r.nodeCondition
	}
	return reason == "" || slices.Contains(r.reasons, reason)
}

func (r *rule) candidate(found *pieceSet) bool {
	return satisfied(r.always, r.triggers, found)
}

// satisfied reports whether the found pieces include every piece of one of the triggers.
func satisfied(always bool, triggers []pieceSet, found *pieceSet) bool {
	if always {
		return true
	}
	for i := range triggers {
		if found.contains(&triggers[i]) {
			return true
		}
	}
	return false
}

// result builds the Result of a message r matched at loc: the expression's named groups, then the extractors
// for what is still missing, then the implied parameters, then the action. found is what the scanner found in
// the message (nil: unknown, search for everything).
func (r *rule) result(normalized string, loc []int, found *pieceSet) Result {
	params := map[string]string{}
	setGroups(params, r.re, loc, normalized)
	for i := range r.extract {
		ex := &r.extract[i]
		if params[ex.Param] != "" && !ex.All {
			continue
		}
		if v := ex.value(normalized, found); v != "" {
			params[ex.Param] = v
		}
	}
	for k, v := range r.implies {
		if params[k] == "" {
			params[k] = v
		}
	}
	action := r.action
	if r.decide != nil {
		action = r.decide(params)
	}
	return Result{Signature: r.signature, Custom: r.custom, Params: params, Action: action, Alternative: r.alternative, Family: r.family}
}

// setGroups sets the named groups of one match (none when loc is nil).
func setGroups(params map[string]string, re *regexp.Regexp, loc []int, s string) {
	if loc == nil {
		return
	}
	for i, name := range re.SubexpNames() {
		if name == "" || loc[2*i] < 0 || params[name] != "" {
			continue
		}
		if v := cleanParam(name, s[loc[2*i]:loc[2*i+1]]); v != "" {
			params[name] = v
		}
	}
}

// Signatures lists the names the Set can return: custom signatures, then the enabled built-ins, in precedence
// order.
func (s *Set) Signatures() []string {
	var out []string
	for _, r := range s.rules {
		if r.enabled && !slices.Contains(out, r.signature) {
			out = append(out, r.signature)
		}
	}
	return out
}

// Reasons lists the event reasons some signature of the Set accepts, in no particular order: the events the
// detection controller needs to watch. Events with other reasons never match.
func (s *Set) Reasons() []string {
	return slices.Clone(s.reasons)
}
