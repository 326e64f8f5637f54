package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// RemediationPolicySpec says which nodes cnimedic watches, which failures it acts on and what it may do about them.
//
// Every duration field takes a Go duration string such as 90s, 5m or 1h30m.
//
// +kubebuilder:validation:XValidation:rule="!has(self.nodeSelector) || !has(self.nodeNames) || size(self.nodeNames) == 0",message="set either nodeSelector or nodeNames, not both"
type RemediationPolicySpec struct {
	// NodeSelector selects the nodes this policy covers. Unset, the policy covers every node except control-plane
	// nodes (labelled node-role.kubernetes.io/control-plane); those are covered only when listed in nodeNames.
	// When several policies cover a node, the first by name acts on it (the Overlapping condition says so).
	// +optional
	NodeSelector *metav1.LabelSelector `json:"nodeSelector,omitempty"`

	// NodeNames lists nodes by name instead of a selector; the only way to cover a control-plane node.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=1000
	// +kubebuilder:validation:items:MaxLength=253
	NodeNames []string `json:"nodeNames,omitempty"`

	// Signatures lists the built-in failure signatures this policy acts on. Empty means all of them.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=10
	Signatures []SignatureID `json:"signatures,omitempty"`

	// CustomSignatures map site-specific failure messages to a repair action (or to Diagnose only).
	// +optional
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MaxItems=32
	CustomSignatures []CustomSignature `json:"customSignatures,omitempty"`

	// Detection says how much evidence makes an incident.
	// +optional
	// +kubebuilder:default={}
	Detection DetectionSpec `json:"detection,omitempty"`

	// Approval says whether a human approves each repair.
	// +optional
	// +kubebuilder:default={}
	Approval ApprovalSpec `json:"approval,omitempty"`

	// MaxConcurrent caps the nodes this policy lets cnimedic cordon and repair at once: a count, or a percentage of
	// the covered nodes (rounded down, at least 1). The cap of the strictest policy holds across all policies.
	// +optional
	// +kubebuilder:default=1
	// +kubebuilder:validation:XIntOrString
	// +kubebuilder:validation:XValidation:rule="type(self) == int ? self >= 1 : self.matches('^([1-9][0-9]?|100)%$')",message="maxConcurrent must be a whole number of at least 1 or a percentage from 1% to 100%, such as 1 or 10%"
	MaxConcurrent *intstr.IntOrString `json:"maxConcurrent,omitempty"`

	// Storm stops automatic repair when a failure is cluster-wide.
	// +optional
	// +kubebuilder:default={}
	Storm StormSpec `json:"storm,omitempty"`

	// Drain says how a node is drained before its repair.
	// +optional
	// +kubebuilder:default={}
	Drain DrainSpec `json:"drain,omitempty"`

	// Repair tunes the node repairs.
	// +optional
	// +kubebuilder:default={}
	Repair RepairSpec `json:"repair,omitempty"`

	// Verification says how a repaired node is checked before it is uncordoned.
	// +optional
	// +kubebuilder:default={}
	Verification VerificationSpec `json:"verification,omitempty"`

	// Retry caps repeated repairs of one node.
	// +optional
	// +kubebuilder:default={}
	Retry RetrySpec `json:"retry,omitempty"`

	// AllowedActions lists what cnimedic may do. A signature whose action is not listed is escalated instead.
	// RestartCNIAgentPod is off by default: it deletes a pod that the cluster's network depends on.
	// +optional
	// +listType=set
	// +kubebuilder:default={SetCNIVersion,InstallReferencePlugins,RepairRuntimeCNIConfig,RestoreConfig,ReclaimIPAM,CleanStaleNetwork,Escalate,Diagnose}
	// +kubebuilder:validation:MaxItems=9
	AllowedActions []RepairAction `json:"allowedActions,omitempty"`

	// Executor configures the node-side executor pod.
	// +optional
	// +kubebuilder:default={}
	Executor ExecutorSpec `json:"executor,omitempty"`

	// DryRun runs the whole workflow up to the executor's plan, emitting the events it would cause, and changes
	// nothing on any node or its schedulability.
	// +optional
	DryRun bool `json:"dryRun,omitempty"`

	// Paused stops new repairs from starting; repairs already past approval finish.
	// +optional
	Paused bool `json:"paused,omitempty"`
}

