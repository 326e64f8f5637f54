package v1alpha1

import metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

// NodeRemediationSpec is a request: one incident on one node and what was seen of it. The detection controller
// creates it; a person may also create one by hand to ask for a repair (node, policy, signature: the admission
// policy lets only the manager write parameters and evidence). What will run on the node (the action, the plan,
// the executor image) is decided by the manager alone and recorded in the status, where approval binds its digest.
type NodeRemediationSpec struct {
	// NodeName is the node with the failure.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="nodeName is immutable: open a new NodeRemediation for another node"
	NodeName string `json:"nodeName"`

	// PolicyName is the RemediationPolicy that covers the node.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="policyName is immutable"
	PolicyName string `json:"policyName"`

	// Signature is a built-in signature id or the name of one of the policy's custom signatures.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="signature is immutable: open a new NodeRemediation for another failure"
	Signature string `json:"signature"`

	// Parameters extracted from the evidence: configVersion, supportedVersions, plugin, pluginType, path, network,
	// range, sandboxID, link...
	// +optional
	// +kubebuilder:validation:MaxProperties=32
	Parameters map[string]string `json:"parameters,omitempty"`

	// Evidence is what the detection saw.
	// +optional
	Evidence Evidence `json:"evidence,omitempty"`
}

// Evidence is what the detection saw on the node.
type Evidence struct {
	// Pods that failed to get their sandbox (at most 20 are kept).
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=20
	Pods []PodReference `json:"pods,omitempty"`
	// PodCount is the number of distinct pods seen failing.
	// +optional
	PodCount int32 `json:"podCount,omitempty"`
	// EventCount is the number of failure events, repeats included.
	// +optional
	EventCount int32 `json:"eventCount,omitempty"`
	// NodeCondition is the node's Ready condition message when it carried the failure.
	// +optional
	NodeCondition string `json:"nodeCondition,omitempty"`
	// Conditions are the node conditions the policy maps (spec.detection.nodeConditions) that carried the failure.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=16
	Conditions []ConditionEvidence `json:"conditions,omitempty"`
	// FirstSeen is when the evidence was first seen.
	// +optional
	FirstSeen *metav1.Time `json:"firstSeen,omitempty"`
	// LastSeen is when the evidence was last seen.
	// +optional
	LastSeen *metav1.Time `json:"lastSeen,omitempty"`
	// SampleMessages are a few of the failure messages (at most 5).
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=5
	// +kubebuilder:validation:items:MaxLength=2048
	SampleMessages []string `json:"sampleMessages,omitempty"`
}

// ConditionEvidence is one node condition as it carried the failure.
type ConditionEvidence struct {
	// Type is the condition's type.
	// +kubebuilder:validation:MaxLength=316
	Type string `json:"type"`
	// Status is the condition's status.
	// +kubebuilder:validation:MaxLength=16
	Status string `json:"status"`
	// Reason is the condition's reason.
	// +optional
	// +kubebuilder:validation:MaxLength=1024
	Reason string `json:"reason,omitempty"`
	// Message is the condition's message.
	// +optional
	// +kubebuilder:validation:MaxLength=1024
	Message string `json:"message,omitempty"`
	// Since is the condition's lastTransitionTime.
	// +optional
	Since *metav1.Time `json:"since,omitempty"`
}

// PodReference names a pod.
type PodReference struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
}

// Phase is where a NodeRemediation is in its workflow.
// +kubebuilder:validation:Enum=Detected;Diagnosing;AwaitingApproval;Approved;Draining;Repairing;Verifying;RollingBack;Succeeded;Failed;RolledBack;Rejected;Escalated;NotConfirmed
type Phase string

// The phases of the design: Detected → Diagnosing → AwaitingApproval → Approved → Draining → Repairing → Verifying
// → Succeeded, and the ends Failed, RolledBack, Rejected, Escalated and NotConfirmed (the node's own diagnosis did
// not confirm the evidence; nothing was touched). A failed verification goes through RollingBack, while the executor
// undoes the repair, to RolledBack (or Failed).
const (
	PhaseDetected         Phase = "Detected"
	PhaseDiagnosing       Phase = "Diagnosing"
	PhaseNotConfirmed     Phase = "NotConfirmed"
	PhaseAwaitingApproval Phase = "AwaitingApproval"
	PhaseApproved         Phase = "Approved"
	PhaseDraining         Phase = "Draining"
	PhaseRepairing        Phase = "Repairing"
	PhaseVerifying        Phase = "Verifying"
	PhaseRollingBack      Phase = "RollingBack"
	PhaseSucceeded        Phase = "Succeeded"
	PhaseFailed           Phase = "Failed"
	PhaseRolledBack       Phase = "RolledBack"
	PhaseRejected         Phase = "Rejected"
	PhaseEscalated        Phase = "Escalated"
)

// IsTerminal reports whether the phase ends the workflow.
func (p Phase) IsTerminal() bool {
	switch p {
	case PhaseSucceeded, PhaseFailed, PhaseRolledBack, PhaseRejected, PhaseEscalated, PhaseNotConfirmed:
		return true
	}
	return false
}

