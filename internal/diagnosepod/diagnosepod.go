// Package diagnosepod builds the pod that runs the remediator's read-only diagnosis (`remediator diagnose`) on a
// node. Two callers use it: `kubectl cnimedic diagnose NODE`, which prints the report from the pod's log, and the
// workflow, for a custom signature whose action is Diagnose, which reads a summary from the termination message.
// The workflow also runs the read-only preview of a plan in it (ModePlan: `remediator plan --plan`), so that an
// approver sees the exact diff on the node before approving.
//
// The pod is shaped like the executor pod (design.md, executor contract): hostNetwork because the node's CNI may be
// broken, pinned by nodeName, tolerating every taint, no API credentials. Unlike the executor it mounts the host
// read-only and has no capability that writes: a diagnosis changes nothing. The package imports no remediator
// package (those build on Linux only; the kubectl plugin also runs on macOS and Windows).
package diagnosepod

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

// The remediator's defaults of the node paths (remediator/runtimecfg, remediator/cri).
const (
	DefaultConfDir          = "/etc/cni/net.d"
	DefaultBinDir           = "/opt/cni/bin"
	DefaultContainerdConfig = "/etc/containerd/config.toml"
)

const (
	// HostRoot is where the host's paths appear inside the pod.
	HostRoot = "/host"
	// Container is the name of the pod's one container.
	Container = "diagnose"
	// TerminationMessagePath is where the remediator writes its summary when Spec.RemediationID is set, and its
	// preview in ModePlan.
	TerminationMessagePath = "/dev/termination-log"
	// PlanAnnotation carries the plan on a ModePlan pod; the downward API turns it into the plan file.
	PlanAnnotation = "cnimedic.io/plan"
	// planDir and planFile are where the plan file appears in a ModePlan pod.
	planDir  = "/etc/cnimedic"
	planFile = "plan.json"
	// hostVolume is the host root's volume.
	hostVolume = "host"
)

// Mode is what the pod runs. Both modes are read-only.
type Mode string

const (
	// ModeDiagnose runs `remediator diagnose` (the default).
	ModeDiagnose Mode = ""
	// ModePlan runs `remediator plan --plan` on Spec.Plan: what the plan would change on the node, resolved there
	// with the same allowlist as apply, returned in the termination message.
	ModePlan Mode = "plan"
)

// Spec is what the pod is made from.
type Spec struct {
	Node      string
	Namespace string
	// Name, or GenerateName when Name is empty.
	Name         string
	GenerateName string
	Labels       map[string]string

	Image          string
	ServiceAccount string
	PriorityClass  string

	ConfDir          string
	BinDir           string
	ContainerdConfig string
	// KubeletUnit and RuntimeUnit are the systemd units whose state is reported ("" for the remediator's default).
	KubeletUnit string
	RuntimeUnit string

	// Mode is what the pod runs (ModeDiagnose when empty).
	Mode Mode
	// Plan is the plan's JSON, for ModePlan: carried in the pod's annotation and read as a file.
	Plan string
	// For ModePlan, what the executor of the plan is told: more plugin dirs after BinDir, and the runtime's socket
	// ("" for the remediator's default), which a preview asks the runtime's version through.
	MoreBinDirs []string
	CRISocket   string

	// Output is the report's format on the pod's log: json or text.
	Output string
	// RemediationID, when set, makes the remediator also write a summary of its findings, as an executor result of
	// that remediation, to the termination message.
	RemediationID string
	// ActiveDeadline bounds the pod's life even if whoever made it is gone (0: no bound).
	ActiveDeadline int64
}