// CustomSignature maps a site-specific failure message to an action.
type CustomSignature struct {
	// Name identifies the signature; NodeRemediations it opens carry it as their signature.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	// +kubebuilder:validation:XValidation:rule="!(self in ['cni-version-incompatible','cni-version-missing','cni-not-initialized','cni-plugin-binary-missing','ipam-exhausted','cni-daemon-unavailable','cni-apiserver-access','cni-config-invalid','netns-or-stale-state','cni-unclassified'])",message="name is a built-in signature id; choose another name for a custom signature"
	Name string `json:"name"`

	// Reasons are the event reasons the pattern is matched against.
	// +optional
	// +listType=set
	// +kubebuilder:default={FailedCreatePodSandBox,FailedKillPod}
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=16
	// +kubebuilder:validation:items:MaxLength=128
	Reasons []string `json:"reasons,omitempty"`

	// Pattern is a Go (RE2) regular expression matched against the event message. Named groups, such as
	// (?P<network>[a-z0-9]+), become parameters of the NodeRemediation. The API server cannot compile Go regular
	// expressions, so a pattern that does not compile is reported on the policy's SignaturesValid condition.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=1024
	Pattern string `json:"pattern"`

	// Action is what cnimedic does when the pattern matches.
	// +required
	Action RepairAction `json:"action"`
}

// DetectionSpec says how much evidence makes an incident.
// +kubebuilder:validation:XValidation:rule="!has(self.window) || !has(self.evidenceExpiry) || duration(self.evidenceExpiry) >= duration(self.window)",message="evidenceExpiry must be at least as long as window, or evidence expires before it can count"
type DetectionSpec struct {
	// MinStuckDuration is how long a pod must have failed to get its sandbox before it counts.
	// +optional
	// +kubebuilder:default="1m"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:XValidation:rule="self.matches('^(0|([0-9]+([.][0-9]+)?(ns|us|ms|s|m|h))+)$')",message="must be a non-negative duration such as 90s, 5m or 1h30m"
	MinStuckDuration *metav1.Duration `json:"minStuckDuration,omitempty"`

	// MinOccurrences is how many failure events (counting repeats) a node needs inside the window.
	// +optional
	// +kubebuilder:default=3
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=10000
	MinOccurrences int32 `json:"minOccurrences,omitempty"`

	// MinPods is how many distinct pods must show the failure. Node conditions (cni plugin not initialized) count
	// as evidence on their own.
	// +optional
	// +kubebuilder:default=1
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000
	MinPods int32 `json:"minPods,omitempty"`

	// Window is how far back evidence is counted.
	// +optional
	// +kubebuilder:default="10m"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:XValidation:rule="self.matches('^([0-9]+([.][0-9]+)?(ns|us|ms|s|m|h))+$') && duration(self) > duration('0s')",message="window must be a positive duration such as 10m"
	Window *metav1.Duration `json:"window,omitempty"`

	// BootGracePeriod ignores evidence from a node whose kubelet started less than this long ago: CNI agents
	// routinely need a moment after boot.
	// +optional
	// +kubebuilder:default="3m"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:XValidation:rule="self.matches('^(0|([0-9]+([.][0-9]+)?(ns|us|ms|s|m|h))+)$')",message="must be a non-negative duration such as 90s, 5m or 1h30m"
	BootGracePeriod *metav1.Duration `json:"bootGracePeriod,omitempty"`

	// EvidenceExpiry is how long evidence counts after it was last seen. An open incident whose evidence has all
	// expired before any action ends as resolved without action.
	// +optional
	// +kubebuilder:default="15m"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:XValidation:rule="self.matches('^([0-9]+([.][0-9]+)?(ns|us|ms|s|m|h))+$') && duration(self) > duration('0s')",message="evidenceExpiry must be a positive duration such as 15m"
	EvidenceExpiry *metav1.Duration `json:"evidenceExpiry,omitempty"`

	// NodeConditions map node conditions other than Ready, as node-problem-detector, a cloud agent or another
	// controller sets them (NetworkUnavailable, an NPD custom condition such as CNIProblem), to a signature. A node
	// whose condition matches a rule for minStuckDuration (from the condition's lastTransitionTime, after the boot
	// grace) has evidence of the rule's signature, counted like the Ready condition: the NodeRemediation opens in
	// Detected and goes through the node's diagnosis and approval like any other. Under Automatic approval only
	// approvers may change this list (it widens what cnimedic repairs without a human).
	// +optional
	// +listType=map
	// +listMapKey=type
	// +kubebuilder:validation:MaxItems=16
	NodeConditions []NodeConditionRule `json:"nodeConditions,omitempty"`
}

