package remediation

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
	"github.com/cnimedic/cnimedic/internal/diagnosepod"
	"github.com/cnimedic/cnimedic/internal/policy"
)

// The executor contract (design.md): one pod per run on the target node, hostNetwork (it must run while CNI is
// broken), pinned by nodeName, tolerating every taint, no API credentials, only the host paths it needs. The plan is
// handed in as a file (the pod's annotation, through the downward API) and the typed result comes back in the
// pod's termination message.
//
// The pod itself changes nothing on the node: `remediator apply` places a verified copy of itself under the state
// dir and runs the stop → repair → start sequence as a transient systemd unit on the host, so the sequence survives
// the pod and the kubelet and containerd restarts it causes. That is why the pod mounts only the remediator's state
// dir, the system D-Bus socket and containerd's socket directory.

// componentDiagnosis labels the read-only diagnosis pods (executor pods are "executor"): they are counted apart,
// since they may run without approval and change nothing.
const componentDiagnosis = "diagnosis"

// executorMode is what an executor pod does.
type executorMode string

const (
	modeApply    executorMode = "apply"
	modePreview  executorMode = "preview"
	modeRollback executorMode = "rollback"
	// modeDiagnose runs the read-only diagnosis (internal/diagnosepod) for a custom signature whose action is
	// Diagnose.
	modeDiagnose executorMode = "diagnose"
)

// Paths inside the executor pod.
const (
	hostMount       = "/host"
	planDir         = "/etc/cnimedic"
	planFile        = "plan.json"
	terminationPath = "/dev/termination-log"
	stateDir        = "/var/lib/cnimedic"
	// AnnotationPlan carries the plan on the executor pod; the downward API turns it into the plan file.
	AnnotationPlan = "cnimedic.io/plan"
)

// executorPodName is deterministic for a remediation, an attempt and a mode, so that a manager that crashed after
// creating the pod and before recording it finds the same pod again instead of creating a second one.
func executorPodName(nr *v1alpha1.NodeRemediation, attempt int32, mode executorMode) string {
	sum := sha256.Sum256([]byte(fmt.Sprintf("%s/%s/%d/%s", nr.UID, nr.Name, attempt, mode)))
	base := nr.Name
	if len(base) > 40 {
		base = base[:40]
	}
	return strings.TrimRight(fmt.Sprintf("cnimedic-%s-%s", base, hex.EncodeToString(sum[:4])), "-.")
}

