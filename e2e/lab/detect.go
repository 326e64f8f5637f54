package lab

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
	"github.com/cnimedic/cnimedic/internal/signature"
)

// ManagerRunsDetection tells whether the running manager has its detection controller, from the manager's own log
// (controller-runtime's "Starting Controller" line for controller "detection"). Until detection is wired into
// cmd/manager, the suite and the demo create NodeRemediations themselves (RemediationAsDetection) and say so.
func (l *Lab) ManagerRunsDetection(ctx context.Context) (bool, error) {
	out, err := l.Kubectl(ctx, "logs", "--namespace="+Namespace, "deployment/cnimedic-manager")
	if err != nil {
		return false, err
	}
	return strings.Contains(string(out), `"msg":"Starting Controller","controller":"detection"`), nil
}

// RemediationAsDetection builds the NodeRemediation the detection controller would create for a node from the
// real evidence: the FailedCreatePodSandBox events of pods stuck on it, or its Ready condition's message. The
// signature and its parameters come from internal/signature, the catalog detection uses.
func RemediationAsDetection(node, policy string, events []corev1.Event, condition string) (*v1alpha1.NodeRemediation, error) {
	set := signature.Default()
	spec := v1alpha1.NodeRemediationSpec{NodeName: node, PolicyName: policy}
	if condition != "" {
		res, ok := set.MatchNodeCondition(condition)
		if !ok {
			return nil, fmt.Errorf("no signature matches node condition %q", condition)
		}
		spec.Signature, spec.Parameters = res.Signature, res.Params
		spec.Evidence.NodeCondition = condition
	}
	var first, last time.Time
	pods := map[v1alpha1.PodReference]bool{}
	for _, e := range events {
		res, ok := set.Match(e.Reason, e.Message)
		if !ok {
			return nil, fmt.Errorf("no signature matches event %s: %q", e.Reason, e.Message)
		}
		if spec.Signature == "" {
			spec.Signature, spec.Parameters = res.Signature, res.Params
		}
		spec.Evidence.EventCount += max(e.Count, 1)
		if len(spec.Evidence.SampleMessages) < 5 {
			spec.Evidence.SampleMessages = append(spec.Evidence.SampleMessages, e.Message)
		}
		ref := v1alpha1.PodReference{Namespace: e.InvolvedObject.Namespace, Name: e.InvolvedObject.Name}
		if !pods[ref] && len(spec.Evidence.Pods) < 20 {
			spec.Evidence.Pods = append(spec.Evidence.Pods, ref)
		}
		pods[ref] = true
		if t := EventFirst(e); first.IsZero() || t.Before(first) {
			first = t
		}
		if t := EventLast(e); t.After(last) {
			last = t
		}
	}
	if spec.Signature == "" {
		return nil, fmt.Errorf("no evidence for node %s", node)
	}
	if len(events) > 0 {
		spec.Evidence.PodCount = int32(len(pods))
		spec.Evidence.FirstSeen = &metav1.Time{Time: first}
		spec.Evidence.LastSeen = &metav1.Time{Time: time.Now()}
	}
	sum := sha256.Sum256([]byte(node + "/" + spec.Signature + "/" + time.Now().String()))
	return &v1alpha1.NodeRemediation{
		ObjectMeta: metav1.ObjectMeta{Name: node + "-" + spec.Signature + "-" + hex.EncodeToString(sum[:3])},
		Spec:       spec,
	}, nil
}

// EventFirst is when an event was first seen.
func EventFirst(e corev1.Event) time.Time {
	switch {
	case !e.EventTime.IsZero():
		return e.EventTime.Time
	case !e.FirstTimestamp.IsZero():
		return e.FirstTimestamp.Time
	}
	return e.LastTimestamp.Time
}

// EventLast is when an event was last seen.
func EventLast(e corev1.Event) time.Time {
	if e.Series != nil && !e.Series.LastObservedTime.IsZero() {
		return e.Series.LastObservedTime.Time
	}
	if !e.LastTimestamp.IsZero() {
		return e.LastTimestamp.Time
	}
	return EventFirst(e)
}
