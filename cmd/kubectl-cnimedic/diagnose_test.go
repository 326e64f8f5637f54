package main

import (
	"bytes"
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	schedulingv1 "k8s.io/api/scheduling/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
	"github.com/cnimedic/cnimedic/internal/diagnosepod"
)

func testDiagnoseSpec() diagnoseSpec {
	return diagnoseSpec{Spec: diagnosepod.Spec{Node: "w1", Namespace: "cnimedic-system", Image: "cnimedic.local/executor:dev", ServiceAccount: "cnimedic-executor",
		PriorityClass: "cnimedic-executor", ConfDir: defaultConfDir, BinDir: defaultBinDir, ContainerdConfig: defaultContainerdConfig,
		Output: outputJSON}, Timeout: time.Minute}
}

// TestDiagnosePodIsExecutorShapedAndReadOnly checks the pod against the executor contract (docs/executor.md): it runs
// while CNI is broken, on that node whatever its taints, without API credentials, and it can change nothing.
func TestDiagnosePodIsExecutorShapedAndReadOnly(t *testing.T) {
	pod := diagnosePod(testDiagnoseSpec())
	spec := pod.Spec
	if !spec.HostNetwork || spec.NodeName != "w1" || spec.RestartPolicy != corev1.RestartPolicyNever {
		t.Errorf("hostNetwork %v, nodeName %q, restartPolicy %s", spec.HostNetwork, spec.NodeName, spec.RestartPolicy)
	}
	if len(spec.Tolerations) != 1 || spec.Tolerations[0].Operator != corev1.TolerationOpExists || spec.Tolerations[0].Key != "" {
		t.Errorf("the pod must tolerate every taint: %+v", spec.Tolerations)
	}
	if spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken {
		t.Error("the pod must not mount API credentials")
	}
	if spec.ActiveDeadlineSeconds == nil || *spec.ActiveDeadlineSeconds <= 60 {
		t.Errorf("the pod's life must be bounded beyond the wait: %v", spec.ActiveDeadlineSeconds)
	}
	if _, ok := pod.Labels[v1alpha1.LabelRemediation]; ok {
		t.Error("a diagnose pod must not carry the label the manager's executor watch uses")
	}

	ctr := spec.Containers[0]
	// The defaults are not passed: the remediator finds the node's layout itself (issue 14).
	wantArgs := []string{"diagnose", "-o", "json", "--host-root=/host", "--dbus-address=unix:path=/host/run/dbus/system_bus_socket"}
	if !slices.Equal(ctr.Args, wantArgs) {
		t.Errorf("args %q, want %q", ctr.Args, wantArgs)
	}
	sc := ctr.SecurityContext
	if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
		sc.Privileged != nil && *sc.Privileged || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) ||
		!slices.Equal(sc.Capabilities.Add, []corev1.Capability{"DAC_READ_SEARCH"}) {
		t.Errorf("security context %+v", sc)
	}

	assertMountsOnlyTheHostRootReadOnly(t, pod)
}

// assertMountsOnlyTheHostRootReadOnly: the one host path is the host's root, which every node has whatever its
// layout (k3s has no /run/containerd, a node without systemd no /run/dbus), mounted read-only and, where kubelet and
// the runtime can, recursively so; it must exist (the runtime never creates it).
func assertMountsOnlyTheHostRootReadOnly(t *testing.T, pod *corev1.Pod) {
	t.Helper()
	spec, ctr := pod.Spec, pod.Spec.Containers[0]
	if len(spec.Volumes) != 1 || spec.Volumes[0].HostPath == nil || spec.Volumes[0].HostPath.Path != "/" ||
		spec.Volumes[0].HostPath.Type == nil || *spec.Volumes[0].HostPath.Type != corev1.HostPathDirectory {
		t.Fatalf("volumes %+v, want only the host's root as an existing directory", spec.Volumes)
	}
	if len(ctr.VolumeMounts) != 1 {
		t.Fatalf("mounts %+v, want one", ctr.VolumeMounts)
	}
	m := ctr.VolumeMounts[0]
	if m.Name != spec.Volumes[0].Name || m.MountPath != "/host" || !m.ReadOnly || m.RecursiveReadOnly == nil ||
		*m.RecursiveReadOnly != corev1.RecursiveReadOnlyIfPossible || m.MountPropagation != nil {
		t.Errorf("mount %+v, want the host root at /host, read-only, recursively where possible", m)
	}
}

// TestDiagnosePodFollowsTheNodesPaths: other conf and bin dirs are passed on; the pod still mounts only the host's
// root, under which they are.
func TestDiagnosePodFollowsTheNodesPaths(t *testing.T) {
	s := testDiagnoseSpec()
	s.ConfDir, s.BinDir, s.ContainerdConfig, s.Output = "/etc/k8s/cni", "/etc/k8s/cni", "/etc/k8s/containerd.toml", "text"
	pod := diagnosePod(s)
	args := strings.Join(pod.Spec.Containers[0].Args, " ")
	for _, want := range []string{"-o text", "--conf-dir=/etc/k8s/cni", "--bin-dir=/etc/k8s/cni", "--containerd-config=/etc/k8s/containerd.toml"} {
		if !strings.Contains(args, want) {
			t.Errorf("args %q lack %q", args, want)
		}
	}
	assertMountsOnlyTheHostRootReadOnly(t, pod)
}

