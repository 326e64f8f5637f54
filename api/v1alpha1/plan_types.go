package v1alpha1

import (
	"strconv"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The executor contract. The manager hands the executor pod a Plan and reads an ExecutorResult back from the pod's
// termination message. Both are plain typed data: the executor pod carries no API credentials.

// StepType names one typed, idempotent step of a plan.
// +kubebuilder:validation:Enum=StopUnit;StartUnit;SetCNIVersion;InstallReferencePlugins;RepairRuntimeCNIConfig;FixConfFileModes;RestoreConfList;ReclaimIPAM;RemoveStaleNetns;DeleteLink;RemoveStaleCNIResults;VerifyNode
type StepType string

const (
	// StepStopUnit stops a systemd unit (kubelet or the runtime) and waits until it is inactive.
	StepStopUnit StepType = "StopUnit"
	// StepStartUnit starts a systemd unit and waits until it is active.
	StepStartUnit StepType = "StartUnit"
	// StepSetCNIVersion sets or adds a conflist's cniVersion.
	StepSetCNIVersion StepType = "SetCNIVersion"
	// StepInstallReferencePlugins installs bundled reference plugins into the CNI bin dir.
	StepInstallReferencePlugins StepType = "InstallReferencePlugins"
	// StepRepairRuntimeCNIConfig writes containerd's CRI CNI settings.
	StepRepairRuntimeCNIConfig StepType = "RepairRuntimeCNIConfig"
	// StepFixConfFileModes makes conflists readable (0644) and plugins executable (0755).
	StepFixConfFileModes StepType = "FixConfFileModes"
	// StepRestoreConfList restores a conflist from its last good backup.
	StepRestoreConfList StepType = "RestoreConfList"
	// StepReclaimIPAM frees host-local allocations whose sandbox no longer exists.
	StepReclaimIPAM StepType = "ReclaimIPAM"
	// StepRemoveStaleNetns removes network namespaces no sandbox uses.
	StepRemoveStaleNetns StepType = "RemoveStaleNetns"
	// StepDeleteLink deletes a link (such as cni0 holding a stale address) so that the plugin recreates it.
	StepDeleteLink StepType = "DeleteLink"
	// StepRemoveStaleCNIResults removes libcni's cached results (/var/lib/cni/results) that block a teardown: those
	// of sandboxes that no longer exist, and those of ResultVersion on a network now configured with another
	// version, which a runtime without the converter cannot read ("no converter for CNI result version").
	StepRemoveStaleCNIResults StepType = "RemoveStaleCNIResults"
	// StepVerifyNode checks the node locally: conflists parse, plugins support the configured version, the
	// runtime reports NetworkReady.
	StepVerifyNode StepType = "VerifyNode"
)

// Plan is what the executor does on a node, in order. Fields left empty are resolved on the node (for example the
// conflist the runtime loads, or the highest version every plugin supports) and reported in the result.
type Plan struct {
	// Steps run in order.
	// +kubebuilder:validation:MaxItems=32
	// +listType=atomic
	Steps []PlanStep `json:"steps"`
}

// PlanStep is one typed step. Type says which of the other fields apply.
type PlanStep struct {
	// Type of the step.
	Type StepType `json:"type"`

	// Unit is the systemd unit of StopUnit and StartUnit.
	// +optional
	Unit string `json:"unit,omitempty"`

	// ConfList is the conflist file name in the CNI conf dir, for SetCNIVersion and RestoreConfList; empty means the
	// one the runtime loads (the first in file-name order).
	// +optional
	ConfList string `json:"confList,omitempty"`

	// CNIVersion is the version SetCNIVersion writes; empty means the highest every plugin of the chain supports.
	// +optional
	CNIVersion string `json:"cniVersion,omitempty"`

	// Plugins are the plugin types InstallReferencePlugins installs; empty means every reference plugin the
	// chain uses.
	// +optional
	// +listType=atomic
	Plugins []string `json:"plugins,omitempty"`

	// Network is the host-local network ReclaimIPAM works on (a directory under /var/lib/cni/networks); empty
	// means every network.
	// +optional
	Network string `json:"network,omitempty"`

	// ResultVersion is the CNI version of the cached results RemoveStaleCNIResults removes on Network although their
	// sandbox is live, because the network's configuration moved to another version; empty removes only the results
	// of sandboxes that no longer exist.
	// +optional
	ResultVersion string `json:"resultVersion,omitempty"`

	// Link is the link DeleteLink removes, such as cni0.
	// +optional
	Link string `json:"link,omitempty"`

	// Runtime holds the settings RepairRuntimeCNIConfig writes.
	// +optional
	Runtime *ContainerdCNISpec `json:"runtime,omitempty"`
}

// Args are the step's fields that are set, as key=value in a fixed order: how the plugin and the docs show a
// step, beside its type.
func (s PlanStep) Args() []string {
	var out []string
	add := func(k, v string) {
		if v != "" {
			out = append(out, k+"="+v)
		}
	}
	add("unit", s.Unit)
	add("conflist", s.ConfList)
	add("cniVersion", s.CNIVersion)
	add("plugins", strings.Join(s.Plugins, ","))
	add("network", s.Network)
	add("resultVersion", s.ResultVersion)
	add("link", s.Link)
	if r := s.Runtime; r != nil {
		add("binDir", r.BinDir)
		add("confDir", r.ConfDir)
		add("confTemplate", r.ConfTemplate)
		if r.MaxConfNum != nil {
			add("maxConfNum", strconv.Itoa(int(*r.MaxConfNum)))
		}
	}
	return out
}

// ExecutorOutcome is how an executor run ended.
// +kubebuilder:validation:Enum=Succeeded;NoChange;Failed;RolledBack
type ExecutorOutcome string

const (
	// OutcomeSucceeded: every step ran and the node verified locally.
	OutcomeSucceeded ExecutorOutcome = "Succeeded"
	// OutcomeNoChange: every step found the node already as the plan wants it (a plan or dry run, or a repeat).
	OutcomeNoChange ExecutorOutcome = "NoChange"
	// OutcomeFailed: a step failed and the rollback failed too; the result says what is left.
	OutcomeFailed ExecutorOutcome = "Failed"
	// OutcomeRolledBack: a step or the local verification failed and every change was undone.
	OutcomeRolledBack ExecutorOutcome = "RolledBack"
)

// ExecutorResult is what the executor reports: the outcome, each step and each file it changed.
type ExecutorResult struct {
	// RemediationID is the NodeRemediation the run belongs to; the host-side journal is kept under it.
	RemediationID string `json:"remediationID"`
	// Outcome of the run.
	Outcome ExecutorOutcome `json:"outcome"`
	// Message says in words what happened.
	// +optional
	Message string `json:"message,omitempty"`
	// Steps, in the order they ran.
	// +optional
	// +listType=atomic
	Steps []StepResult `json:"steps,omitempty"`
	// Changes lists every file the run changed.
	// +optional
	// +listType=atomic
	Changes []FileChange `json:"changes,omitempty"`
	// Findings are what a diagnosis found (errors and warnings), for the manager to decide on.
	// +optional
	// +listType=atomic
	Findings []Finding `json:"findings,omitempty"`
	// Layout is the node's layout as a diagnosis found it.
	// +optional
	Layout *NodeLayout `json:"layout,omitempty"`
}

// FindingSeverity says how bad a finding is.
// +kubebuilder:validation:Enum=error;warning;info
type FindingSeverity string

const (
	// SeverityError: pods on the node fail because of it.
	SeverityError FindingSeverity = "error"
	// SeverityWarning: a latent problem, or one that makes a repair riskier.
	SeverityWarning FindingSeverity = "warning"
	// SeverityInfo: worth knowing.
	SeverityInfo FindingSeverity = "info"
)

// Finding is one thing the read-only diagnosis found on the node, in words a cluster operator understands.
type Finding struct {
	Severity FindingSeverity `json:"severity"`
	// Signature is the failure signature this finding supports, if any.
	// +optional
	Signature SignatureID `json:"signature,omitempty"`
	// Summary says what is wrong and what pods see because of it.
	Summary string `json:"summary"`
	// Repair says in words what would fix it.
	// +optional
	Repair string `json:"repair,omitempty"`
	// Fix is the one repair action that fixes it, when only one does (a loopback plugin too old for the runtime
	// is fixed by InstallReferencePlugins, never by rewriting a conflist).
	// +optional
	Fix RepairAction `json:"fix,omitempty"`
	// Path is the file or object concerned.
	// +optional
	Path string `json:"path,omitempty"`
}

// StepResult is how one step went.
type StepResult struct {
	// Type of the step.
	Type StepType `json:"type"`
	// Outcome: Done, Unchanged, Failed, RolledBack or Skipped.
	Outcome string `json:"outcome"`
	// Message says what the step found and did.
	// +optional
	Message string `json:"message,omitempty"`
	// Started is when the step started.
	// +optional
	Started *metav1.Time `json:"started,omitempty"`
	// Finished is when the step finished.
	// +optional
	Finished *metav1.Time `json:"finished,omitempty"`
}

// Step outcomes.
const (
	StepDone       = "Done"
	StepUnchanged  = "Unchanged"
	StepFailed     = "Failed"
	StepRolledBack = "RolledBack"
	StepSkipped    = "Skipped"
)

// FileChange is one file the executor changed.
type FileChange struct {
	// Path on the host.
	Path string `json:"path"`
	// Backup is where the previous content was kept (empty when the file did not exist).
	// +optional
	Backup string `json:"backup,omitempty"`
	// Diff is a unified diff of a text file, possibly shortened.
	// +optional
	Diff string `json:"diff,omitempty"`
	// Why the file is changed (a preview says it).
	// +optional
	Why string `json:"why,omitempty"`
	// Truncated is set when the diff was shortened to fit the termination message.
	// +optional
	Truncated bool `json:"truncated,omitempty"`
}