func (r *Reconciler) executorPod(s *scope, name string, mode executorMode) (*corev1.Pod, error) {
	switch mode {
	case modeDiagnose:
		return r.diagnosisPod(s, name)
	case modePlanPreview:
		return r.previewPod(s, name)
	}
	nr, p := s.nr, s.policy
	plan := v1alpha1.Plan{}
	if nr.Status.Plan != nil {
		plan = *nr.Status.Plan
	}
	planJSON, err := json.Marshal(plan)
	if err != nil {
		return nil, fmt.Errorf("encoding the plan of %s: %w", nr.Name, err)
	}
	image := nr.Status.ExecutorImage
	// Where the node's parts are: its layout as the diagnosis found it (layout.go), or the policy's settings.
	set := settingsFor(nr, p)
	args := []string{
		"--host-root=" + hostMount,
		"--dbus-address=unix:path=" + hostMount + "/run/dbus/system_bus_socket",
		"--kubelet-unit=" + set.kubeletUnit,
		"--runtime-unit=" + set.runtimeUnit,
		"--containerd-config=" + set.containerdConfig,
	}
	if set.criSocket != "" {
		args = append(args, "--cri-socket="+set.criSocket)
	}
	if set.confDir != "" {
		args = append(args, "--conf-dir="+set.confDir)
	}
	for _, d := range set.binDirs {
		args = append(args, "--bin-dir="+d)
	}
	switch mode {
	case modeApply:
		// The plan's digest is an argument, which cannot change once the pod exists (its annotations can): apply
		// refuses a plan file that is not the approved plan.
		args = append([]string{"apply", "--plan=" + planDir + "/" + planFile, "--plan-digest=" + v1alpha1.PlanDigest(plan), "--remediation-id=" + nr.Name,
			"--termination-message-path=" + terminationPath, "--run-timeout=" + p.Spec.Executor.Timeout.Duration.String()}, args...)
	case modeRollback:
		args = append([]string{"rollback", "--remediation-id=" + nr.Name, "--termination-message-path=" + terminationPath}, args...)
	case modePreview:
		args = append([]string{"plan", "--plan=" + planDir + "/" + planFile, "--termination-message-path=" + terminationPath}, args...)
	}

	hostPathDir := corev1.HostPathDirectoryOrCreate
	hostPathExisting := corev1.HostPathDirectory
	volumes := []corev1.Volume{
		{Name: "plan", VolumeSource: corev1.VolumeSource{DownwardAPI: &corev1.DownwardAPIVolumeSource{Items: []corev1.DownwardAPIVolumeFile{{
			Path: planFile, FieldRef: &corev1.ObjectFieldSelector{FieldPath: fmt.Sprintf("metadata.annotations['%s']", AnnotationPlan)},
		}}}}},
		// The remediator's state on the host: the staged binary and bundle, and the journal of every run.
		{Name: "state", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: stateDir, Type: &hostPathDir}}},
		// systemd's D-Bus socket: the pod starts and follows the host-side run over it.
		{Name: "dbus", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/run/dbus", Type: &hostPathExisting}}},
	}
	mounts := []corev1.VolumeMount{
		{Name: "plan", MountPath: planDir, ReadOnly: true},
		{Name: "state", MountPath: hostMount + stateDir},
		{Name: "dbus", MountPath: hostMount + "/run/dbus"},
	}
	// The layout's host paths, which exist on the node (the runtime's socket dir: the pod asks the runtime which CNI
	// versions it speaks before the run stops it); without a layout, containerd's socket dir.
	mounted := map[string]bool{stateDir: true, "/run/dbus": true}
	for _, dir := range set.hostPaths {
		if mounted[dir] {
			continue
		}
		mounted[dir] = true
		v := "containerd"
		if dir != containerdSocketDir {
			v = fmt.Sprintf("host-%d", len(volumes))
		}
		volumes = append(volumes, corev1.Volume{Name: v, VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: dir, Type: &hostPathExisting}}})
		mounts = append(mounts, corev1.VolumeMount{Name: v, MountPath: hostMount + dir})
	}
	if mode == modePreview {
		// A preview reads the node's CNI files to show the exact change, and asks the node's plugins their versions
		// (through the host's loader for dynamically linked ones, hence /usr and /lib); it writes nothing, so every
		// one of them is read-only. The dirs are the plan's (the layout's where the policy leaves the defaults).
		cd, _ := layoutRepair(p.Spec.Repair, layoutOf(nr))
		dirs := append([]string{cd.Containerd.ConfDir, cd.Containerd.BinDir}, set.binDirs...)
		dirs = append(dirs, dirOf(cd.Containerd.ConfigPath), dirOf(set.containerdConfig), "/var/lib/cni", "/usr", "/lib")
		for i, dir := range uniqueDirs(dirs...) {
			if mounted[dir] {
				continue
			}
			v := fmt.Sprintf("ro-%d", i)
			volumes = append(volumes, corev1.Volume{Name: v, VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: dir}}})
			mounts = append(mounts, corev1.VolumeMount{Name: v, MountPath: hostMount + dir, ReadOnly: true})
		}
	}

	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name:      name,
			Namespace: r.Config.Namespace,
			Labels: map[string]string{
				v1alpha1.LabelRemediation: nr.Name,
				v1alpha1.LabelComponent:   "executor",
				v1alpha1.LabelNode:        nr.Spec.NodeName,
			},
			Annotations: map[string]string{AnnotationPlan: string(planJSON)},
		},
		Spec: corev1.PodSpec{
			NodeName:      nr.Spec.NodeName,
			HostNetwork:   true, // it must run while the node's CNI is broken
			HostPID:       false,
			RestartPolicy: corev1.RestartPolicyNever,
			// No API credentials: the executor receives a typed plan and returns a typed result.
			AutomountServiceAccountToken: ptr.To(false),
			ServiceAccountName:           r.Config.ExecutorServiceAccount,
			PriorityClassName:            p.Spec.Executor.PriorityClassName,
			Tolerations:                  []corev1.Toleration{{Operator: corev1.TolerationOpExists}},
			Volumes:                      volumes,
			Containers: []corev1.Container{{
				Name:                     "executor",
				Image:                    image,
				ImagePullPolicy:          corev1.PullIfNotPresent,
				Args:                     args,
				VolumeMounts:             mounts,
				TerminationMessagePath:   terminationPath,
				TerminationMessagePolicy: corev1.TerminationMessageReadFile,
				SecurityContext: &corev1.SecurityContext{
					// Root, to talk to systemd and own its state dir; no capability beyond that: the privileged work
					// is done by the host-side run, as systemd's own transient unit.
					RunAsUser:                ptr.To(int64(0)),
					AllowPrivilegeEscalation: ptr.To(false),
					ReadOnlyRootFilesystem:   ptr.To(true),
					Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}, Add: []corev1.Capability{"DAC_OVERRIDE", "CHOWN", "FOWNER"}},
				},
				Resources: corev1.ResourceRequirements{},
			}},
		},
	}
	// Deleting the remediation deletes its pods.
	if err := controllerutil.SetOwnerReference(nr, pod, r.Client.Scheme()); err != nil {
		return nil, fmt.Errorf("making %s the owner of executor pod %s: %w", nr.Name, name, err)
	}
	return pod, nil
}