// Pod builds the pod. It is a pure function of the spec, so that its safety properties are unit-tested.
func Pod(s Spec) *corev1.Pod {
	// The host's root, read-only (recursively, where kubelet and the runtime can make the mounts under it read-only
	// too), and nothing else: it exists on every node, whatever its layout (kubeadm's /run/containerd, k3s's
	// /run/k3s/containerd, CRI-O's /etc/crio, a node without systemd's D-Bus), so the pod starts on any Linux node
	// and the remediator finds the layout itself (issue 14). Mounting the layout's dirs one by one would have the
	// runtime create the missing ones empty on the host, or keep the pod from starting. What the remediator reads
	// under it is its own allowlist's business (the CNI and runtime roots).
	//
	// The host's /usr and /lib under it hold the dynamic loader and libraries of plugins that distributions link
	// dynamically (Debian's): the remediator runs those through the host's loader, as the pod's static image has none.
	hostDirectory := corev1.HostPathDirectory
	volumes := []corev1.Volume{{Name: hostVolume, VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/", Type: &hostDirectory}}}}
	mounts := []corev1.VolumeMount{{Name: hostVolume, MountPath: HostRoot, ReadOnly: true, RecursiveReadOnly: ptr.To(corev1.RecursiveReadOnlyIfPossible)}}
	command := []string{"diagnose"}
	var annotations map[string]string
	if s.Mode == ModePlan {
		command = []string{"plan", "--plan=" + planDir + "/" + planFile}
		annotations = map[string]string{PlanAnnotation: s.Plan}
		volumes = append(volumes, corev1.Volume{Name: "plan", VolumeSource: corev1.VolumeSource{DownwardAPI: &corev1.DownwardAPIVolumeSource{
			Items: []corev1.DownwardAPIVolumeFile{{Path: planFile, FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.annotations['" + PlanAnnotation + "']"}}}}}})
		mounts = append(mounts, corev1.VolumeMount{Name: "plan", MountPath: planDir, ReadOnly: true})
	}
	args := append(command, "-o", s.Output)
	args = append(args,
		"--host-root="+HostRoot,
		"--dbus-address=unix:path="+HostRoot+"/run/dbus/system_bus_socket",
	)
	// The runtime's config is left to the remediator when it is the default (or unset): it finds it from the node's
	// layout.
	if s.ContainerdConfig != "" && s.ContainerdConfig != DefaultContainerdConfig {
		args = append(args, "--containerd-config="+s.ContainerdConfig)
	}
	// The conf and bin dirs are left to the remediator when they are the defaults: it reads them from
	// containerd's config.toml, which is where a misconfigured node differs.
	if s.ConfDir != "" && s.ConfDir != DefaultConfDir {
		args = append(args, "--conf-dir="+s.ConfDir)
	}
	if s.BinDir != "" && s.BinDir != DefaultBinDir {
		args = append(args, "--bin-dir="+s.BinDir)
	}
	for _, d := range s.MoreBinDirs {
		args = append(args, "--bin-dir="+d)
	}
	if s.CRISocket != "" {
		args = append(args, "--cri-socket="+s.CRISocket)
	}
	if s.KubeletUnit != "" {
		args = append(args, "--kubelet-unit="+s.KubeletUnit)
	}
	if s.RuntimeUnit != "" {
		args = append(args, "--runtime-unit="+s.RuntimeUnit)
	}
	ctr := corev1.Container{
		Name:            Container,
		Image:           s.Image,
		ImagePullPolicy: corev1.PullIfNotPresent,
		Args:            args,
		VolumeMounts:    mounts,
		SecurityContext: &corev1.SecurityContext{
			// Root to reach systemd and containerd's sockets; DAC_READ_SEARCH to read root-only files in the CNI
			// dirs. Nothing that writes: every mount is read-only and the root filesystem too.
			RunAsUser:                ptr.To(int64(0)),
			AllowPrivilegeEscalation: ptr.To(false),
			ReadOnlyRootFilesystem:   ptr.To(true),
			Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}, Add: []corev1.Capability{"DAC_READ_SEARCH"}},
		},
	}
	switch {
	case s.Mode == ModePlan:
		// The preview as an executor result (`remediator plan` takes no remediation id).
		ctr.Args = append(ctr.Args, "--termination-message-path="+TerminationMessagePath)
	case s.RemediationID != "":
		ctr.Args = append(ctr.Args, "--remediation-id="+s.RemediationID, "--termination-message-path="+TerminationMessagePath)
	}
	if s.Mode == ModePlan || s.RemediationID != "" {
		ctr.TerminationMessagePath = TerminationMessagePath
		ctr.TerminationMessagePolicy = corev1.TerminationMessageReadFile
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: s.Name, GenerateName: s.GenerateName, Namespace: s.Namespace, Labels: s.Labels, Annotations: annotations},
		Spec: corev1.PodSpec{
			NodeName:                     s.Node,
			HostNetwork:                  true, // it must run while the node's CNI is broken
			RestartPolicy:                corev1.RestartPolicyNever,
			AutomountServiceAccountToken: ptr.To(false),
			ServiceAccountName:           s.ServiceAccount,
			PriorityClassName:            s.PriorityClass,
			Tolerations:                  []corev1.Toleration{{Operator: corev1.TolerationOpExists}},
			Volumes:                      volumes,
			Containers:                   []corev1.Container{ctr},
		},
	}
	if s.ActiveDeadline > 0 {
		pod.Spec.ActiveDeadlineSeconds = ptr.To(s.ActiveDeadline)
	}
	return pod
}