// NodeConditionRule maps one node condition to a signature.
type NodeConditionRule struct {
	// Type is the node condition's type (NetworkUnavailable, CNIProblem). The Ready condition is not mapped: the
	// built-in signatures read its message.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=316
	// +kubebuilder:validation:Pattern=`^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$`
	// +kubebuilder:validation:XValidation:rule="self != 'Ready'",message="the Ready condition is read by the built-in signatures already (its message names the failure); map another condition type"
	Type string `json:"type"`

	// Status is the condition status that is evidence: True (the default, NPD's "problem present"), False or
	// Unknown (NetworkUnavailable is False on a healthy node).
	// +optional
	// +kubebuilder:default=True
	// +kubebuilder:validation:Enum=True;False;Unknown
	Status string `json:"status,omitempty"`

	// Reason, when set, must equal the condition's reason exactly (NPD sets one per problem).
	// +optional
	// +kubebuilder:validation:MaxLength=1024
	Reason string `json:"reason,omitempty"`

	// Signature is what the condition is evidence of: a built-in signature id the policy enables or one of its
	// customSignatures. Empty means the cni-unclassified family: the node's diagnosis names the cause. A signature
	// the policy cannot name is reported in the SignaturesValid condition and the rule is ignored.
	// +optional
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:XValidation:rule="self == '' || self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')",message="signature must be a built-in signature id or a custom signature's name (lowercase letters, digits and dashes), or empty for the cni-unclassified family"
	Signature string `json:"signature,omitempty"`
}

// ApprovalMode says whether repairs wait for a human.
// +kubebuilder:validation:Enum=Manual;Automatic
type ApprovalMode string

const (
	// ApprovalManual waits for the cnimedic.io/approve annotation on each NodeRemediation.
	ApprovalManual ApprovalMode = "Manual"
	// ApprovalAutomatic approves every repair the policy allows.
	ApprovalAutomatic ApprovalMode = "Automatic"
)

// ApprovalSpec says whether a human approves each repair.
type ApprovalSpec struct {
	// Mode is Manual (the default: annotate each NodeRemediation with cnimedic.io/approve=true) or Automatic.
	// +optional
	// +kubebuilder:default=Manual
	Mode ApprovalMode `json:"mode,omitempty"`

	// Expiry rejects a repair left pending this long.
	// +optional
	// +kubebuilder:default="24h"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:XValidation:rule="self.matches('^([0-9]+([.][0-9]+)?(ns|us|ms|s|m|h))+$') && duration(self) > duration('0s')",message="expiry must be a positive duration such as 24h"
	Expiry *metav1.Duration `json:"expiry,omitempty"`
}

// StormSpec stops automatic repair when one failure hits a large part of the cluster at once: a cluster-wide
// cause (a bad CNI rollout, an expired credential) is not fixed node by node.
type StormSpec struct {
	// ThresholdPercent: a storm is more than this percentage of the covered nodes showing one signature inside the
	// detection window.
	// +optional
	// +kubebuilder:default=25
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=100
	ThresholdPercent int32 `json:"thresholdPercent,omitempty"`

	// MinNodes is the smallest number of nodes that can make a storm, so that one broken node in a small cluster
	// is repaired rather than declared a storm.
	// +optional
	// +kubebuilder:default=3
	// +kubebuilder:validation:Minimum=1
	MinNodes int32 `json:"minNodes,omitempty"`

	// Cooldown is how long automatic repair stays off after the storm's evidence last grew.
	// +optional
	// +kubebuilder:default="30m"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:XValidation:rule="self.matches('^(0|([0-9]+([.][0-9]+)?(ns|us|ms|s|m|h))+)$')",message="must be a non-negative duration such as 90s, 5m or 1h30m"
	Cooldown *metav1.Duration `json:"cooldown,omitempty"`
}

// DrainTimeoutAction says what happens when a drain does not finish in time.
// +kubebuilder:validation:Enum=Abort;Proceed
type DrainTimeoutAction string

