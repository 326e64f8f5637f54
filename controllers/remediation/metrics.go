package remediation

import (
	"context"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
)

var (
	repairsTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "cnimedic",
		Name:      "remediations_total",
		Help:      "NodeRemediations that reached an end, by signature, end phase and reason.",
	}, []string{"signature", "phase", "reason"})

	phaseDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: "cnimedic",
		Name:      "phase_duration_seconds",
		Help:      "Time NodeRemediations spent in each phase.",
		Buckets:   []float64{1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 4 * 3600, 24 * 3600},
	}, []string{"phase"})

	// nodesInFlight is counted from the cache when scraped, so it is right after a restart and never drifts.
	nodesInFlight = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: "cnimedic",
		Name:      "nodes_in_flight",
		Help:      "Nodes cnimedic holds right now (Draining, Repairing or Verifying), across all policies.",
	}, countInFlight)
	inFlightReader atomic.Value // client.Reader

	pendingApprovalSeconds = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: "cnimedic",
		Name:      "pending_approval_age_seconds",
		Help:      "How long each NodeRemediation awaiting approval has waited.",
	}, []string{"noderemediation", "node", "signature"})
)

func init() {
	metrics.Registry.MustRegister(repairsTotal, phaseDuration, nodesInFlight, pendingApprovalSeconds)
}

func countInFlight() float64 {
	r, ok := inFlightReader.Load().(client.Reader)
	if !ok {
		return 0
	}
	list := &v1alpha1.NodeRemediationList{}
	if err := r.List(context.Background(), list); err != nil {
		return 0
	}
	n := 0
	for _, nr := range list.Items {
		if nr.Status.Phase.HoldsNode() {
			n++
		}
	}
	return float64(n)
}

func recordEnd(nr *v1alpha1.NodeRemediation) {
	repairsTotal.WithLabelValues(nr.Spec.Signature, string(nr.Status.Phase), nr.Status.Reason).Inc()
	pendingApprovalSeconds.DeleteLabelValues(nr.Name, nr.Spec.NodeName, nr.Spec.Signature)
}