// diagnosisPod is the executor of a Diagnose action: the read-only diagnosis pod kubectl cnimedic diagnose runs,
// with the executor's labels (so that the manager watches it), name and owner, and its summary returned in the
// termination message as an executor result.
func (r *Reconciler) diagnosisPod(s *scope, name string) (*corev1.Pod, error) {
	nr, p := s.nr, s.policy
	image := nr.Status.ExecutorImage
	if image == "" {
		image = r.Config.ExecutorImage
	}
	// Only what the policy sets beyond the CRD's defaults is passed on: the remediator finds the node's layout
	// itself, and a default says nothing about the node.
	cd, units, def := p.Spec.Repair.Containerd, p.Spec.Repair.Units, policy.DefaultSpec().Repair
	if isDefault(cd.ConfigPath, def.Containerd.ConfigPath) {
		cd.ConfigPath = ""
	}
	if isDefault(units.Kubelet, def.Units.Kubelet) {
		units.Kubelet = ""
	}
	if isDefault(units.Runtime, def.Units.Runtime) {
		units.Runtime = ""
	}
	pod := diagnosepod.Pod(diagnosepod.Spec{
		Node: nr.Spec.NodeName, Namespace: r.Config.Namespace, Name: name,
		Labels: map[string]string{
			v1alpha1.LabelRemediation: nr.Name,
			v1alpha1.LabelComponent:   componentDiagnosis,
			v1alpha1.LabelNode:        nr.Spec.NodeName,
		},
		Image: image, ServiceAccount: r.Config.ExecutorServiceAccount, PriorityClass: p.Spec.Executor.PriorityClassName,
		ConfDir: cd.ConfDir, BinDir: cd.BinDir, ContainerdConfig: cd.ConfigPath,
		KubeletUnit: units.Kubelet, RuntimeUnit: units.Runtime,
		Output: "json", RemediationID: nr.Name,
	})
	if err := controllerutil.SetOwnerReference(nr, pod, r.Client.Scheme()); err != nil {
		return nil, fmt.Errorf("making %s the owner of diagnosis pod %s: %w", nr.Name, name, err)
	}
	return pod, nil
}

func dirOf(path string) string {
	if i := strings.LastIndex(path, "/"); i > 0 {
		return path[:i]
	}
	return "/"
}

func uniqueDirs(dirs ...string) []string {
	seen := map[string]bool{}
	var out []string
	for _, d := range dirs {
		if d != "" && !seen[d] {
			seen[d] = true
			out = append(out, d)
		}
	}
	return out
}

// podName is the name of the remediation's pod of this mode now: a repair's pod is per attempt; a remediation has
// one diagnosis, and one preview per plan digest (not attempts at a repair).
func (r *Reconciler) podName(s *scope, mode executorMode) string {
	nr := s.nr
	switch mode {
	case modeDiagnose:
		return executorPodName(nr, 0, mode)
	case modePlanPreview:
		digest := ""
		if nr.Status.Plan != nil {
			digest = v1alpha1.PlanDigest(*nr.Status.Plan)
		}
		return executorPodName(nr, 0, mode+executorMode("/"+digest))
	}
	if name := executorPodName(nr, nr.Status.Attempt, mode); nr.Status.ExecutorPod == name {
		return name
	}
	return executorPodName(nr, nr.Status.Attempt+1, mode)
}