const (
	// DrainTimeoutAbort uncordons the node (if cnimedic cordoned it) and ends the repair as Failed.
	DrainTimeoutAbort DrainTimeoutAction = "Abort"
	// DrainTimeoutProceed repairs the node with the pods that could not be evicted still on it. Their
	// PodDisruptionBudgets are never overridden: the pods keep running while kubelet and the runtime restart.
	DrainTimeoutProceed DrainTimeoutAction = "Proceed"
)

// DrainSpec says how a node is drained before its repair. Drain always uses the eviction API, so
// PodDisruptionBudgets are respected, and always leaves DaemonSet pods in place.
type DrainSpec struct {
	// Timeout bounds the drain.
	// +optional
	// +kubebuilder:default="10m"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:XValidation:rule="self.matches('^([0-9]+([.][0-9]+)?(ns|us|ms|s|m|h))+$') && duration(self) > duration('0s')",message="timeout must be a positive duration such as 10m"
	Timeout *metav1.Duration `json:"timeout,omitempty"`

	// GracePeriodSeconds overrides the evicted pods' termination grace period; unset uses each pod's own.
	// +optional
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=86400
	GracePeriodSeconds *int32 `json:"gracePeriodSeconds,omitempty"`

	// DeleteEmptyDirData allows evicting pods that use emptyDir volumes (their data is lost).
	// +optional
	DeleteEmptyDirData bool `json:"deleteEmptyDirData,omitempty"`

	// EvictUnmanagedPods allows evicting pods that no controller recreates (what kubectl drain --force does): they
	// are gone for good. Off, such a pod blocks the drain, which says so at once; an approver may then allow it for
	// one remediation with the annotation cnimedic.io/evict-unmanaged-pods=true.
	// +optional
	EvictUnmanagedPods bool `json:"evictUnmanagedPods,omitempty"`

	// PodSelector is a label selector (kubectl syntax, such as app!=critical) limiting which pods are evicted.
	// +optional
	// +kubebuilder:validation:MaxLength=1024
	PodSelector string `json:"podSelector,omitempty"`

	// OnTimeout is Abort (the default) or Proceed: the opt-in escape that repairs the node anyway, leaving the pods
	// that could not be evicted where they are.
	// +optional
	// +kubebuilder:default=Abort
	OnTimeout DrainTimeoutAction `json:"onTimeout,omitempty"`

	// RepairCordonedNodes lets cnimedic drain and repair a node someone else cordoned (a maintenance, a reboot
	// tool, a person). Off, such a node is left alone until it is uncordoned, with an event saying why. Either way
	// cnimedic never uncordons a node it did not cordon.
	// +optional
	RepairCordonedNodes bool `json:"repairCordonedNodes,omitempty"`
}

// VersionRepairStrategy says how a conflist whose cniVersion the plugins do not support is repaired.
// +kubebuilder:validation:Enum=RewriteConfig;UpgradePlugins
type VersionRepairStrategy string

const (
	// VersionRepairRewriteConfig sets the conflist cniVersion to one every plugin of the chain supports.
	VersionRepairRewriteConfig VersionRepairStrategy = "RewriteConfig"
	// VersionRepairUpgradePlugins installs the reference plugins bundled in the executor image.
	VersionRepairUpgradePlugins VersionRepairStrategy = "UpgradePlugins"
)

// RepairSpec tunes the node repairs.
type RepairSpec struct {
	// CNIVersion is the cniVersion written into conflists. Unset, cnimedic asks every plugin of the chain for the
	// versions it supports (the CNI VERSION command) and writes the highest they all support.
	// +optional
	// +kubebuilder:validation:MaxLength=16
	// +kubebuilder:validation:Pattern=`^[0-9]+\.[0-9]+\.[0-9]+$`
	CNIVersion string `json:"cniVersion,omitempty"`

	// VersionStrategy says how cni-version-incompatible is repaired: RewriteConfig (the default) or
	// UpgradePlugins, which needs installReferencePlugins.
	// +optional
	// +kubebuilder:default=RewriteConfig
	VersionStrategy VersionRepairStrategy `json:"versionStrategy,omitempty"`

	// InstallReferencePlugins allows installing the containernetworking reference plugins bundled in the executor
	// image (their sha256 sums are verified first; the replaced binaries are kept as backups). Vendor plugins
	// (flannel, calico, cilium...) are never installed or replaced.
	// +optional
	// +kubebuilder:default=true
	InstallReferencePlugins *bool `json:"installReferencePlugins,omitempty"`

	// Containerd is what containerd's CRI CNI settings should be; the repair of cni-not-initialized writes them.
	// +optional
	// +kubebuilder:default={}
	Containerd ContainerdCNISpec `json:"containerd,omitempty"`

	// Units names the systemd units the executor stops and starts.
	// +optional
	// +kubebuilder:default={}
	Units UnitsSpec `json:"units,omitempty"`
}

