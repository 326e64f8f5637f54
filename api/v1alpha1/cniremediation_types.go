package v1alpha1

import metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

// CNIRemediation and CNIRemediationTemplate make cnimedic an external remediator for medik8s'
// node-healthcheck-operator (NHC) and Cluster API's MachineHealthCheck (MHC). Both create a CNIRemediation from a
// CNIRemediationTemplate in the template's namespace: the kind is the template's minus "Template" and the spec is a
// copy of the template's spec.template.spec. NHC names it after the node (or generates the name) and always
// annotates it with remediation.medik8s.io/node-name; MHC names it after the Machine, which owns it and whose
// status.nodeRef names the node. A CNIRemediation is a request, like a person's NodeRemediation: the manager opens
// a NodeRemediation for the node under the policy that covers it, which goes through diagnosis, an approver's
// approval and every safety rule, and reports back in the conditions NHC reads (Processing, Succeeded).

// The annotations and conditions of the external remediation contract.
const (
	// AnnotationNHCNodeName is the annotation NHC puts on every remediation it creates, naming the node.
	AnnotationNHCNodeName = "remediation.medik8s.io/node-name"
	// AnnotationNHCTimedOut is set by NHC on a remediation it gave up on (its timeout passed).
	AnnotationNHCTimedOut = "remediation.medik8s.io/nhc-timed-out"
	// AnnotationExternalRequest on a NodeRemediation names the CNIRemediation (namespace/name) that asked for it.
	AnnotationExternalRequest = "cnimedic.io/external-request"
	// LabelNHCAggregate is the label NHC's role aggregation selects: a ClusterRole carrying it gives NHC the right to
	// read the templates and manage the remediations of a remediator.
	LabelNHCAggregate = "rbac.ext-remediation/aggregate-to-ext-remediation"

	// CNIRemediationProcessing is True while the NodeRemediation runs, False once it ended.
	CNIRemediationProcessing = "Processing"
	// CNIRemediationSucceeded is True when the NodeRemediation succeeded, False when it ended otherwise; absent
	// while it runs.
	CNIRemediationSucceeded = "Succeeded"
	// CNIRemediationPermanentNodeDeletionExpected is always False: cnimedic never deletes a node.
	CNIRemediationPermanentNodeDeletionExpected = "PermanentNodeDeletionExpected"
)

// CNIRemediationSpec is what a health checker asks for. It is copied from the template's spec.template.spec.
type CNIRemediationSpec struct {
	// Signature is the failure the request is about, a built-in signature id. Empty means cni-unclassified: the
	// node's diagnosis decides the cause.
	// +optional
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	Signature string `json:"signature,omitempty"`
}

// CNIRemediationStatus reports what became of the request.
type CNIRemediationStatus struct {
	// NodeName is the node the request is for.
	// +optional
	NodeName string `json:"nodeName,omitempty"`
	// PolicyName is the RemediationPolicy that covers the node.
	// +optional
	PolicyName string `json:"policyName,omitempty"`
	// RemediationName is the NodeRemediation opened for the request.
	// +optional
	RemediationName string `json:"remediationName,omitempty"`
	// Phase is the NodeRemediation's phase.
	// +optional
	Phase Phase `json:"phase,omitempty"`
	// Conditions: Processing, Succeeded, PermanentNodeDeletionExpected (what NHC reads back).
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
	// ObservedGeneration is the generation the status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
}

// CNIRemediation is a health checker's request to repair a node's network (NHC or Cluster API external
// remediation). It becomes a NodeRemediation that an approver approves.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Namespaced,shortName=cnirem,categories=cnimedic
// +kubebuilder:printcolumn:name="Node",type=string,JSONPath=`.status.nodeName`
// +kubebuilder:printcolumn:name="Remediation",type=string,JSONPath=`.status.remediationName`
// +kubebuilder:printcolumn:name="Phase",type=string,JSONPath=`.status.phase`
// +kubebuilder:printcolumn:name="Succeeded",type=string,JSONPath=`.status.conditions[?(@.type=="Succeeded")].status`
// +kubebuilder:printcolumn:name="Policy",type=string,JSONPath=`.status.policyName`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type CNIRemediation struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   CNIRemediationSpec   `json:"spec,omitempty"`
	Status CNIRemediationStatus `json:"status,omitempty"`
}

// CNIRemediationList is a list of CNIRemediations.
// +kubebuilder:object:root=true
type CNIRemediationList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []CNIRemediation `json:"items"`
}

// CNIRemediationTemplateResource is the template's spec.template: what NHC and MHC copy into a CNIRemediation.
type CNIRemediationTemplateResource struct {
	// Spec is copied into each CNIRemediation.
	// +optional
	Spec CNIRemediationSpec `json:"spec,omitempty"`
}

// CNIRemediationTemplateSpec holds the template.
type CNIRemediationTemplateSpec struct {
	// Template is what each CNIRemediation is made from.
	Template CNIRemediationTemplateResource `json:"template"`
}

// CNIRemediationTemplate is what a NodeHealthCheck's remediationTemplate or a MachineHealthCheck's
// remediationTemplate points at.
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Namespaced,shortName=cniremt,categories=cnimedic
// +kubebuilder:printcolumn:name="Signature",type=string,JSONPath=`.spec.template.spec.signature`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type CNIRemediationTemplate struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec CNIRemediationTemplateSpec `json:"spec,omitempty"`
}

// CNIRemediationTemplateList is a list of CNIRemediationTemplates.
// +kubebuilder:object:root=true
type CNIRemediationTemplateList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []CNIRemediationTemplate `json:"items"`
}

func init() {
	SchemeBuilder.Register(&CNIRemediation{}, &CNIRemediationList{}, &CNIRemediationTemplate{}, &CNIRemediationTemplateList{})
}