// runExecutor makes sure the executor pod of this mode exists and reports its result once it ended (nil while the
// pod runs). A pod that vanished without a result is reported as lost. The returned pod is nil until one exists.
// awaitExecutor is its one caller.
func (r *Reconciler) runExecutor(ctx context.Context, s *scope, mode executorMode) (res *v1alpha1.ExecutorResult, pod *corev1.Pod, lost string, err error) {
	nr := s.nr
	// A diagnosis is not an attempt at a repair: a remediation has one, under a name of its own.
	counts := mode != modeDiagnose && mode != modePlanPreview
	name := r.podName(s, mode)
	pod = &corev1.Pod{}
	getErr := r.Client.Get(ctx, types.NamespacedName{Namespace: r.Config.Namespace, Name: name}, pod)
	switch {
	case apierrors.IsNotFound(getErr) && nr.Status.ExecutorPod == name:
		// Recorded, but not in the cache: ask the API server before calling it lost.
		if live := r.APIReader.Get(ctx, types.NamespacedName{Namespace: r.Config.Namespace, Name: name}, pod); apierrors.IsNotFound(live) {
			return nil, nil, fmt.Sprintf("executor pod %s/%s disappeared before it reported a result", r.Config.Namespace, name), nil
		} else if live != nil {
			return nil, nil, "", fmt.Errorf("reading executor pod %s/%s live: %w", r.Config.Namespace, name, live)
		}
	case apierrors.IsNotFound(getErr):
		newPod, err := r.executorPod(s, name, mode)
		if err != nil {
			return nil, nil, "", fmt.Errorf("building executor pod %s: %w", name, err)
		}
		if err := r.Client.Create(ctx, newPod); err != nil && !apierrors.IsAlreadyExists(err) {
			if apierrors.IsInvalid(err) || apierrors.IsForbidden(err) || apierrors.IsBadRequest(err) {
				// The API server will refuse it again: no executor can run (a missing priority class, a pod
				// security policy). Report it as a run that ended without a result.
				return &v1alpha1.ExecutorResult{RemediationID: nr.Name, Outcome: v1alpha1.OutcomeFailed,
					Message: fmt.Sprintf("nothing was changed on the node: the API server refused executor pod %s/%s: %v", r.Config.Namespace, name, err)}, nil, "", nil
			}
			return nil, nil, "", fmt.Errorf("creating executor pod %s/%s: %w", r.Config.Namespace, name, err)
		}
		if counts {
			nr.Status.Attempt++
		}
		nr.Status.ExecutorPod = name
		s.event(normal, ReasonExecutorStarted, actionRepair, fmt.Sprintf("started executor pod %s/%s (%s) on node %s", r.Config.Namespace, name, mode, nr.Spec.NodeName))
		return nil, newPod, "", nil
	case getErr != nil:
		return nil, nil, "", fmt.Errorf("getting executor pod %s/%s: %w", r.Config.Namespace, name, getErr)
	}
	if nr.Status.ExecutorPod != name { // created by a reconcile whose status write was lost
		if counts {
			nr.Status.Attempt++
		}
		nr.Status.ExecutorPod = name
	}
	switch pod.Status.Phase {
	case corev1.PodSucceeded, corev1.PodFailed:
	default:
		return nil, pod, "", nil
	}
	result, perr := terminationResult(pod)
	if perr != nil {
		return &v1alpha1.ExecutorResult{RemediationID: nr.Name, Outcome: v1alpha1.OutcomeFailed,
			Message: fmt.Sprintf("executor pod %s ended %s without a readable result: %v", name, pod.Status.Phase, perr)}, pod, "", nil
	}
	return result, pod, "", nil
}

// terminationResult reads the ExecutorResult from the executor container's termination message.
func terminationResult(pod *corev1.Pod) (*v1alpha1.ExecutorResult, error) {
	for _, cs := range pod.Status.ContainerStatuses {
		if (cs.Name != "executor" && cs.Name != diagnosepod.Container) || cs.State.Terminated == nil {
			continue
		}
		msg := cs.State.Terminated.Message
		if msg == "" {
			return nil, fmt.Errorf("empty termination message (exit code %d, reason %s)", cs.State.Terminated.ExitCode, cs.State.Terminated.Reason)
		}
		res := &v1alpha1.ExecutorResult{}
		if err := json.Unmarshal([]byte(msg), res); err != nil {
			return nil, fmt.Errorf("termination message is not a result: %w", err)
		}
		return res, nil
	}
	return nil, fmt.Errorf("no terminated executor container")
}