// HoldsNode reports whether a NodeRemediation in this phase counts against maxConcurrent: from the moment the
// node may be cordoned until it is uncordoned or handed back.
func (p Phase) HoldsNode() bool {
	switch p {
	case PhaseDraining, PhaseRepairing, PhaseVerifying, PhaseRollingBack:
		return true
	}
	return false
}

// Condition types of a NodeRemediation.
const (
	// RemediationApproved is True once approved (by annotation or policy), False when rejected or expired.
	RemediationApproved = "Approved"
	// RemediationDrained is True once the node is cordoned and drained.
	RemediationDrained = "Drained"
	// RemediationRepaired is True once the executor reported success.
	RemediationRepaired = "Repaired"
	// RemediationVerified is True once the node passed verification.
	RemediationVerified = "Verified"
)

// ApprovalDecision is how approval ended.
// +kubebuilder:validation:Enum=Approved;Rejected;Expired
type ApprovalDecision string

const (
	DecisionApproved ApprovalDecision = "Approved"
	DecisionRejected ApprovalDecision = "Rejected"
	DecisionExpired  ApprovalDecision = "Expired"
)

// ApprovalRecord records when and how approval arrived.
type ApprovalRecord struct {
	// Decision taken.
	Decision ApprovalDecision `json:"decision"`
	// Mode of the policy when it was taken.
	Mode ApprovalMode `json:"mode"`
	// Source says where it came from: the annotation, the policy, or the expiry.
	Source string `json:"source"`
	// Digest is the status.digest the decision was taken on: an approval holds only while it is unchanged.
	// +optional
	Digest string `json:"digest,omitempty"`
	// Reason given with a rejection.
	// +optional
	Reason string `json:"reason,omitempty"`
	// Time of the decision.
	Time metav1.Time `json:"time"`
}

// Diagnosis is the node's own account of the failure: the events are a hint, the node is the evidence.
type Diagnosis struct {
	// Time the diagnosis ended.
	Time metav1.Time `json:"time"`
	// Confirmed is the signature the node's findings show: spec.signature when they confirm the hypothesis from the
	// events, another one when they show a different repairable cause, empty when they show none.
	// +optional
	Confirmed string `json:"confirmed,omitempty"`
	// Summary says in words what the diagnosis found.
	// +optional
	Summary string `json:"summary,omitempty"`
	// Findings are the errors and warnings it reported (at most 20).
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=20
	Findings []Finding `json:"findings,omitempty"`
	// Layout is the node's layout as the diagnosis found it: the units, socket, config files and CNI directories
	// a repair on this node works with.
	// +optional
	Layout *NodeLayout `json:"layout,omitempty"`
}

// PlanPreview is what a plan would change on the node, as `remediator plan` resolved it there without writing
// anything: the exact diff of each file. It is bounded to fit the status: a diff cut to fit says so (truncated).
type PlanPreview struct {
	// Time the preview ended (or was given up).
	Time metav1.Time `json:"time"`
	// PlanDigest is the PlanDigest of the plan previewed.
	// +kubebuilder:validation:MaxLength=80
	PlanDigest string `json:"planDigest"`
	// Unavailable says why there is no preview: the preview failed or was lost. A remediation without a preview
	// can still be approved: the digest binds the plan, the preview only shows it.
	// +optional
	// +kubebuilder:validation:MaxLength=1024
	Unavailable string `json:"unavailable,omitempty"`
	// Message summarises the preview, such as how many steps would fail as the node is now.
	// +optional
	// +kubebuilder:validation:MaxLength=1024
	Message string `json:"message,omitempty"`
	// Failures are the steps that would fail as the node is now, in words (at most 10).
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=10
	// +kubebuilder:validation:items:MaxLength=512
	Failures []string `json:"failures,omitempty"`
	// Files are the files the plan would write or remove, with their diffs (at most 20).
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=20
	Files []PreviewFile `json:"files,omitempty"`
	// Truncated is set when a diff was cut or files were left out to fit: the node's own `remediator plan` shows
	// them whole.
	// +optional
	Truncated bool `json:"truncated,omitempty"`
}

// PreviewFile is one file a plan would change. Its diff is the node's file content: print it as text that may
// carry terminal escapes.
type PreviewFile struct {
	// Path on the host.
	// +kubebuilder:validation:MaxLength=4096
	Path string `json:"path"`
	// Why the plan changes it.
	// +optional
	// +kubebuilder:validation:MaxLength=512
	Why string `json:"why,omitempty"`
	// Diff is the unified diff of a text file, or what a binary would become (size and sha256).
	// +optional
	// +kubebuilder:validation:MaxLength=4096
	Diff string `json:"diff,omitempty"`
	// Truncated is set when the diff was cut to fit.
	// +optional
	Truncated bool `json:"truncated,omitempty"`
}

// PhaseTransition is one entry of a NodeRemediation's history.
type PhaseTransition struct {
	// Phase entered.
	Phase Phase `json:"phase"`
	// Time it was entered.
	Time metav1.Time `json:"time"`
	// Reason, CamelCase.
	Reason string `json:"reason"`
	// Message in words.
	// +optional
	Message string `json:"message,omitempty"`
}

