// Package diagnosepod builds the pod that runs the remediator's read-only diagnosis (`remediator diagnose`) on a
// node. Two callers use it: `kubectl cnimedic diagnose NODE`, which prints the report from the pod's log, and the
// workflow, for a custom signature whose action is Diagnose, which reads a summary from the termination message.
//
// The pod is shaped like the executor pod (design.md, executor contract): hostNetwork because the node's CNI may be
// broken, pinned by nodeName, tolerating every taint, no API credentials. Unlike the executor it mounts the host
// paths read-only and has no capability that writes: a diagnosis changes nothing. The package imports no remediator
// package (those build on Linux only; the kubectl plugin also runs on macOS and Windows).
package diagnosepod

import (
	"fmt"
	"path"

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
	// TerminationMessagePath is where the remediator writes its summary when Spec.RemediationID is set.
	TerminationMessagePath = "/dev/termination-log"
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
	hostDirectory := corev1.HostPathDirectory
	type hostDir struct {
		path string
		// must exist: the pod waits rather than have the runtime create an empty directory in its place.
		mustExist bool
	}
	// Each host path once, in a stable order. The CNI paths' type is left unset, as in the executor's preview: the
	// pod must start on a node that lacks one (the runtime then creates it empty, and the diagnosis reports an
	// empty dir, which names the same failure).
	//
	// The host's /usr and /lib hold the dynamic loader and libraries of plugins that distributions link dynamically
	// (Debian's): the remediator runs those through the host's loader, as the pod's static image has none.
	dirs := []hostDir{{s.ConfDir, false}, {s.BinDir, false}, {path.Dir(s.ContainerdConfig), false}, {"/var/lib/cni", false},
		{"/run/containerd", true}, {"/run/dbus", true}, {"/usr", true}, {"/lib", true}}
	seen := map[string]bool{}
	var volumes []corev1.Volume
	var mounts []corev1.VolumeMount
	for _, d := range dirs {
		if d.path == "" || seen[d.path] {
			continue
		}
		seen[d.path] = true
		name := fmt.Sprintf("host-%d", len(volumes))
		src := &corev1.HostPathVolumeSource{Path: d.path}
		if d.mustExist {
			src.Type = &hostDirectory
		}
		volumes = append(volumes, corev1.Volume{Name: name, VolumeSource: corev1.VolumeSource{HostPath: src}})
		mounts = append(mounts, corev1.VolumeMount{Name: name, MountPath: HostRoot + d.path, ReadOnly: true})
	}
	args := []string{
		"diagnose", "-o", s.Output,
		"--host-root=" + HostRoot,
		"--dbus-address=unix:path=" + HostRoot + "/run/dbus/system_bus_socket",
		"--containerd-config=" + s.ContainerdConfig,
	}
	// The conf and bin dirs are left to the remediator when they are the defaults: it reads them from
	// containerd's config.toml, which is where a misconfigured node differs.
	if s.ConfDir != DefaultConfDir {
		args = append(args, "--conf-dir="+s.ConfDir)
	}
	if s.BinDir != DefaultBinDir {
		args = append(args, "--bin-dir="+s.BinDir)
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
	if s.RemediationID != "" {
		ctr.Args = append(ctr.Args, "--remediation-id="+s.RemediationID, "--termination-message-path="+TerminationMessagePath)
		ctr.TerminationMessagePath = TerminationMessagePath
		ctr.TerminationMessagePolicy = corev1.TerminationMessageReadFile
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: s.Name, GenerateName: s.GenerateName, Namespace: s.Namespace, Labels: s.Labels},
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
