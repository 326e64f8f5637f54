package policy

import (
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
)

// DefaultSpec is the spec the API server gives an empty policy. The workflow uses it to finish a repair whose policy
// was deleted while the repair was in flight. A test keeps it in step with the CRD's defaults on a real API server.
//
// There is deliberately no function that defaults a partly filled spec: an explicit zero (a boot grace of 0s) is
// indistinguishable from an unset field in Go, and only the API server can tell them apart.
func DefaultSpec() v1alpha1.RemediationPolicySpec {
	var s v1alpha1.RemediationPolicySpec
	d := &s.Detection
	setDuration(&d.MinStuckDuration, time.Minute)
	setInt(&d.MinOccurrences, 3)
	setInt(&d.MinPods, 1)
	setDuration(&d.Window, 10*time.Minute)
	setDuration(&d.BootGracePeriod, 3*time.Minute)
	setDuration(&d.EvidenceExpiry, 15*time.Minute)

	if s.Approval.Mode == "" {
		s.Approval.Mode = v1alpha1.ApprovalManual
	}
	setDuration(&s.Approval.Expiry, 24*time.Hour)
	if s.MaxConcurrent == nil {
		s.MaxConcurrent = ptr.To(intstr.FromInt32(1))
	}
	setInt(&s.Storm.ThresholdPercent, 25)
	setInt(&s.Storm.MinNodes, 3)
	setDuration(&s.Storm.Cooldown, 30*time.Minute)

	setDuration(&s.Drain.Timeout, 10*time.Minute)
	if s.Drain.OnTimeout == "" {
		s.Drain.OnTimeout = v1alpha1.DrainTimeoutAbort
	}

	r := &s.Repair
	if r.VersionStrategy == "" {
		r.VersionStrategy = v1alpha1.VersionRepairRewriteConfig
	}
	if r.InstallReferencePlugins == nil {
		r.InstallReferencePlugins = ptr.To(true)
	}
	setString(&r.Containerd.ConfigPath, "/etc/containerd/config.toml")
	setString(&r.Containerd.BinDir, "/opt/cni/bin")
	setString(&r.Containerd.ConfDir, "/etc/cni/net.d")
	setString(&r.Units.Kubelet, "kubelet.service")
	setString(&r.Units.Runtime, "containerd.service")

	if s.Verification.Canary == nil {
		s.Verification.Canary = ptr.To(true)
	}
	setDuration(&s.Verification.Timeout, 5*time.Minute)
	setInt(&s.Retry.MaxAttempts, 3)
	setDuration(&s.Retry.Cooldown, 30*time.Minute)
	if len(s.AllowedActions) == 0 {
		s.AllowedActions = []v1alpha1.RepairAction{
			v1alpha1.ActionSetCNIVersion, v1alpha1.ActionInstallReferencePlugins, v1alpha1.ActionRepairRuntimeCNIConfig,
			v1alpha1.ActionRestoreConfig, v1alpha1.ActionReclaimIPAM, v1alpha1.ActionCleanStaleNetwork,
			v1alpha1.ActionEscalate, v1alpha1.ActionDiagnose,
		}
	}
	setString(&s.Executor.PriorityClassName, "cnimedic-executor")
	setDuration(&s.Executor.Timeout, 10*time.Minute)
	return s
}

func setDuration(d **metav1.Duration, v time.Duration) {
	if *d == nil {
		*d = &metav1.Duration{Duration: v}
	}
}

func setInt(i *int32, v int32) {
	if *i == 0 {
		*i = v
	}
}

func setString(s *string, v string) {
	if *s == "" {
		*s = v
	}
}