// DrainStatus shows a drain's progress.
type DrainStatus struct {
	// StartTime is when the drain began.
	// +optional
	StartTime *metav1.Time `json:"startTime,omitempty"`
	// PodsRemaining is how many pods still have to leave.
	// +optional
	PodsRemaining int32 `json:"podsRemaining,omitempty"`
	// BlockedBy names what holds the drain, such as a PodDisruptionBudget.
	// +optional
	BlockedBy string `json:"blockedBy,omitempty"`
	// Message in words.
	// +optional
	Message string `json:"message,omitempty"`
}

// NodeRemediationStatus is the workflow's record.
type NodeRemediationStatus struct {
	// ObservedGeneration is the generation this status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// Phase is where the workflow is.
	// +optional
	Phase Phase `json:"phase,omitempty"`
	// Reason is the CamelCase reason of the last phase change, such as ResolvedWithoutAction.
	// +optional
	Reason string `json:"reason,omitempty"`
	// Message says in words what the last phase change means and, at an end, what a human should look at.
	// +optional
	Message string `json:"message,omitempty"`
	// Conditions: Approved, Drained, Repaired, Verified.
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
	// History of phase changes, oldest first (the newest 50 are kept).
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=50
	History []PhaseTransition `json:"history,omitempty"`
	// Action is what cnimedic does about the signature, decided once by the manager.
	// +optional
	Action RepairAction `json:"action,omitempty"`
	// Plan is the executor's typed plan, built by the manager before approval so that the approver sees what will
	// run.
	// +optional
	Plan *Plan `json:"plan,omitempty"`
	// ExecutorImage is the image the executor pod will run.
	// +optional
	ExecutorImage string `json:"executorImage,omitempty"`
	// PolicyGeneration is the generation of the policy the action and plan were decided under.
	// +optional
	PolicyGeneration int64 `json:"policyGeneration,omitempty"`
	// Digest binds what will run: node, policy and its generation, action, plan and executor image (RunDigest).
	// An approval holds only while it is unchanged.
	// +optional
	Digest string `json:"digest,omitempty"`
	// ByHand is set when the remediation was created without the detection's evidence: a person's request, which
	// no policy approves by itself. Recorded once, when the manager first takes the remediation.
	// +optional
	ByHand bool `json:"byHand,omitempty"`
	// Diagnosis is what the read-only diagnosis on the node found before anyone was asked to approve.
	// +optional
	Diagnosis *Diagnosis `json:"diagnosis,omitempty"`
	// Preview is what the plan would change on the node, resolved there by a read-only preview while the
	// remediation waited for a person. It describes the plan whose digest it carries: it is current only while that
	// is the digest of status.plan (CurrentPreview). An approval never waits for it.
	// +optional
	Preview *PlanPreview `json:"preview,omitempty"`
	// Approval records when and how approval arrived.
	// +optional
	Approval *ApprovalRecord `json:"approval,omitempty"`
	// Cordoned is true while cnimedic holds the node cordoned for this remediation.
	// +optional
	Cordoned bool `json:"cordoned,omitempty"`
	// Drain shows the drain's progress.
	// +optional
	Drain *DrainStatus `json:"drain,omitempty"`
	// ExecutorPod is the executor pod of the current attempt (in the manager's namespace).
	// +optional
	ExecutorPod string `json:"executorPod,omitempty"`
	// Attempt counts executor runs.
	// +optional
	Attempt int32 `json:"attempt,omitempty"`
	// Steps are the executor's per-step results of the last run.
	// +optional
	// +listType=atomic
	Steps []StepResult `json:"steps,omitempty"`
	// Result is the executor's last result.
	// +optional
	Result *ExecutorResult `json:"result,omitempty"`
	// StartTime is when the workflow first acted on the node.
	// +optional
	StartTime *metav1.Time `json:"startTime,omitempty"`
	// CompletionTime is when the workflow ended.
	// +optional
	CompletionTime *metav1.Time `json:"completionTime,omitempty"`
}

// NodeRemediation is one incident on one node, from detection to its end.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,shortName=nrem,categories=cnimedic
// +kubebuilder:printcolumn:name="Node",type=string,JSONPath=`.spec.nodeName`
// +kubebuilder:printcolumn:name="Signature",type=string,JSONPath=`.spec.signature`
// +kubebuilder:printcolumn:name="Action",type=string,JSONPath=`.status.action`,priority=1
// +kubebuilder:printcolumn:name="Phase",type=string,JSONPath=`.status.phase`
// +kubebuilder:printcolumn:name="Reason",type=string,JSONPath=`.status.reason`,priority=1
// +kubebuilder:printcolumn:name="Policy",type=string,JSONPath=`.spec.policyName`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type NodeRemediation struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// +required
	Spec NodeRemediationSpec `json:"spec"`
	// +optional
	Status NodeRemediationStatus `json:"status,omitempty"`
}

// NodeRemediationList is a list of NodeRemediation.
//
// +kubebuilder:object:root=true
type NodeRemediationList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []NodeRemediation `json:"items"`
}

func init() {
	SchemeBuilder.Register(&NodeRemediation{}, &NodeRemediationList{})
}