// ContainerdCNISpec is containerd's CRI CNI configuration ([plugins."io.containerd.grpc.v1.cri".cni]).
type ContainerdCNISpec struct {
	// ConfigPath is containerd's configuration file on the node.
	// +optional
	// +kubebuilder:default="/etc/containerd/config.toml"
	// +kubebuilder:validation:MaxLength=4096
	// +kubebuilder:validation:Pattern=`^/`
	ConfigPath string `json:"configPath,omitempty"`

	// BinDir is where CNI plugin binaries live.
	// +optional
	// +kubebuilder:default="/opt/cni/bin"
	// +kubebuilder:validation:MaxLength=4096
	// +kubebuilder:validation:Pattern=`^/`
	BinDir string `json:"binDir,omitempty"`

	// ConfDir is where conflists live.
	// +optional
	// +kubebuilder:default="/etc/cni/net.d"
	// +kubebuilder:validation:MaxLength=4096
	// +kubebuilder:validation:Pattern=`^/`
	ConfDir string `json:"confDir,omitempty"`

	// ConfTemplate, when set, is written as containerd's conf_template; unset leaves the node's value alone.
	// +optional
	// +kubebuilder:validation:MaxLength=4096
	ConfTemplate string `json:"confTemplate,omitempty"`

	// MaxConfNum, when set, is written as containerd's max_conf_num; unset leaves the node's value alone.
	// +optional
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=100
	MaxConfNum *int32 `json:"maxConfNum,omitempty"`
}

// UnitsSpec names the systemd units of the node agents.
type UnitsSpec struct {
	// Kubelet is the kubelet's unit.
	// +optional
	// +kubebuilder:default="kubelet.service"
	// +kubebuilder:validation:MaxLength=256
	// +kubebuilder:validation:Pattern=`^[A-Za-z0-9:_.@-]+\.service$`
	Kubelet string `json:"kubelet,omitempty"`

	// Runtime is the container runtime's unit.
	// +optional
	// +kubebuilder:default="containerd.service"
	// +kubebuilder:validation:MaxLength=256
	// +kubebuilder:validation:Pattern=`^[A-Za-z0-9:_.@-]+\.service$`
	Runtime string `json:"runtime,omitempty"`
}

// VerificationSpec says how a repaired node is checked before it is uncordoned.
type VerificationSpec struct {
	// Canary starts a pod (not hostNetwork) on the repaired node and waits for it to run, proving that sandboxes
	// get their network again. It is deleted afterwards.
	// +optional
	// +kubebuilder:default=true
	Canary *bool `json:"canary,omitempty"`

	// CanaryImage is the canary pod's image; unset uses the manager's --canary-image.
	// +optional
	// +kubebuilder:validation:MaxLength=1024
	CanaryImage string `json:"canaryImage,omitempty"`

	// Timeout bounds the verification.
	// +optional
	// +kubebuilder:default="5m"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:XValidation:rule="self.matches('^([0-9]+([.][0-9]+)?(ns|us|ms|s|m|h))+$') && duration(self) > duration('0s')",message="timeout must be a positive duration such as 5m"
	Timeout *metav1.Duration `json:"timeout,omitempty"`
}

// RetrySpec caps repeated repairs of one node.
type RetrySpec struct {
	// MaxAttempts is how many repairs of one node may fail before cnimedic escalates and stops acting on it.
	// +optional
	// +kubebuilder:default=3
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=20
	MaxAttempts int32 `json:"maxAttempts,omitempty"`

	// Cooldown is the least time between two repairs of one node.
	// +optional
	// +kubebuilder:default="30m"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:XValidation:rule="self.matches('^(0|([0-9]+([.][0-9]+)?(ns|us|ms|s|m|h))+)$')",message="must be a non-negative duration such as 90s, 5m or 1h30m"
	Cooldown *metav1.Duration `json:"cooldown,omitempty"`
}

