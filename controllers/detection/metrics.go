package detection

import (
	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
)

var (
	detectionsTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "cnimedic",
		Name:      "detections_total",
		Help:      "NodeRemediations opened by the detection, by signature.",
	}, []string{"signature"})

	evidenceObservedTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "cnimedic",
		Name:      "evidence_observed_total",
		Help:      "Failure events and node conditions classified as a signature, by signature and source.",
	}, []string{"signature", "source"})

	evidenceDroppedStaleTotal = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "cnimedic",
		Name:      "evidence_dropped_stale_total",
		Help:      "Failure occurrences dropped because they were older than any policy counts (stale evidence stops counting).",
	})

	stormsTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "cnimedic",
		Name:      "storms_total",
		Help:      "Storms declared, by policy and signature.",
	}, []string{"policy", "signature"})

	stormActive = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: "cnimedic",
		Name:      "storm_active",
		Help:      "1 while a storm holds automatic repair under the policy.",
	}, []string{"policy"})
)

func init() {
	metrics.Registry.MustRegister(detectionsTotal, evidenceObservedTotal, evidenceDroppedStaleTotal, stormsTotal, stormActive)
}
