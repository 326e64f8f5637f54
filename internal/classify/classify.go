package classify

import (
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
	"github.com/cnimedic/cnimedic/internal/signature"
	"github.com/cnimedic/cnimedic/internal/termsafe"
)

// Classified is a record with what the matcher made of it.
type Classified struct {
	Record
	Matched bool
	Result  signature.Result
	// Action is what cnimedic would do under the allowed actions; empty when nothing matched.
	Action v1alpha1.RepairAction
}

// Classify runs every record through set, deciding actions under allowed (a policy's allowedActions).
func Classify(set *signature.Set, allowed []v1alpha1.RepairAction, recs []Record) []Classified {
	out := make([]Classified, len(recs))
	for i, rec := range recs {
		c := Classified{Record: rec}
		if rec.NodeCondition {
			c.Result, c.Matched = set.MatchNodeCondition(rec.Message)
		} else {
			c.Result, c.Matched = set.Match(rec.Reason, rec.Message)
		}
		if c.Matched {
			c.Action = c.Result.ActionFor(allowed)
		}
		out[i] = c
	}
	return out
}

// NodeSummary is the evidence of one signature on one node, and what cnimedic would do about it.
type NodeSummary struct {
	Node      string
	Signature string
	// Events is how many input records matched; Occurrences adds up their counts.
	Events      int
	Occurrences int
	// Pods is how many distinct pods the events were about.
	Pods   int
	Action v1alpha1.RepairAction
	// Preferred is the action the signature calls for when the policy does not allow it (Action is then
	// Escalate); empty otherwise.
	Preferred v1alpha1.RepairAction
	// Family is set when the signature names a kind of failure, not its cause (cni-unclassified): the node's
	// diagnosis decides the repair (signature.FamilyOutcome).
	Family bool
}

// Summarize groups the matched records that name a node by node and signature: the evidence the detection
// controller counts against the policy's thresholds. Nodes come in name order, each node's signatures by
// occurrences, most first.
func Summarize(cs []Classified) []NodeSummary {
	type key struct{ node, sig string }
	sums := map[key]*NodeSummary{}
	pods := map[key]map[string]bool{}
	var keys []key
	for _, c := range cs {
		if !c.Matched || c.Node == "" {
			continue
		}
		k := key{c.Node, c.Result.Signature}
		s, ok := sums[k]
		if !ok {
			s = &NodeSummary{Node: c.Node, Signature: c.Result.Signature, Action: c.Action, Family: c.Result.Family}
			if preferred := cmp.Or(c.Result.Alternative, c.Result.Action); c.Action != preferred {
				s.Preferred = preferred
			}
			sums[k] = s
			pods[k] = map[string]bool{}
			keys = append(keys, k)
		}
		s.Events++
		s.Occurrences += c.Count
		if c.Pod != "" {
			pods[k][c.Pod] = true
		}
		// Parameters can change the action between events of one signature (one missing binary is a vendor's):
		// the most cautious one stands for the node.
		if c.Action == v1alpha1.ActionEscalate {
			s.Action = v1alpha1.ActionEscalate
		}
	}
	out := make([]NodeSummary, 0, len(keys))
	for _, k := range keys {
		sums[k].Pods = len(pods[k])
		out = append(out, *sums[k])
	}
	slices.SortStableFunc(out, func(a, b NodeSummary) int {
		return cmp.Or(strings.Compare(a.Node, b.Node), b.Occurrences-a.Occurrences, strings.Compare(a.Signature, b.Signature))
	})
	return out
}

// jsonLine is one line of `-o jsonl`, in input order.
type jsonLine struct {
	Signature string            `json:"signature"`
	Params    map[string]string `json:"params"`
	Action    string            `json:"action,omitempty"`
	Custom    bool              `json:"custom,omitempty"`
	Reason    string            `json:"reason,omitempty"`
	Node      string            `json:"node,omitempty"`
	Pod       string            `json:"pod,omitempty"`
}

// WriteJSONL writes one JSON object per record, in input order: signature ("" when none) and params always,
// then the action, reason, node and pod when known.
func WriteJSONL(w io.Writer, cs []Classified) error {
	enc := json.NewEncoder(w)
	for _, c := range cs {
		l := jsonLine{Params: map[string]string{}, Reason: c.Reason, Node: c.Node, Pod: c.Pod}
		if c.Matched {
			l.Signature, l.Action, l.Custom = c.Result.Signature, string(c.Action), c.Result.Custom
			l.Params = c.Result.Params
		}
		if err := enc.Encode(l); err != nil {
			return err
		}
	}
	return nil
}

// messageWidth is how much of a message the table shows.
const messageWidth = 72

// WriteTable writes a row per record, then, when the input named nodes, what cnimedic would do per node.
func WriteTable(w io.Writer, cs []Classified) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "#\tNODE\tREASON\tSIGNATURE\tACTION\tMESSAGE")
	matched := 0
	for i, c := range cs {
		sig, action := "-", "-"
		if c.Matched {
			matched++
			sig, action = c.Result.Signature, string(c.Action)
		}
		reason := c.Reason
		if c.NodeCondition {
			reason = "(node condition)"
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\n", i+1, cell(c.Node), cell(reason), cell(sig), action, cell(abbreviate(c.Message, messageWidth)))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(w, "\n%d of %d messages match a signature.\n", matched, len(cs))
	var families []string
	for _, c := range cs {
		if c.Matched && c.Result.Family && c.Action == v1alpha1.ActionDiagnose && !slices.Contains(families, c.Result.Signature) {
			families = append(families, c.Result.Signature)
		}
	}
	for _, f := range families {
		fmt.Fprintf(w, "%s: a CNI failure no signature names: %s.\n", cell(f), signature.FamilyOutcome)
	}

	sums := Summarize(cs)
	if len(sums) == 0 {
		return nil
	}
	fmt.Fprintln(w, "\nPer node, what cnimedic would do once the evidence meets the policy's thresholds:")
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tSIGNATURE\tEVENTS\tOCCURRENCES\tPODS\tACTION")
	for _, s := range sums {
		action := string(s.Action)
		if s.Family && s.Action == v1alpha1.ActionDiagnose {
			action += " (" + signature.FamilyOutcome + ")"
		}
		if s.Preferred != "" {
			action += " (" + string(s.Preferred) + " when the policy allows it)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%s\n", cell(s.Node), cell(s.Signature), s.Events, s.Occurrences, s.Pods, action)
	}
	return tw.Flush()
}

// cell is a table cell of text from the input (event messages, node names, a custom signature's name): "-" when
// empty, and a terminal escape in it shown instead of obeyed (internal/termsafe), as are the tab and newline that
// would break the table's columns.
func cell(s string) string {
	if s == "" {
		return "-"
	}
	s = strings.NewReplacer("\t", `\t`, "\n", `\n`).Replace(s)
	return termsafe.String(s)
}

// abbreviate fits a message on one table line.
func abbreviate(s string, width int) string {
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > width {
		return string(r[:width-3]) + "..."
	}
	return s
}
