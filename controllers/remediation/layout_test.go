package remediation

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
)

// Node layouts (issue 14). The diagnosis on the node reports its layout (v1alpha1.NodeLayout); here the tests' kubelet
// answers the diagnosis pod with it, as `remediator diagnose` does in the pod's termination message.

// k3sAgentLayout is a k3s agent as k3s's documentation lays it out (https://docs.k3s.io/advanced#configuring-containerd:
// containerd's config generated from config.toml.tmpl under /var/lib/rancher/k3s/agent/etc/containerd/, the CNI
// conf and bin dirs under /var/lib/rancher/k3s; https://docs.k3s.io/installation/configuration: one k3s-agent unit
// runs kubelet and containerd, whose socket is /run/k3s/containerd/containerd.sock).
func k3sAgentLayout() *v1alpha1.NodeLayout {
	return &v1alpha1.NodeLayout{Kind: v1alpha1.LayoutK3s, Role: "agent", Units: []string{"k3s-agent.service"},
		CRISocket:             "/run/k3s/containerd/containerd.sock",
		RuntimeConfig:         "/var/lib/rancher/k3s/agent/etc/containerd/config.toml",
		RuntimeConfigTemplate: "/var/lib/rancher/k3s/agent/etc/containerd/config.toml.tmpl",
		ConfDir:               "/var/lib/rancher/k3s/agent/etc/cni/net.d",
		BinDirs:               []string{"/var/lib/rancher/k3s/data/current/bin"},
		StandardConfDir:       "/var/lib/rancher/k3s/agent/etc/cni/net.d",
		StandardBinDirs:       []string{"/var/lib/rancher/k3s/data/current/bin"},
		HostPaths:             []string{"/run/k3s/containerd"},
		Servable:              true}
}

// kubeadmLayout is the layout every node had before layouts were reported: the policy's defaults.
func kubeadmLayout() *v1alpha1.NodeLayout {
	return &v1alpha1.NodeLayout{Kind: v1alpha1.LayoutKubeadm, Units: []string{"kubelet.service", "containerd.service"},
		CRISocket: "/run/containerd/containerd.sock", RuntimeConfig: "/etc/containerd/config.toml", ConfDir: "/etc/cni/net.d",
		BinDirs: []string{"/opt/cni/bin"}, StandardConfDir: "/etc/cni/net.d", StandardBinDirs: []string{"/opt/cni/bin"},
		HostPaths: []string{"/run/containerd"}, Servable: true}
}

// withLayout is a diagnosis that confirms the remediation's signature and reports the layout.
func (h *harness) withLayout(l *v1alpha1.NodeLayout) func(*corev1.Pod) *v1alpha1.ExecutorResult {
	return func(pod *corev1.Pod) *v1alpha1.ExecutorResult {
		res := h.confirms(pod)
		if res != nil {
			res.Layout = l
		}
		return res
	}
}

// hostPathsOf lists a pod's host paths in order, and says where each is mounted and whether read-only.
func hostPathsOf(pod corev1.Pod) (paths []string, mounts []string) {
	byVolume := map[string]string{}
	for _, v := range pod.Spec.Volumes {
		if v.HostPath != nil {
			paths = append(paths, v.HostPath.Path)
			byVolume[v.Name] = v.HostPath.Path
		}
	}
	for _, m := range pod.Spec.Containers[0].VolumeMounts {
		if p, ok := byVolume[m.Name]; ok {
			mounts = append(mounts, fmt.Sprintf("%s at %s ro=%v", p, m.MountPath, m.ReadOnly))
		}
	}
	return paths, mounts
}

func (h *harness) onlyExecutorPod(nr string) corev1.Pod {
	h.t.Helper()
	var pod corev1.Pod
	h.eventually(func() error {
		pods := h.executorPods(nr)
		if len(pods) != 1 {
			return fmt.Errorf("%d executor pods", len(pods))
		}
		pod = pods[0]
		return nil
	}, "the executor pod of %s", nr)
	return pod
}

