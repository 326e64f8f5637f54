package remediation

import (
	"github.com/prometheus/client_golang/prometheus"
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

	nodesInFlight = prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: "cnimedic",
		Name:      "nodes_in_flight",
		Help:      "Nodes cnimedic holds right now (Draining, Repairing or Verifying), across all policies.",
	})

	pendingApprovalSeconds = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: "cnimedic",
		Name:      "pending_approval_age_seconds",
		Help:      "How long each NodeRemediation awaiting approval has waited.",
	}, []string{"noderemediation", "node", "signature"})
)

func init() {
	metrics.Registry.MustRegister(repairsTotal, phaseDuration, nodesInFlight, pendingApprovalSeconds)
}

func recordEnd(nr *v1alpha1.NodeRemediation) {
	repairsTotal.WithLabelValues(nr.Spec.Signature, string(nr.Status.Phase), nr.Status.Reason).Inc()
	pendingApprovalSeconds.DeleteLabelValues(nr.Name, nr.Spec.NodeName, nr.Spec.Signature)
}
