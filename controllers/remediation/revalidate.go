package remediation

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"

	"github.com/cnimedic/cnimedic/controllers/detection"
	"github.com/cnimedic/cnimedic/internal/signature"
)

// stillBroken re-validates the evidence right before cnimedic acts: the node must still show the failure. It is
// asked twice: before the cordon (withPods: the stuck pods must still be stuck) and before the executor starts,
// after the drain evicted those pods, when only the node condition and the freshness of the evidence can tell.
//
// The failure still holds when
//   - the node's Ready condition still carries the signature (cni plugin not initialized and the like), or a
//     condition of the evidence still holds as the policy maps it (spec.detection.nodeConditions), or
//   - failures were seen within detection.evidenceExpiry (the detection keeps lastSeen current while kubelet keeps
//     failing), and, before the cordon, at least one pod of the evidence is still on the node with a status, as
//     kubelet wrote it, that shows its sandbox failing (detection.SandboxFailureSince).
//
// A request made by hand carries no evidence to re-check: the node's own diagnosis confirmed it (Diagnosing) and
// only an approver can have approved it.
func (r *Reconciler) stillBroken(ctx context.Context, s *scope, withPods bool) (bool, string) {
	ev := s.nr.Spec.Evidence
	if carriesNoEvidence(s.nr) {
		return true, "requested without evidence"
	}
	if ev.NodeCondition != "" {
		if msg, ok := notReadyMessage(s.node); ok {
			if res, matched := signature.Default().MatchNodeCondition(msg); matched && res.Signature == s.nr.Spec.Signature {
				return true, "the node condition still shows it"
			}
		}
	}
	// A condition the policy maps (spec.detection.nodeConditions) still holds as the policy maps it.
	for _, c := range ev.Conditions {
		if held, how := detection.MappedConditionHolds(s.policy, s.node, c.Type, s.nr.Spec.Signature); held {
			return true, how + " still shows it"
		}
	}
	if (ev.NodeCondition != "" || len(ev.Conditions) > 0) && ev.EventCount == 0 {
		return false, "the node's conditions no longer show " + s.nr.Spec.Signature
	}
	expiry := s.policy.Spec.Detection.EvidenceExpiry.Duration
	if ev.LastSeen == nil || s.now.Sub(ev.LastSeen.Time) > expiry {
		last := "never"
		if ev.LastSeen != nil {
			last = ev.LastSeen.UTC().Format("15:04:05")
		}
		return false, fmt.Sprintf("no failure seen since %s (detection.evidenceExpiry %s)", last, expiry)
	}
	if !withPods || len(ev.Pods) == 0 {
		return true, "failures seen recently"
	}
	for _, ref := range ev.Pods {
		pod := &corev1.Pod{}
		// Pods are not cached (a cache of every pod would cost too much memory on large clusters): read live.
		err := r.APIReader.Get(ctx, types.NamespacedName{Namespace: ref.Namespace, Name: ref.Name}, pod)
		if apierrors.IsNotFound(err) {
			continue
		}
		if err != nil {
			return true, fmt.Sprintf("pod %s/%s could not be read (%v): taken as still stuck", ref.Namespace, ref.Name, err)
		}
		// Only the status kubelet wrote counts, as in the detection: a pod that is merely not running (an image
		// that never pulls) says nothing of the node's network.
		if _, failing := detection.SandboxFailureSince(pod); failing && pod.Spec.NodeName == s.nr.Spec.NodeName {
			return true, fmt.Sprintf("pod %s/%s is still stuck", ref.Namespace, ref.Name)
		}
	}
	return false, "no pod of the evidence still shows a sandbox failure: they run, are gone, or kubelet no longer reports one"
}

// notReadyMessage is the message of the node's Ready condition when it is not True.
func notReadyMessage(node *corev1.Node) (string, bool) {
	if node == nil {
		return "", false
	}
	for _, c := range node.Status.Conditions {
		if c.Type == corev1.NodeReady && c.Status != corev1.ConditionTrue {
			return c.Message, true
		}
	}
	return "", false
}

// nodeReady reports whether the node is Ready with its network ready.
func nodeReady(node *corev1.Node) (bool, string) {
	for _, c := range node.Status.Conditions {
		if c.Type == corev1.NodeReady {
			if c.Status == corev1.ConditionTrue {
				return true, ""
			}
			return false, fmt.Sprintf("node Ready=%s: %s", c.Status, c.Message)
		}
	}
	return false, "the node reports no Ready condition"
}