// TestAnUnservableLayoutEscalatesWithoutACordonOrAnExecutorPod: the node confirms the failure, but its layout is one
// cnimedic recognises and does not repair (CRI-O): under an Automatic policy the remediation ends Escalated with the
// layout's reason, the layout recorded, the node never cordoned and no executor pod.
func TestAnUnservableLayoutEscalatesWithoutACordonOrAnExecutorPod(t *testing.T) {
	h := newHarness(t, "unservable")
	node := h.node("w1")
	p := h.policy("p", nil) // Automatic
	crio := &v1alpha1.NodeLayout{Kind: v1alpha1.LayoutCRIO, Units: []string{"kubelet.service", "crio.service"}, CRISocket: "/var/run/crio/crio.sock",
		ConfDir: "/etc/cni/net.d", Servable: false, Reason: "the runtime is CRI-O (crio.service), whose configuration no repair of cnimedic edits"}
	h.runKubelet(kubelet{outcome: succeeded, diagnosis: h.withLayout(crio)})
	nr := h.remediation("nr", node.Name, p, v1alpha1.SignatureCNIVersionIncompatible)

	done := h.waitPhase(nr.Name, v1alpha1.PhaseEscalated)
	if done.Status.Reason != ReasonLayoutNotServable || !strings.Contains(done.Status.Message, crio.Reason) || !strings.Contains(done.Status.Message, "never cordoned") {
		t.Errorf("reason %s: %q; want LayoutNotServable with the layout's reason", done.Status.Reason, done.Status.Message)
	}
	if got := phases(done); !slices.Equal(got, []v1alpha1.Phase{v1alpha1.PhaseDetected, v1alpha1.PhaseDiagnosing, v1alpha1.PhaseEscalated}) {
		t.Errorf("history %v", got)
	}
	if d := done.Status.Diagnosis; d == nil || d.Layout == nil || d.Layout.Kind != v1alpha1.LayoutCRIO || d.Layout.Servable || d.Layout.Reason != crio.Reason {
		t.Errorf("diagnosis %+v: want the layout recorded", d)
	}
	if done.Status.Approval != nil {
		t.Error("a remediation of an unservable node was approved")
	}
	h.assertUntouched(node.Name, nr.Name)
}

// TestAWindowsNodeGetsNoPodAndIsEscalatedAtOnce: a node whose kubelet says it runs Windows gets neither the Linux
// diagnosis pod nor an executor pod, even under a policy that covers it: the remediation escalates at once, saying
// why.
func TestAWindowsNodeGetsNoPodAndIsEscalatedAtOnce(t *testing.T) {
	h := newHarness(t, "windows")
	node := h.node("w1", func(n *corev1.Node) { n.Labels["kubernetes.io/os"] = "windows" })
	p := h.policy("p", nil) // Automatic, its selector covers the test's nodes
	h.runKubelet(kubelet{outcome: succeeded})
	nr := h.remediation("nr", node.Name, p, v1alpha1.SignatureCNIVersionIncompatible)

	done := h.waitPhase(nr.Name, v1alpha1.PhaseEscalated)
	if done.Status.Reason != ReasonNodeNotLinux || !strings.Contains(done.Status.Message, "windows") {
		t.Errorf("reason %s: %q; want NodeNotLinux naming the OS", done.Status.Reason, done.Status.Message)
	}
	if got := phases(done); !slices.Equal(got, []v1alpha1.Phase{v1alpha1.PhaseDetected, v1alpha1.PhaseEscalated}) {
		t.Errorf("history %v: want an escalation at once", got)
	}
	time.Sleep(300 * time.Millisecond) // what a late reconcile would start
	if pods := h.podsOf(nr.Name, componentDiagnosis); len(pods) != 0 {
		t.Errorf("%d diagnosis pods on a Windows node", len(pods))
	}
	h.assertUntouched(node.Name, nr.Name)
}

