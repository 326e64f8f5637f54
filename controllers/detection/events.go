package detection

import (
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
	"github.com/cnimedic/cnimedic/internal/events"
)

// Event reasons of the detection.
const (
	ReasonStormDetected = "StormDetected"
	ReasonStormEnded    = "StormEnded"
	ReasonEvidenceAdded = "EvidenceAdded"
	// ReasonIncidentHeldOff says that a failure the node shows opens no remediation, and why (holdOff).
	ReasonIncidentHeldOff = "IncidentHeldOff"
)

// heldOffEvent is published on the finished remediation that holds a new incident off, with the node as related
// object: `kubectl events --for noderemediation/NAME` and the node's events say why nothing opened.
func heldOffEvent(by *v1alpha1.NodeRemediation, node *corev1.Node, sig, why string) events.Event {
	return events.Event{Regarding: by, Related: node, Type: corev1.EventTypeNormal, Reason: ReasonIncidentHeldOff, Action: "Detect",
		Message:      fmt.Sprintf("node %s shows %s, but no remediation is opened: %s", node.Name, sig, why),
		DedupeValues: []string{node.Name, sig, by.Name}, DedupeTimeout: 5 * time.Minute}
}

func stormEvent(p *v1alpha1.RemediationPolicy, sig string, nodes, covered int) events.Event {
	return events.Event{Regarding: p, Type: corev1.EventTypeWarning, Reason: ReasonStormDetected, Action: "Detect",
		Message: fmt.Sprintf("%d of %d covered nodes show %s inside the detection window (more than storm.thresholdPercent %d%%): "+
			"a cluster-wide cause is not fixed node by node, so cnimedic opens no new repairs and holds automatic approval until %s after the storm stops growing; look at the CNI provider and recent cluster changes",
			nodes, covered, sig, p.Spec.Storm.ThresholdPercent, p.Spec.Storm.Cooldown.Duration),
		DedupeValues: []string{sig}}
}

func stormEndedEvent(p *v1alpha1.RemediationPolicy, sig string) events.Event {
	return events.Event{Regarding: p, Type: corev1.EventTypeNormal, Reason: ReasonStormEnded, Action: "Detect",
		Message: fmt.Sprintf("the storm of %s is over (storm.cooldown %s passed): automatic repair resumes", sig, p.Spec.Storm.Cooldown.Duration)}
}