// TestDiagnosePodIsAcceptedByTheAPIServer creates the pod in a real API server, with the executor's ServiceAccount
// and PriorityClass as deploy/ ships them, so that a field the API server rejects cannot hide behind the unit test.
func TestDiagnosePodIsAcceptedByTheAPIServer(t *testing.T) {
	f, _ := newFixture(t)
	f.namespace("cnimedic-system")
	for _, obj := range []client.Object{
		&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "cnimedic-executor", Namespace: "cnimedic-system"}, AutomountServiceAccountToken: new(bool)},
		&schedulingv1.PriorityClass{ObjectMeta: metav1.ObjectMeta{Name: "cnimedic-executor"}, Value: 1000000000},
	} {
		if err := f.c.Create(f.ctx, obj); client.IgnoreAlreadyExists(err) != nil {
			t.Fatal(err)
		}
	}
	pod := diagnosePod(testDiagnoseSpec())
	if err := f.c.Create(f.ctx, pod); err != nil {
		t.Fatalf("the API server refused the diagnose pod: %v", err)
	}
	t.Cleanup(func() { _ = f.c.Delete(context.Background(), pod) })
	if !strings.HasPrefix(pod.Name, "cnimedic-diagnose-") || pod.Spec.Priority == nil || *pod.Spec.Priority != 1000000000 {
		t.Errorf("created %s with priority %v", pod.Name, pod.Spec.Priority)
	}
}

// TestDiagnoseImageComesFromTheManager reads --executor-image from the manager Deployment, as config/manager ships
// it, and falls back when there is none.
func TestDiagnoseImageComesFromTheManager(t *testing.T) {
	f, _ := newFixture(t)
	env, _ := apiServer(t)
	kube, err := kubernetes.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	f.namespace("diag-manager")
	if got := managerExecutorImage(f.ctx, kube, "diag-manager"); got != defaultExecutorImage {
		t.Errorf("without a manager: %q", got)
	}
	labels := map[string]string{"app.kubernetes.io/name": "cnimedic", "app.kubernetes.io/component": "manager"}
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "cnimedic-manager", Namespace: "diag-manager", Labels: labels},
		Spec: appsv1.DeploymentSpec{
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: corev1.PodSpec{Containers: []corev1.Container{{
				Name: "manager", Image: "cnimedic.local/manager:dev", Args: []string{"--leader-elect", "--executor-image", "registry.example/executor:v1"},
			}}}},
		},
	}
	if err := f.c.Create(f.ctx, dep); err != nil {
		t.Fatal(err)
	}
	if got := managerExecutorImage(f.ctx, kube, "diag-manager"); got != "registry.example/executor:v1" {
		t.Errorf("with a manager: %q", got)
	}
}

// TestRunDiagnosePrintsTheReportAndDeletesThePod plays the kubelet with a fake clientset (envtest runs no
// kubelet, and pod logs come from one): the pod ends, its log is the report, and the pod is gone afterwards,
// also when it failed.
func TestRunDiagnosePrintsTheReportAndDeletesThePod(t *testing.T) {
	for _, tc := range []struct {
		name    string
		phase   corev1.PodPhase
		output  string
		wantErr string
	}{
		{"succeeded", corev1.PodSucceeded, "text", ""},
		{"failed", corev1.PodFailed, "text", "the diagnosis failed on node w1 (exit code 2, Error): fake logs"},
		{"not json", corev1.PodSucceeded, outputJSON, "printed no JSON report"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			kube := fake.NewClientset(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "w1"}})
			// The fake API server does not generate names; the kubelet's part: the pod ends as soon as it exists.
			kube.PrependReactor("create", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
				pod := a.(k8stesting.CreateAction).GetObject().(*corev1.Pod)
				pod.Name = pod.GenerateName + "x1"
				pod.Status.Phase = tc.phase
				exit := int32(0)
				if tc.phase == corev1.PodFailed {
					exit = 2
				}
				pod.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: diagnoseContainer,
					State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: exit, Reason: "Error"}}}}
				return false, nil, nil
			})
			s := testDiagnoseSpec()
			s.Output = tc.output
			var progress bytes.Buffer
			report, err := runDiagnose(context.Background(), kube, s, &progress)
			switch {
			case tc.wantErr == "" && (err != nil || string(report) != "fake logs"):
				t.Errorf("report %q, err %v", report, err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Errorf("err %v, want %q", err, tc.wantErr)
			}
			pods, _ := kube.CoreV1().Pods("cnimedic-system").List(context.Background(), metav1.ListOptions{})
			if len(pods.Items) != 0 {
				t.Errorf("the diagnose pod was left behind: %s", pods.Items[0].Name)
			}
			if !strings.Contains(progress.String(), "Started pod cnimedic-system/cnimedic-diagnose-x1 on node w1") {
				t.Errorf("progress: %q", progress.String())
			}
		})
	}
	if _, err := runDiagnose(context.Background(), fake.NewClientset(), testDiagnoseSpec(), &bytes.Buffer{}); err == nil || !strings.Contains(err.Error(), "node w1") {
		t.Errorf("a missing node must be reported before any pod is made: %v", err)
	}
}

func TestFlagValue(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--executor-image=a:1"}, "a:1"},
		{[]string{"--leader-elect", "--executor-image", "b:2"}, "b:2"},
		{[]string{"--executor-image"}, ""},
		{[]string{"--executor-images=c"}, ""},
	} {
		if got := flagValue(tc.args, "--executor-image"); got != tc.want {
			t.Errorf("%q: %q, want %q", tc.args, got, tc.want)
		}
	}
}