// TestTheExecutorOfAK3sLayoutMountsExactlyItsHostPathsAndCarriesItsUnitsAndSocket: on a k3s agent the executor pod
// mounts the layout's runtime socket dir (not /run/containerd, which a k3s node lacks and where the pod would never
// start), and is told the one unit that runs kubelet and containerd, k3s's CRI socket, config and CNI dirs; the plan
// stops and starts that unit. The policy is the default one: its kubeadm defaults say nothing about the node.
func TestTheExecutorOfAK3sLayoutMountsExactlyItsHostPathsAndCarriesItsUnitsAndSocket(t *testing.T) {
	h := newHarness(t, "k3s")
	node := h.node("w1")
	p := h.policy("p", nil)
	l := k3sAgentLayout()
	h.runKubelet(kubelet{diagnosis: h.withLayout(l)}) // executor pods stay pending: the test reads them
	nr := h.remediation("nr", node.Name, p, v1alpha1.SignatureCNIVersionMissing)

	pod := h.onlyExecutorPod(nr.Name)
	paths, mounts := hostPathsOf(pod)
	if want := []string{"/var/lib/cnimedic", "/run/dbus", "/run/k3s/containerd"}; !slices.Equal(paths, want) {
		t.Errorf("host paths %v, want exactly %v (the state dir, D-Bus and the layout's)", paths, want)
	}
	if !slices.Contains(mounts, "/run/k3s/containerd at /host/run/k3s/containerd ro=false") {
		t.Errorf("mounts %v", mounts)
	}
	for _, v := range pod.Spec.Volumes {
		if v.HostPath != nil && (v.HostPath.Type == nil || *v.HostPath.Type == corev1.HostPathDirectoryOrCreate) && v.HostPath.Path != "/var/lib/cnimedic" {
			t.Errorf("host path %s may be created on the node: only cnimedic's own state dir may", v.HostPath.Path)
		}
	}
	args := pod.Spec.Containers[0].Args
	for _, want := range []string{"--kubelet-unit=k3s-agent.service", "--runtime-unit=k3s-agent.service",
		"--cri-socket=/run/k3s/containerd/containerd.sock", "--containerd-config=/var/lib/rancher/k3s/agent/etc/containerd/config.toml",
		"--conf-dir=/var/lib/rancher/k3s/agent/etc/cni/net.d", "--bin-dir=/var/lib/rancher/k3s/data/current/bin"} {
		if !slices.Contains(args, want) {
			t.Errorf("args %v lack %s", args, want)
		}
	}
	got := h.get(nr.Name)
	for _, st := range got.Status.Plan.Steps {
		if (st.Type == v1alpha1.StepStopUnit || st.Type == v1alpha1.StepStartUnit) && st.Unit != "k3s-agent.service" {
			t.Errorf("plan step %s %s: want only k3s-agent.service stopped and started", st.Type, st.Unit)
		}
	}
	if d := got.Status.Diagnosis; d == nil || d.Layout == nil || d.Layout.Kind != v1alpha1.LayoutK3s || d.Layout.CRISocket != l.CRISocket {
		t.Errorf("diagnosis %+v: want the k3s layout recorded", d)
	}
}

// TestARuntimeConfigRepairOnAK3sLayoutEditsTheTemplate: k3s writes containerd's config.toml anew from its template
// at every start, so the plan that repairs containerd's CNI settings edits the template, with k3s's own CNI dirs as
// the wanted values (not the policy's kubeadm defaults); the executor does not pin the dirs it is about to rewrite.
func TestARuntimeConfigRepairOnAK3sLayoutEditsTheTemplate(t *testing.T) {
	h := newHarness(t, "k3stmpl")
	node := h.node("w1")
	p := h.policy("p", nil)
	l := k3sAgentLayout()
	// The runtime reads an empty dir now (the failure): the repair points it back to k3s's own, not to the dir it reads.
	l.ConfDir = "/var/lib/rancher/k3s/agent/etc/cni/elsewhere"
	h.runKubelet(kubelet{diagnosis: h.withLayout(l)})
	nr := h.remediation("nr", node.Name, p, v1alpha1.SignatureCNINotInitialized)

	pod := h.onlyExecutorPod(nr.Name)
	got := h.get(nr.Name)
	i := slices.IndexFunc(got.Status.Plan.Steps, func(s v1alpha1.PlanStep) bool { return s.Type == v1alpha1.StepRepairRuntimeCNIConfig })
	if i < 0 {
		t.Fatalf("plan %+v has no RepairRuntimeCNIConfig", got.Status.Plan)
	}
	rt := got.Status.Plan.Steps[i].Runtime
	if rt.ConfigPath != l.RuntimeConfigTemplate || rt.ConfDir != l.StandardConfDir || rt.BinDir != l.StandardBinDirs[0] {
		t.Errorf("runtime settings %+v: want the template edited to k3s's standard dirs", rt)
	}
	args := pod.Spec.Containers[0].Args
	if !slices.Contains(args, "--containerd-config="+l.RuntimeConfig) || slices.ContainsFunc(args, func(a string) bool {
		return strings.HasPrefix(a, "--conf-dir=") || strings.HasPrefix(a, "--bin-dir=")
	}) {
		t.Errorf("args %v: want the running config named and the dirs read back from it", args)
	}
}

