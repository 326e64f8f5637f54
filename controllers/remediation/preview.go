package remediation

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
	"github.com/cnimedic/cnimedic/internal/diagnosepod"
)

// A human approving in Manual mode sees what will change before saying yes. While a remediation waits for a
// person, the plan recorded in its status is previewed on the node: the read-only diagnosis pod
// (internal/diagnosepod) runs `remediator plan` on it, which resolves every step against the node's files as apply
// would, under the same allowlist, and writes nothing. The exact diff of each file comes back in the termination
// message and is kept, bounded, in status.preview with the digest of the plan it previewed; a preview of another
// plan is never shown as current (NodeRemediationStatus.CurrentPreview).
//
// The preview only shows: the digest binds what runs. So an approval never waits for it, a preview that failed or
// was lost is recorded ("unavailable: why") and blocks nothing, and under an Automatic policy that approves at once
// none runs (nobody would read it, and it would delay the repair). It runs once per plan digest, through the
// diagnoses' guard (awaitDiagnosis: a pause, the cluster-wide cap, the node's interval).

// componentPreview labels the preview pods: read-only like the diagnosis pods, and counted with them.
const componentPreview = "preview"

// modePlanPreview runs `remediator plan` on the recorded plan in the read-only diagnosis pod, for the approver. (A
// dry run's repair, modePreview, runs in the executor's pod instead, as its attempt at the repair.)
const modePlanPreview executorMode = "plan-preview"

// ReasonPreviewed: the plan was previewed on the node (or could not be), for the approver.
const ReasonPreviewed = "Previewed"

// What of a preview the status keeps (the CRD's limits, with room to spare).
const (
	maxPreviewFiles    = 20
	maxPreviewFailures = 10
	// maxPreviewDiff is the bytes of one file's diff kept; the termination message (4096 bytes) holds less anyway.
	maxPreviewDiff = 3500
	maxPreviewText = 1000
)

// wouldFail starts the message of a step that would fail as the node is now (`remediator plan`'s result).
const wouldFail = "would fail: "

// awaitPreview previews the recorded plan on the node once per plan digest, while a person is asked to approve it.
// It returns when to look again while the preview runs; a preview that ended, failed or was lost is recorded and
// the wait is over.
func (r *Reconciler) awaitPreview(ctx context.Context, s *scope) (*reconcile.Result, error) {
	st := &s.nr.Status
	if st.Plan == nil || len(st.Plan.Steps) == 0 {
		return nil, nil
	}
	digest := v1alpha1.PlanDigest(*st.Plan)
	if st.Preview != nil && st.Preview.PlanDigest == digest {
		return nil, nil
	}
	if st.ExecutorPod != "" && st.ExecutorPod != r.podName(s, modePlanPreview) {
		// The preview of a plan that is no longer the recorded one: its result would not be current. The plan of
		// now waits its turn as a new preview.
		st.ExecutorPod = ""
	}
	// The executor timeout counts from the preview pod's start, not from the phase's: a preview may wait its turn
	// (the cap, the node's interval) for longer than it may run.
	since := s.now
	if st.ExecutorPod != "" {
		pod := &corev1.Pod{}
		switch err := r.Client.Get(ctx, types.NamespacedName{Namespace: r.Config.Namespace, Name: st.ExecutorPod}, pod); {
		case err == nil:
			since = pod.CreationTimestamp.Time
		case !apierrors.IsNotFound(err): // a pod not found is the wait's to report (lost)
			return nil, fmt.Errorf("getting preview pod %s/%s: %w", r.Config.Namespace, st.ExecutorPod, err)
		}
	}
	res, wait, failed, err := r.awaitDiagnosis(ctx, s, modePlanPreview, since)
	switch {
	case err != nil:
		return nil, fmt.Errorf("previewing plan %s on node %s: %w", short(digest), s.nr.Spec.NodeName, err)
	case wait != nil:
		return wait, nil
	case failed != nil:
		recordPreview(s, digest, nil, failed.message)
	default:
		recordPreview(s, digest, res, "")
	}
	// The preview pod is not the repair's executor.
	st.ExecutorPod = ""
	return nil, nil
}

// previewPod is the read-only diagnosis pod (internal/diagnosepod) in its plan mode: `remediator plan` on the
// recorded plan, told where the node's parts are as the executor of the plan would be (settingsFor: the layout the
// diagnosis found, under the policy's overrides), reporting in the termination message. The plan's digest names
// the pod (podName), so the pod found under that name previews that plan.
func (r *Reconciler) previewPod(s *scope, name string) (*corev1.Pod, error) {
	nr, p := s.nr, s.policy
	plan, err := json.Marshal(nr.Status.Plan)
	if err != nil {
		return nil, fmt.Errorf("encoding the plan of %s: %w", nr.Name, err)
	}
	image := nr.Status.ExecutorImage
	if image == "" {
		image = r.Config.ExecutorImage
	}
	set := settingsFor(nr, p)
	var bin string
	var moreBins []string
	if len(set.binDirs) > 0 {
		bin, moreBins = set.binDirs[0], set.binDirs[1:]
	}
	pod := diagnosepod.Pod(diagnosepod.Spec{
		Node: nr.Spec.NodeName, Namespace: r.Config.Namespace, Name: name,
		Labels: map[string]string{
			v1alpha1.LabelRemediation: nr.Name,
			v1alpha1.LabelComponent:   componentPreview,
			v1alpha1.LabelNode:        nr.Spec.NodeName,
		},
		Image: image, ServiceAccount: r.Config.ExecutorServiceAccount, PriorityClass: p.Spec.Executor.PriorityClassName,
		ConfDir: set.confDir, BinDir: bin, MoreBinDirs: moreBins, ContainerdConfig: set.containerdConfig, CRISocket: set.criSocket,
		KubeletUnit: set.kubeletUnit, RuntimeUnit: set.runtimeUnit,
		Mode: diagnosepod.ModePlan, Plan: string(plan), Output: "json",
	})
	// A preview may still run when the approval arrives and the drain starts: as its controller, the remediation
	// makes kubectl's drain skip it (cnimedic's own pods) rather than report a pod without a controller.
	if err := controllerutil.SetControllerReference(nr, pod, r.Client.Scheme()); err != nil {
		return nil, fmt.Errorf("making %s the controller of preview pod %s: %w", nr.Name, name, err)
	}
	return pod, nil
}

