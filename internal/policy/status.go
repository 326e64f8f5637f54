package policy

import (
	"context"
	"encoding/json"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
)

// Two controllers write a policy's status: the policy controller (counts, Ready, SignaturesValid, Paused) and the
// detection controller (StormActive and status.storm). Each applies only its own fields with server-side apply
// under its own field manager, so neither overwrites the other and neither needs to read-modify-write.

// StatusApply is the part of a policy's status one controller owns. Nil fields are not applied; a field the same
// manager applied before and now leaves nil is removed by the API server.
type StatusApply struct {
	ObservedGeneration *int64                `json:"observedGeneration,omitempty"`
	Conditions         []metav1.Condition    `json:"conditions,omitempty"`
	CoveredNodes       *int32                `json:"coveredNodes,omitempty"`
	ActiveRepairs      *int32                `json:"activeRepairs,omitempty"`
	PendingApprovals   *int32                `json:"pendingApprovals,omitempty"`
	Storm              *v1alpha1.StormStatus `json:"storm,omitempty"`
}

// ApplyStatus applies st to the status of the named policy as fieldManager.
func ApplyStatus(ctx context.Context, c client.Client, name, fieldManager string, st StatusApply) error {
	doc := map[string]any{
		"apiVersion": v1alpha1.GroupVersion.String(),
		"kind":       "RemediationPolicy",
		"metadata":   map[string]any{"name": name},
		"status":     st,
	}
	raw, err := json.Marshal(doc)
	if err != nil {
		return err
	}
	u := &unstructured.Unstructured{}
	if err := json.Unmarshal(raw, &u.Object); err != nil {
		return err
	}
	return c.Status().Apply(ctx, client.ApplyConfigurationFromUnstructured(u), client.FieldOwner(fieldManager), client.ForceOwnership)
}
