package detection

import (
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
)

// An event is a hint; the node is the evidence.
//
// Anyone holding the built-in edit role in a namespace may write core/v1 and events.k8s.io/v1 events there, and the
// API server authenticates none of their content: source, reportingController/Instance, count, series and the
// timestamps are the writer's, and an events.k8s.io event may name a pod of another namespace. The same tenant may
// create a pod bound to any node (spec.nodeName). So neither an event nor a pod's spec says that a node fails. What
// the tenant cannot write is the pod's status (pods/status is granted to nodes, through NodeRestriction only for
// their own pods, and to cluster admins) and the node's status. Detection therefore counts a node as failing only
// through
//   - its own Ready condition (kubelet writes it: the runtime's NetworkReady=false reaches it), or
//   - pods bound to it (read from the pods listed by spec.nodeName, by the namespace and name the event names)
//     whose status, as the node's kubelet wrote it, shows a sandbox that cannot be set up or torn down
//     (SandboxFailureSince) for at least detection.minStuckDuration, measured from the status, not from events.
//
// The events of those pods still give the message (the signature and its parameters, hints that can narrow what
// the node shows and never widen it) and count toward minOccurrences; the events of any other pod count for nothing.

// mirrorAnnotation marks the API's mirror of a static pod (kubelet never reports a static pod terminal).
const mirrorAnnotation = "kubernetes.io/config.mirror"

// SandboxFailureSince says whether the pod's status, as kubelet writes it, shows that its sandbox cannot be set up
// or cannot be torn down, and since when. It reads only what the node's kubelet (or someone allowed to write
// pods/status, which the edit role is not) writes, and the deletion timestamp, which the API server sets:
//
//   - Setup: a pod that is not being deleted, not terminal, with the PodReadyToStartContainers condition False,
//     since the condition's lastTransitionTime. Kubelet computes the condition on every status it generates
//     (kubelet's GeneratePodReadyToStartContainersCondition): True as soon as the pod has a
//     ready sandbox with its network set up (runtimeutil.PodSandboxChanged says no new sandbox is needed), False
//     while kubelet must still create one. A pod whose sandbox works but whose image never pulls shows True; a
//     sandbox that fails on a CNI error keeps it False for as long as the failure lasts.
//   - Teardown: a pod being deleted, past its grace period (the deletion timestamp is the moment the grace period
//     ends), whose phase is still not terminal. Kubelet writes the terminal phase only once the pod is torn down:
//     kubelet's SyncTerminatingPod records FailedKillPod and returns the error when killPod fails
//     (KillPodSandbox / StopPodSandbox, where a CNI DEL failure surfaces), before it generates the terminal status
//     (generateAPIPodStatus with podIsTerminal), so the phase stays Pending or Running while teardown fails and the
//     pod worker retries; once killPod succeeds the status it writes is Succeeded or Failed, including for a pod
//     deleted while still Pending (kubernetes#115331, "Give terminal phase correctly to all pods that will not be
//     restarted", v1.27). A tenant's pod held by a finalizer on a healthy node is therefore terminal, not failing.
//     Static pods are the exception kubelet makes (it never gives them a terminal phase, kubernetes#116484): their
//     mirrors never confirm a teardown failure.
//
// A terminal pod confirms nothing: its sandbox is gone on purpose. since is the zero time when ok is false.
func SandboxFailureSince(pod *corev1.Pod) (since time.Time, ok bool) {
	if pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
		return time.Time{}, false
	}
	if pod.DeletionTimestamp != nil {
		if pod.Annotations[mirrorAnnotation] != "" {
			return time.Time{}, false
		}
		return pod.DeletionTimestamp.Time, true
	}
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodReadyToStartContainers {
			if c.Status == corev1.ConditionFalse {
				return c.LastTransitionTime.Time, true
			}
			return time.Time{}, false
		}
	}
	return time.Time{}, false
}

// kubeletReporting says whether the node's kubelet still reports: pod statuses are kubelet's word only while it is
// heard from. A node whose Ready condition is Unknown (the node lifecycle controller's verdict on a kubelet that
// stopped posting) or missing keeps the last status its pods had, which no longer says anything of now.
func kubeletReporting(node *corev1.Node) bool {
	for _, c := range node.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue || c.Status == corev1.ConditionFalse
		}
	}
	return false
}

// confirm narrows a snapshot's candidate to what the node confirms: its pods to those bound to the node (live, from
// podsOn) whose status has shown a sandbox failure (SandboxFailureSince) for at least minStuck, its occurrences to
// the events of those pods that name them (an event naming another UID was about an earlier pod of the same name),
// its parameters and sample messages to those the node condition and the confirmed pods' events gave, and
// first/last to those events and the node condition. ripens becomes the earliest moment a failing pod of the
// window will have failed for minStuck. The node condition is left as it is: kubelet wrote it.
func (c *candidate) confirm(live map[v1alpha1.PodReference]*corev1.Pod, reporting bool, now time.Time, minStuck time.Duration) {
	var confirmed []v1alpha1.PodReference
	var events int32
	var first, last time.Time
	c.ripens, c.failingSince = time.Time{}, time.Time{}
	if c.params == nil {
		c.params = map[string]string{}
	}
	for _, ref := range c.pods {
		pod := live[ref]
		if pod == nil || !reporting {
			continue
		}
		since, failing := SandboxFailureSince(pod)
		if !failing {
			continue
		}
		if at := since.Add(minStuck); now.Before(at) {
			if c.ripens.IsZero() || at.Before(c.ripens) {
				c.ripens = at
			}
			continue
		}
		var n int32
		for _, h := range c.named[ref].hits {
			if h.uid != "" && h.uid != pod.UID {
				continue
			}
			n += h.n
			if first.IsZero() || h.at.Before(first) {
				first = h.at
			}
			if h.at.After(last) {
				last = h.at
			}
		}
		if n == 0 {
			continue
		}
		confirmed = append(confirmed, ref)
		events += n
		if c.failingSince.IsZero() || since.Before(c.failingSince) {
			c.failingSince = since
		}
		// The message's parameters and the samples come from the confirmed pods' events only (in pod order, so the
		// same evidence gives the same parameters): what an unconfirmed event said is not even a hint.
		for k, v := range c.named[ref].params {
			c.params[k] = v
		}
		for _, m := range c.named[ref].samples {
			c.samples = addSample(c.samples, m)
		}
	}
	c.pods, c.events = confirmed, events
	if c.condition != "" {
		if first.IsZero() || c.conditionFirst.Before(first) {
			first = c.conditionFirst
		}
		last = now
	}
	c.first, c.last = first, last
}
