package detection

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
	"github.com/cnimedic/cnimedic/internal/events"
)

// Event reasons of the detection.
const (
	ReasonStormDetected = "StormDetected"
	ReasonStormEnded    = "StormEnded"
	ReasonEvidenceAdded = "EvidenceAdded"
)

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
