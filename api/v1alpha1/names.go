package v1alpha1

// Annotations and labels that are part of cnimedic's contract with its users.
const (
	// AnnotationApprove on a NodeRemediation approves a pending repair when set to "true".
	AnnotationApprove = "cnimedic.io/approve"
	// AnnotationReject on a NodeRemediation rejects a pending repair; the value is the reason.
	AnnotationReject = "cnimedic.io/reject"
	// AnnotationEvictUnmanagedPods on a NodeRemediation set to "true" lets its drain evict pods no controller
	// recreates (kubectl drain --force) for this one remediation; only approvers may set it.
	AnnotationEvictUnmanagedPods = "cnimedic.io/evict-unmanaged-pods"
	// AnnotationCordonedBy on a Node records that cnimedic cordoned it, naming the NodeRemediation. cnimedic only
	// ever uncordons a node that carries this annotation, so a node cordoned by someone else stays cordoned.
	AnnotationCordonedBy = "cnimedic.io/cordoned-by"
	// LabelNode on a NodeRemediation names its node, so that the remediations of one node can be listed cheaply.
	LabelNode = "cnimedic.io/node"
	// LabelPolicy on a NodeRemediation names the policy that covers it.
	LabelPolicy = "cnimedic.io/policy"
	// LabelRemediation on an executor or canary pod names the NodeRemediation it works for.
	LabelRemediation = "cnimedic.io/remediation"
	// LabelComponent on pods cnimedic creates says which part they play (executor, canary).
	LabelComponent = "app.kubernetes.io/component"
)

// SignatureID names a failure signature of the built-in catalog. The ids are part of cnimedic's contract.
// +kubebuilder:validation:Enum=cni-version-incompatible;cni-version-missing;cni-not-initialized;cni-plugin-binary-missing;ipam-exhausted;cni-daemon-unavailable;cni-apiserver-access;cni-config-invalid;netns-or-stale-state;cni-unclassified
type SignatureID string

// The built-in failure signatures (see the design's table and the seed runbooks).
const (
	SignatureCNIVersionIncompatible SignatureID = "cni-version-incompatible"
	SignatureCNIVersionMissing      SignatureID = "cni-version-missing"
	SignatureCNINotInitialized      SignatureID = "cni-not-initialized"
	SignaturePluginBinaryMissing    SignatureID = "cni-plugin-binary-missing"
	SignatureIPAMExhausted          SignatureID = "ipam-exhausted"
	SignatureDaemonUnavailable      SignatureID = "cni-daemon-unavailable"
	SignatureAPIServerAccess        SignatureID = "cni-apiserver-access"
	SignatureConfigInvalid          SignatureID = "cni-config-invalid"
	SignatureStaleState             SignatureID = "netns-or-stale-state"
	// SignatureCNIUnclassified is a family, not a cause: a sandbox setup or teardown failure that names the
	// network or CNI but that no other signature names. The node's diagnosis decides its cause (issue 12).
	SignatureCNIUnclassified SignatureID = "cni-unclassified"
)

// BuiltinSignatures lists every built-in signature id in the design's order.
var BuiltinSignatures = []SignatureID{
	SignatureCNIVersionIncompatible,
	SignatureCNIVersionMissing,
	SignatureCNINotInitialized,
	SignaturePluginBinaryMissing,
	SignatureIPAMExhausted,
	SignatureDaemonUnavailable,
	SignatureAPIServerAccess,
	SignatureConfigInvalid,
	SignatureStaleState,
	SignatureCNIUnclassified,
}

// RepairAction is what cnimedic does about a signature. Node actions run through the executor pod; the others are
// carried out by the manager (RestartCNIAgentPod) or hand the incident to a human (Escalate, Diagnose).
// +kubebuilder:validation:Enum=SetCNIVersion;InstallReferencePlugins;RepairRuntimeCNIConfig;RestoreConfig;ReclaimIPAM;CleanStaleNetwork;RestartCNIAgentPod;Escalate;Diagnose
type RepairAction string

const (
	// ActionSetCNIVersion sets or adds the conflist cniVersion (cni-version-incompatible, cni-version-missing).
	ActionSetCNIVersion RepairAction = "SetCNIVersion"
	// ActionInstallReferencePlugins installs the reference plugins bundled in the executor image.
	ActionInstallReferencePlugins RepairAction = "InstallReferencePlugins"
	// ActionRepairRuntimeCNIConfig validates conflists, repairs containerd's CRI CNI settings and file modes and
	// restarts containerd (cni-not-initialized).
	ActionRepairRuntimeCNIConfig RepairAction = "RepairRuntimeCNIConfig"
	// ActionRestoreConfig restores the last good backup of a conflist that does not parse (cni-config-invalid).
	ActionRestoreConfig RepairAction = "RestoreConfig"
	// ActionReclaimIPAM frees host-local allocations of sandboxes that no longer exist (ipam-exhausted).
	ActionReclaimIPAM RepairAction = "ReclaimIPAM"
	// ActionCleanStaleNetwork removes a stale bridge address, link or network namespace (netns-or-stale-state).
	ActionCleanStaleNetwork RepairAction = "CleanStaleNetwork"
	// ActionRestartCNIAgentPod deletes the node's CNI agent pod so that its DaemonSet recreates it.
	ActionRestartCNIAgentPod RepairAction = "RestartCNIAgentPod"
	// ActionEscalate changes nothing and hands the incident to a human with what cnimedic knows.
	ActionEscalate RepairAction = "Escalate"
	// ActionDiagnose runs the executor's read-only diagnosis and records it: custom signatures, and the
	// cni-unclassified family, whose cause the diagnosis names.
	ActionDiagnose RepairAction = "Diagnose"
)

// NodeActions are the actions that change a node through the executor pod.
var NodeActions = []RepairAction{
	ActionSetCNIVersion,
	ActionInstallReferencePlugins,
	ActionRepairRuntimeCNIConfig,
	ActionRestoreConfig,
	ActionReclaimIPAM,
	ActionCleanStaleNetwork,
}

// IsNodeAction reports whether the action changes the node through the executor (and so needs a drain).
func (a RepairAction) IsNodeAction() bool {
	for _, n := range NodeActions {
		if a == n {
			return true
		}
	}
	return false
}
