package diagnose

import (
	"fmt"

	"github.com/cnimedic/cnimedic/remediator/node"
)

// layoutFindings say what the layout means for a repair: a node cnimedic cannot serve (and why), and each place
// where the settings given (the policy's, through the flags) contradict what the node shows.
func layoutFindings(s node.Settings) []Finding {
	var out []Finding
	l := s.Layout
	if l == nil {
		return nil
	}
	if !l.Servable {
		why := l.Reason
		if why == "" {
			why = "no reason recorded"
		}
		out = append(out, Finding{Severity: Warning, Path: l.RuntimeConfig,
			Summary: fmt.Sprintf("This node's layout (%s) is one cnimedic does not repair: %s.", l.Kind, why),
			Repair:  "Repair the node by hand; cnimedic reports what it reads here and changes nothing."})
	}
	for _, c := range s.Contradictions {
		out = append(out, Finding{Severity: Warning,
			Summary: fmt.Sprintf("The settings given contradict the node: %s.", c),
			Repair:  "Correct the RemediationPolicy's units, containerd config or CNI dirs for this node, or leave them unset so that the node's own layout is used."})
	}
	return out
}