// TestAKubeadmLayoutRunsTheSameExecutorAsNoLayout: a node that reports the kubeadm layout gets the same plan and the
// same executor pod (host paths, mounts, flags) as one whose older remediator reported no layout.
func TestAKubeadmLayoutRunsTheSameExecutorAsNoLayout(t *testing.T) {
	h := newHarness(t, "kubeadm")
	old, kubeadm := h.node("old"), h.node("kubeadm")
	p := h.policy("p", func(s *v1alpha1.RemediationPolicySpec) { s.MaxConcurrent = ptr.To(intstr.FromInt32(2)) })
	h.runKubelet(kubelet{diagnosis: func(pod *corev1.Pod) *v1alpha1.ExecutorResult {
		if pod.Spec.NodeName == kubeadm.Name {
			return h.withLayout(kubeadmLayout())(pod)
		}
		return h.confirms(pod)
	}})
	before := h.remediation("nr-old", old.Name, p, v1alpha1.SignatureCNIVersionMissing)
	after := h.remediation("nr-kubeadm", kubeadm.Name, p, v1alpha1.SignatureCNIVersionMissing)
	podBefore := h.onlyExecutorPod(before.Name)
	podAfter := h.onlyExecutorPod(after.Name)

	if a, b := h.get(before.Name).Status.Plan, h.get(after.Name).Status.Plan; v1alpha1.PlanDigest(*a) != v1alpha1.PlanDigest(*b) {
		t.Errorf("plans differ: %+v and %+v", a, b)
	}
	pathsBefore, mountsBefore := hostPathsOf(podBefore)
	pathsAfter, mountsAfter := hostPathsOf(podAfter)
	if !slices.Equal(pathsBefore, pathsAfter) || !slices.Equal(mountsBefore, mountsAfter) {
		t.Errorf("host paths %v mounted %v, before layouts %v mounted %v", pathsAfter, mountsAfter, pathsBefore, mountsBefore)
	}
	if want := []string{"/var/lib/cnimedic", "/run/dbus", "/run/containerd"}; !slices.Equal(pathsAfter, want) {
		t.Errorf("host paths %v, want %v", pathsAfter, want)
	}
	strip := func(args []string) []string {
		return slices.DeleteFunc(slices.Clone(args), func(a string) bool { return strings.HasPrefix(a, "--remediation-id=") })
	}
	if a, b := strip(podBefore.Spec.Containers[0].Args), strip(podAfter.Spec.Containers[0].Args); !slices.Equal(a, b) {
		t.Errorf("args %v, before layouts %v", b, a)
	}
}

// TestAPolicyUnitThatContradictsTheLayoutIsReportedAndItsValueRuns: the policy's own unit names still override the
// layout, but not silently: an event says which setting contradicts the node, and the executor gets the policy's.
func TestAPolicyUnitThatContradictsTheLayoutIsReportedAndItsValueRuns(t *testing.T) {
	h := newHarness(t, "conflict")
	node := h.node("w1")
	p := h.policy("p", func(s *v1alpha1.RemediationPolicySpec) {
		s.Repair.Units.Kubelet, s.Repair.Units.Runtime = "k3s.service", "k3s.service"
	})
	l := k3sAgentLayout()
	// What the diagnosis saw at odds with the policy's flags, in its own words: reported too.
	l.Reason = "--kubelet-unit k3s.service is not loaded on this node; k3s-agent.service runs kubelet"
	h.runKubelet(kubelet{diagnosis: h.withLayout(l)})
	nr := h.remediation("nr", node.Name, p, v1alpha1.SignatureCNIVersionMissing)

	pod := h.onlyExecutorPod(nr.Name)
	h.eventOn(nr.Name, ReasonLayoutConflict, "spec.repair.units.kubelet is k3s.service where the node's layout has k3s-agent.service")
	h.eventOn(nr.Name, ReasonLayoutConflict, l.Reason)
	args := pod.Spec.Containers[0].Args
	if !slices.Contains(args, "--kubelet-unit=k3s.service") || !slices.Contains(args, "--runtime-unit=k3s.service") {
		t.Errorf("args %v: want the policy's units", args)
	}
}

// TestALayoutWhoseHostPathsReachBeyondItsDirectoriesIsNotServed: the executor pod mounts the host paths a diagnosis
// reports, so the manager refuses the ones no layout has: the host's root, a top-level directory, the kernel's
// filesystems, a path with "..". Each ends Escalated before any cordon, with no executor pod.
func TestALayoutWhoseHostPathsReachBeyondItsDirectoriesIsNotServed(t *testing.T) {
	for i, bad := range []string{"/", "/etc", "/proc/1", "/run/k3s/../../etc"} {
		t.Run(bad, func(t *testing.T) {
			h := newHarness(t, fmt.Sprintf("badpath%d", i))
			node := h.node("w1")
			p := h.policy("p", nil)
			l := k3sAgentLayout()
			l.HostPaths = append(l.HostPaths, bad)
			h.runKubelet(kubelet{outcome: succeeded, diagnosis: h.withLayout(l)})
			nr := h.remediation("nr", node.Name, p, v1alpha1.SignatureCNIVersionMissing)
			done := h.waitPhase(nr.Name, v1alpha1.PhaseEscalated)
			if done.Status.Reason != ReasonLayoutNotServable || !strings.Contains(done.Status.Message, bad) {
				t.Errorf("reason %s: %q; want LayoutNotServable naming %s", done.Status.Reason, done.Status.Message, bad)
			}
			h.assertUntouched(node.Name, nr.Name)
		})
	}
}