// endPreview ends the wait's preview once a decision is taken: nobody will read it. Its pod, if it still runs, is
// deleted, and it is no longer recorded as the remediation's pod in any case: the repair's executor starts afresh,
// after mayAct and the re-validation.
func (r *Reconciler) endPreview(ctx context.Context, s *scope) error {
	name := s.nr.Status.ExecutorPod
	if name == "" {
		return nil
	}
	s.nr.Status.ExecutorPod = ""
	pod := &corev1.Pod{}
	switch err := r.Client.Get(ctx, types.NamespacedName{Namespace: r.Config.Namespace, Name: name}, pod); {
	case apierrors.IsNotFound(err):
		return nil
	case err != nil:
		return fmt.Errorf("getting preview pod %s/%s: %w", r.Config.Namespace, name, err)
	}
	if pod.Labels[v1alpha1.LabelComponent] != componentPreview || pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
		return nil
	}
	if err := r.Client.Delete(ctx, pod, client.PropagationPolicy(metav1.DeletePropagationBackground)); client.IgnoreNotFound(err) != nil {
		return fmt.Errorf("deleting preview pod %s/%s, no longer needed: %w", pod.Namespace, pod.Name, err)
	}
	return nil
}

// recordPreview keeps a preview in the status, bounded, and tells the approver what it shows.
func recordPreview(s *scope, digest string, res *v1alpha1.ExecutorResult, unavailable string) {
	nr := s.nr
	p := &v1alpha1.PlanPreview{Time: metav1.NewTime(s.now), PlanDigest: digest}
	if unavailable == "" && res.Outcome == v1alpha1.OutcomeFailed {
		unavailable = res.Message
	}
	next := fmt.Sprintf("kubectl cnimedic describe %s shows the plan; kubectl cnimedic approve %s approves it (digest %s)", nr.Name, nr.Name, short(nr.Status.Digest))
	if unavailable != "" {
		p.Unavailable = cutText(unavailable, maxPreviewText)
		nr.Status.Preview = p
		s.event(warning, ReasonPreviewed, actionApprove, fmt.Sprintf("preview unavailable: %s; nothing was changed on node %s, and the plan can still be approved: %s",
			p.Unavailable, nr.Spec.NodeName, next))
		return
	}
	p.Message = cutText(res.Message, maxPreviewText)
	for _, step := range res.Steps {
		if msg, ok := strings.CutPrefix(step.Message, wouldFail); ok {
			if len(p.Failures) == maxPreviewFailures {
				p.Truncated = true
				break
			}
			p.Failures = append(p.Failures, cutText(fmt.Sprintf("%s: %s", step.Type, msg), 500))
		}
	}
	var paths []string
	for i, c := range res.Changes {
		if i == maxPreviewFiles {
			p.Truncated = true
			break
		}
		f := v1alpha1.PreviewFile{Path: cutText(c.Path, 4000), Why: cutText(c.Why, 500), Diff: c.Diff, Truncated: c.Truncated}
		if len(f.Diff) > maxPreviewDiff {
			f.Diff, f.Truncated = cutText(f.Diff, maxPreviewDiff), true
		}
		p.Truncated = p.Truncated || f.Truncated
		p.Files = append(p.Files, f)
		paths = append(paths, f.Path)
	}
	if len(res.Changes) == 0 && strings.Contains(res.Message, "left out to fit") {
		p.Truncated = true
	}
	nr.Status.Preview = p
	change := "would change no file"
	if len(paths) > 0 {
		change = "would change " + strings.Join(firstN(paths, 8), ", ")
	}
	if len(p.Failures) > 0 {
		change += fmt.Sprintf("; %d step(s) would fail as the node is now", len(p.Failures))
	}
	s.event(normal, ReasonPreviewed, actionApprove, fmt.Sprintf("previewed on node %s, nothing changed: the plan %s. %s", nr.Spec.NodeName, change, next))
}

// cutText shortens s to at most n bytes, on a rune boundary, saying it was cut.
func cutText(s string, n int) string {
	const mark = " …(cut)"
	if len(s) <= n {
		return s
	}
	i := n - len(mark)
	for i > 0 && s[i]&0xC0 == 0x80 {
		i--
	}
	return s[:i] + mark
}