// ExecutorSpec configures the node-side executor pod.
type ExecutorSpec struct {
	// Image is the executor's image; unset uses the manager's --executor-image.
	// +optional
	// +kubebuilder:validation:MaxLength=1024
	Image string `json:"image,omitempty"`

	// PriorityClassName lets the executor run on a full node.
	// +optional
	// +kubebuilder:default="cnimedic-executor"
	// +kubebuilder:validation:MaxLength=253
	PriorityClassName string `json:"priorityClassName,omitempty"`

	// Timeout bounds one executor run, from pod creation to its result.
	// +optional
	// +kubebuilder:default="10m"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:XValidation:rule="self.matches('^([0-9]+([.][0-9]+)?(ns|us|ms|s|m|h))+$') && duration(self) > duration('0s')",message="timeout must be a positive duration such as 10m"
	Timeout *metav1.Duration `json:"timeout,omitempty"`
}

// Condition types of a RemediationPolicy.
const (
	// PolicyReady is True when the policy is valid and active.
	PolicyReady = "Ready"
	// PolicySignaturesValid is False when a custom signature's pattern does not compile.
	PolicySignaturesValid = "SignaturesValid"
	// PolicyStormActive is True while a storm holds automatic repair.
	PolicyStormActive = "StormActive"
	// PolicyPaused is True while spec.paused is set.
	PolicyPaused = "Paused"
	// PolicyOverlapping is True when a policy that comes first by name covers some of this policy's nodes: on a
	// node several policies cover, the first by name acts.
	PolicyOverlapping = "Overlapping"
)

// RemediationPolicyStatus is what cnimedic observed of a policy.
type RemediationPolicyStatus struct {
	// ObservedGeneration is the generation this status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// Conditions: Ready, SignaturesValid, StormActive, Paused, Overlapping.
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// CoveredNodes is how many nodes the policy covers.
	// +optional
	CoveredNodes int32 `json:"coveredNodes,omitempty"`

	// ActiveRepairs is how many of its NodeRemediations are draining, repairing or verifying.
	// +optional
	ActiveRepairs int32 `json:"activeRepairs,omitempty"`

	// PendingApprovals is how many of its NodeRemediations await approval.
	// +optional
	PendingApprovals int32 `json:"pendingApprovals,omitempty"`

	// Storm describes the storm holding automatic repair, if any.
	// +optional
	Storm *StormStatus `json:"storm,omitempty"`
}

// StormStatus describes a storm.
type StormStatus struct {
	// Signature is the signature seen on too many nodes.
	Signature string `json:"signature"`
	// Nodes is how many covered nodes showed it inside the window.
	Nodes int32 `json:"nodes"`
	// Since is when the storm began.
	Since metav1.Time `json:"since"`
	// LastSeen is when the storm's evidence last grew; the cooldown runs from here.
	LastSeen metav1.Time `json:"lastSeen"`
}

// RemediationPolicy says which nodes cnimedic watches, which failures it acts on and what it may do about them.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,shortName=rpol,categories=cnimedic
// +kubebuilder:printcolumn:name="Approval",type=string,JSONPath=`.spec.approval.mode`
// +kubebuilder:printcolumn:name="MaxConcurrent",type=string,JSONPath=`.spec.maxConcurrent`
// +kubebuilder:printcolumn:name="Active",type=integer,JSONPath=`.status.activeRepairs`
// +kubebuilder:printcolumn:name="Covered",type=integer,JSONPath=`.status.coveredNodes`,priority=1
// +kubebuilder:printcolumn:name="Paused",type=boolean,JSONPath=`.spec.paused`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type RemediationPolicy struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// +optional
	// +kubebuilder:default={}
	Spec RemediationPolicySpec `json:"spec,omitempty"`
	// +optional
	Status RemediationPolicyStatus `json:"status,omitempty"`
}

// RemediationPolicyList is a list of RemediationPolicy.
//
// +kubebuilder:object:root=true
type RemediationPolicyList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []RemediationPolicy `json:"items"`
}

func init() {
	SchemeBuilder.Register(&RemediationPolicy{}, &RemediationPolicyList{})
}
