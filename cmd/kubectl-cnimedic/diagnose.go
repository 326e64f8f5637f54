package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/kubernetes"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
	"github.com/cnimedic/cnimedic/internal/diagnosepod"
	"github.com/cnimedic/cnimedic/internal/termsafe"
)

// diagnose runs the remediator's read-only diagnosis on a node through a short-lived pod shaped like the executor
// pod (docs/executor.md): hostNetwork because the node's CNI may be broken, pinned by nodeName,
// tolerating every taint, no API credentials. Unlike the executor it mounts the host paths read-only: a diagnosis
// changes nothing.
//
// The plugin does not import the remediator's packages (they build on Linux only, the plugin also runs on macOS
// and Windows): the pod renders the report in the format asked for, and the plugin prints its log.

// Defaults of the plugin's flags.
const (
	defaultConfDir          = diagnosepod.DefaultConfDir
	defaultBinDir           = diagnosepod.DefaultBinDir
	defaultContainerdConfig = diagnosepod.DefaultContainerdConfig
	defaultExecutorImage    = "cnimedic.local/executor:dev"
	defaultManagerNamespace = "cnimedic-system"
	diagnoseContainer       = diagnosepod.Container
)

// diagnoseSpec is what the diagnose pod is made from, and how long the plugin waits for it.
type diagnoseSpec struct {
	diagnosepod.Spec
	Timeout time.Duration
}

// diagnosePod builds the plugin's pod (internal/diagnosepod) and labels it as the plugin's, not as a remediation's:
// the manager watches pods labelled cnimedic.io/remediation as its own executors.
func diagnosePod(s diagnoseSpec) *corev1.Pod {
	spec := s.Spec
	spec.GenerateName = "cnimedic-diagnose-"
	spec.Labels = map[string]string{
		"app.kubernetes.io/name":    "cnimedic",
		v1alpha1.LabelComponent:     "diagnose",
		v1alpha1.LabelNode:          s.Node,
		"app.kubernetes.io/part-of": "cnimedic",
	}
	// Bounds the pod's life even if the plugin dies before deleting it.
	spec.ActiveDeadline = int64(s.Timeout.Seconds()) + 30
	return diagnosepod.Pod(spec)
}

const diagnoseExample = `  # Diagnose a node's CNI configuration, plugins, runtime, IPAM, namespaces and units (read-only)
  kubectl cnimedic diagnose worker-1 -o text

  # The report as JSON (the default), with another executor image
  kubectl cnimedic diagnose worker-1 --image registry.example/cnimedic/executor:v0.1.0`

func newDiagnoseCommand(c *cluster) *cobra.Command {
	s := diagnoseSpec{}
	cmd := &cobra.Command{
		Use:   "diagnose NODE",
		Short: "Run the remediator's read-only diagnosis on a node through a short-lived pod and print its report",
		Long: "diagnose creates a pod on the node shaped like cnimedic's executor (hostNetwork, pinned by nodeName, " +
			"tolerating every taint, no API credentials) that mounts the CNI conf and bin dirs, containerd's config " +
			"dir, /var/lib/cni, /run/containerd and the system D-Bus socket read-only and runs `remediator diagnose`. " +
			"It waits for the pod, prints its report and deletes it. It runs in cnimedic's namespace (" + defaultManagerNamespace +
			", or -n) with the executor's ServiceAccount and PriorityClass.",
		Example: diagnoseExample,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(s.Output, outputJSON, "text"); err != nil {
				return err
			}
			s.Node = args[0]
			s.Namespace = c.explicitNamespace()
			if s.Namespace == "" {
				s.Namespace = defaultManagerNamespace
			}
			kube, err := c.clientset()
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt)
			defer stop()
			if s.Image == "" {
				s.Image = managerExecutorImage(ctx, kube, s.Namespace)
				fmt.Fprintf(c.streams.ErrOut, "Using executor image %s (--image to choose another).\n", s.Image)
			}
			report, err := runDiagnose(ctx, kube, s, c.streams.ErrOut)
			if err != nil {
				return err
			}
			// The text report is written on the node, from what the node holds (file names, runtime messages).
			out := c.streams.Out
			if s.Output != outputJSON {
				out = termsafe.NewWriter(out)
			}
			_, err = out.Write(report)
			return err
		},
	}
	f := cmd.Flags()
	f.StringVarP(&s.Output, "output", "o", outputJSON, "output format: json or text (rendered by the remediator)")
	f.StringVar(&s.Image, "image", "", "executor image (default: the manager Deployment's --executor-image, else "+defaultExecutorImage+")")
	f.StringVar(&s.ServiceAccount, "service-account", "cnimedic-executor", "ServiceAccount of the pod (its token is never mounted)")
	f.StringVar(&s.PriorityClass, "priority-class", "cnimedic-executor", "PriorityClass of the pod, so that it runs on a full node (empty for none)")
	f.StringVar(&s.ConfDir, "conf-dir", defaultConfDir, "the node's CNI conf dir")
	f.StringVar(&s.BinDir, "bin-dir", defaultBinDir, "the node's CNI plugin dir")
	f.StringVar(&s.ContainerdConfig, "containerd-config", defaultContainerdConfig, "containerd's config.toml on the node")
	f.DurationVar(&s.Timeout, "timeout", 2*time.Minute, "how long to wait for the report")
	return cmd
}

