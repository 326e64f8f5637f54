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

// Parameter keys a match can carry. They become the NodeRemediation's parameters, which the repair plans from, so
// they are part of cnimedic's contract: the detection writes them, the planner and the manager read them. List-valued parameters are comma-separated, in the order the message gives.
const (
	// ParamConfigVersion is the cniVersion of the network configuration ("1.0.0").
	ParamConfigVersion = "configVersion"
	// ParamSupportedVersions lists the CNI versions the failing plugin supports ("0.1.0,0.2.0,0.3.0,0.3.1,0.4.0").
	ParamSupportedVersions = "supportedVersions"
	// ParamResultVersion is the CNI version of a cached result the runtime could not convert.
	ParamResultVersion = "resultVersion"
	// ParamPlugin lists the plugin binaries the runtime could not find ("flannel,portmap").
	ParamPlugin = "plugin"
	// ParamPluginType is the type of the CNI plugin that failed, from `plugin type="calico"` or implied by the
	// message (a missing /run/flannel/subnet.env is flannel's).
	ParamPluginType = "pluginType"
	// ParamPath lists the plugin search path the runtime used ("/opt/cni/bin").
	ParamPath = "path"
	// ParamConfDir is the CNI configuration directory the runtime found empty ("/etc/cni/net.d").
	ParamConfDir = "confDir"
	// ParamConfigFile is the configuration file that did not parse.
	ParamConfigFile = "configFile"
	// ParamNetwork is the CNI network name (the conflist's name, also host-local's lease directory name).
	ParamNetwork = "network"
	// ParamBridge is the bridge a plugin could not configure ("cni0").
	ParamBridge = "bridge"
	// ParamLink is an interface that already exists where a plugin wants to create it.
	ParamLink = "link"
	// ParamAddress is an address the message names: the bridge's expected address, or the API server endpoint a
	// plugin could not reach.
	ParamAddress = "address"
	// ParamRange is the exhausted IPAM range ("10.244.0.2-10.244.0.254").
	ParamRange = "range"
	// ParamIPAM is the IPAM that ran out of addresses: host-local, or a vendor's (cilium, aws-cni, azure-vnet-ipam...).
	ParamIPAM = "ipam"
	// ParamSandboxID is the pod sandbox id the message names (possibly truncated by the source).
	ParamSandboxID = "sandboxID"
	// ParamNetns is a network namespace path the message names.
	ParamNetns = "netns"
	// ParamAgentDaemonSet names the CNI agent's DaemonSet (namespace/name) the detection found for a daemon failure;
	// ParamAgentState says how its pod on the node was (ready, restarts): what an escalation tells a person.
	ParamAgentDaemonSet = "agentDaemonSet"
	ParamAgentState     = "agentState"
)

// Status reasons other components read: the detection holds a node off after it, and the kubectl plugin says why a
// node is held.
const (
	// ReasonRetryLimitReached ends a remediation Escalated when the node's earlier repairs used up
	// spec.retry.maxAttempts.
	ReasonRetryLimitReached = "RetryLimitReached"
)