// managerExecutorImage reads --executor-image from the manager Deployment's arguments, so that a diagnosis runs
// the same remediator the repairs run. When it cannot (no manager, no right to read Deployments) it falls back.
func managerExecutorImage(ctx context.Context, kube kubernetes.Interface, namespace string) string {
	sel := labels.SelectorFromSet(labels.Set{"app.kubernetes.io/name": "cnimedic", v1alpha1.LabelComponent: "manager"}).String()
	deps, err := kube.AppsV1().Deployments(namespace).List(ctx, metav1.ListOptions{LabelSelector: sel})
	if err != nil {
		return defaultExecutorImage
	}
	for _, d := range deps.Items {
		for _, ctr := range d.Spec.Template.Spec.Containers {
			if img := flagValue(ctr.Args, "--executor-image"); img != "" {
				return img
			}
			if img := flagValue(ctr.Command, "--executor-image"); img != "" {
				return img
			}
		}
	}
	return defaultExecutorImage
}

// flagValue finds a flag's value in an argument list, in the --flag=value and --flag value forms.
func flagValue(args []string, name string) string {
	for i, a := range args {
		if v, ok := strings.CutPrefix(a, name+"="); ok {
			return v
		}
		if a == name && i+1 < len(args) {
			return args[i+1]
		}
	}
	return ""
}

// runDiagnose creates the pod, waits for it to end, returns its log and deletes it, whatever happened.
func runDiagnose(ctx context.Context, kube kubernetes.Interface, s diagnoseSpec, progress interface{ Write([]byte) (int, error) }) ([]byte, error) {
	if _, err := kube.CoreV1().Nodes().Get(ctx, s.Node, metav1.GetOptions{}); err != nil {
		return nil, fmt.Errorf("node %s: %w", s.Node, err)
	}
	pods := kube.CoreV1().Pods(s.Namespace)
	pod, err := pods.Create(ctx, diagnosePod(s), metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("creating the diagnose pod in namespace %s: %w", s.Namespace, err)
	}
	fmt.Fprintf(progress, "Started pod %s/%s on node %s.\n", pod.Namespace, pod.Name, s.Node)
	defer func() {
		// A fresh context: the command's may be cancelled (Ctrl-C), and the pod must go anyway.
		dctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := pods.Delete(dctx, pod.Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			fmt.Fprintf(progress, "Could not delete pod %s/%s: %v\n", pod.Namespace, pod.Name, err)
		}
	}()

	ended, err := waitForPod(ctx, kube, pod.Namespace, pod.Name, s.Timeout)
	if err != nil {
		return nil, err
	}
	logs, err := pods.GetLogs(pod.Name, &corev1.PodLogOptions{Container: diagnoseContainer}).DoRaw(ctx)
	if err != nil {
		return nil, fmt.Errorf("reading the log of pod %s/%s: %w", pod.Namespace, pod.Name, err)
	}
	if ended.Status.Phase != corev1.PodSucceeded {
		return nil, fmt.Errorf("the diagnosis failed on node %s (%s): %s", s.Node, podEnd(ended), strings.TrimSpace(string(logs)))
	}
	if s.Output == outputJSON && !json.Valid(bytes.TrimSpace(logs)) {
		return nil, fmt.Errorf("pod %s/%s printed no JSON report: %s", pod.Namespace, pod.Name, strings.TrimSpace(string(logs)))
	}
	return logs, nil
}

// waitForPod polls the pod until it ended. A container that cannot start (its image cannot be pulled, a mount is
// missing) is reported at once rather than after the timeout.
func waitForPod(ctx context.Context, kube kubernetes.Interface, namespace, name string, timeout time.Duration) (*corev1.Pod, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		pod, err := kube.CoreV1().Pods(namespace).Get(ctx, name, metav1.GetOptions{})
		if err == nil {
			switch pod.Status.Phase {
			case corev1.PodSucceeded, corev1.PodFailed:
				return pod, nil
			}
			if why := stuck(pod); why != "" {
				return nil, fmt.Errorf("pod %s/%s cannot run: %s", namespace, name, why)
			}
		}
		select {
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return nil, fmt.Errorf("pod %s/%s did not finish within %s (--timeout)", namespace, name, timeout)
			}
			return nil, ctx.Err()
		case <-tick.C:
		}
	}
}

// stuck says why a pending container will not start by itself, or "".
func stuck(pod *corev1.Pod) string {
	for _, cs := range pod.Status.ContainerStatuses {
		if w := cs.State.Waiting; w != nil {
			switch w.Reason {
			case "ErrImagePull", "ImagePullBackOff", "InvalidImageName", "CreateContainerConfigError", "CreateContainerError":
				return w.Reason + ": " + w.Message
			}
		}
	}
	return ""
}

func podEnd(pod *corev1.Pod) string {
	for _, cs := range pod.Status.ContainerStatuses {
		if t := cs.State.Terminated; t != nil {
			return fmt.Sprintf("exit code %d, %s", t.ExitCode, t.Reason)
		}
	}
	return fmt.Sprintf("pod %s: %s", pod.Status.Phase, pod.Status.Reason)
}
