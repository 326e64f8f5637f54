package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"golang.org/x/term"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
	"github.com/cnimedic/cnimedic/e2e/lab"
	"github.com/cnimedic/cnimedic/test/repo"
)

// The demo tells one story a first-time user can follow: a real cluster, cnimedic installed, a node broken the way
// the first seed runbook describes, and cnimedic repairing it while the user watches the NodeRemediation's phases
// and events. Everything it runs is what the user can type afterwards; it says so at each step.

const (
	demoNS       = "demo"
	demoWorkload = "web"
	demoFault    = lab.FaultCNIVersionNewer
)

func say(format string, args ...any) { fmt.Printf(format+"\n", args...) }
func heading(n int, title string) {
	if term.IsTerminal(int(os.Stdout.Fd())) {
		fmt.Printf("\n\033[1m%d. %s\033[0m\n", n, title) // bold on a terminal
		return
	}
	fmt.Printf("\n%d. %s\n", n, title)
}
func shell(format string, args ...any) { fmt.Printf("   $ "+format+"\n", args...) }
func indent(text string) string {
	return "     " + strings.ReplaceAll(strings.TrimRight(text, "\n"), "\n", "\n     ")
}
func kubectlOut(out []byte, err error) { // prints kubectl output indented, or the error
	if err != nil {
		say("%s", indent(err.Error()))
		return
	}
	say("%s", indent(string(out)))
}

func demo(ctx context.Context, l *lab.Lab) error {
	if err := l.Lock(); err != nil {
		return err
	}
	defer l.Unlock()
	start := time.Now()
	fmt.Print(`
cnimedic demo: a node whose pods hang in ContainerCreating, repaired without a human.

cnimedic watches for pods that cannot get their network because a node's CNI setup or container runtime is
broken, names the failure (a signature from the CNI troubleshooting runbooks), and repairs the node the way
the runbook does it by hand: cordon and drain, stop kubelet and containerd, fix the CNI config or plugins,
start them again, verify with a canary pod, uncordon.

This demo runs a real cluster on this machine: a control plane, and two worker nodes that are systemd-nspawn
containers with a real systemd, containerd, runc, CNI plugins and kubelet.
`)

	heading(1, "Bring the lab cluster up")
	l.Out = os.Stdout
	if err := l.UpCluster(ctx); err != nil {
		return fmt.Errorf("%w\n(make lab-down removes whatever came up)", err)
	}
	kubectlOut(l.Kubectl(ctx, "get", "nodes", "-o", "wide"))

	heading(2, "Install cnimedic the way a user does: kubectl apply deploy/cnimedic.yaml")
	shell("kubectl apply --server-side -f deploy/cnimedic.yaml   # CRDs, RBAC, the manager Deployment")
	shell("kubectl wait --for condition=established --timeout=60s crd/remediationpolicies.cnimedic.io crd/noderemediations.cnimedic.io")
	shell("kubectl apply --server-side -f deploy/cnimedic-policy.yaml   # the default policy")
	if err := l.Install(ctx); err != nil {
		return err
	}
	kubectlOut(l.Kubectl(ctx, "get", "pods", "--namespace="+lab.Namespace, "--selector=app.kubernetes.io/component=manager", "-o", "wide"))

	heading(3, "Tell cnimedic what it may repair: a RemediationPolicy")
	say("   deploy/cnimedic-policy.yaml is a policy named default that covers every worker and waits for a person to approve each")
	say("   repair (approval.mode: Manual: `kubectl annotate noderemediation/NAME cnimedic.io/approve=true`). For the")
	say("   demo it is switched to Automatic, still one node at a time (maxConcurrent: 1):")
	file, err := l.ApplyPolicy(ctx, lab.LabPolicy())
	if err != nil {
		return err
	}
	shell("kubectl apply --server-side -f %s", rel(file))
	kubectlOut(l.Kubectl(ctx, "get", "remediationpolicies"))

	c, err := l.Client()
	if err != nil {
		return err
	}
	target, err := nodeWithoutManager(ctx, c, l)
	if err != nil {
		return err
	}
	if err := l.Reset(ctx, target); err != nil {
		return fmt.Errorf("resetting %s before the demo: %w", target, err)
	}
	if err := clearDemo(ctx, c); err != nil {
		return err
	}

	heading(4, "Break "+target+" the way the first seed runbook describes")
	say("   The runbook (\"Troubleshooting CNI plugin-related errors\"): the CNI config declares a cniVersion newer than")
	say("   the node's plugins support, and every new pod fails with \"incompatible CNI versions\". The demo sets")
	say("   cniVersion to 1.1.0 in %s on %s; its plugins support up to 1.0.0.", lab.NodeConfList, target)
	shell("bin/lab break %s %s", target, demoFault)
	broken := time.Now()
	if err := l.Inject(ctx, target, demoFault); err != nil {
		return err
	}
	say("   Now a workload that prefers %s:", target)
	shell("kubectl create deployment %s --image=cnimedic.local/workload:dev --replicas=2 -n %s   # preferring %s", demoWorkload, demoNS, target)
	if err := startWorkload(ctx, c, target); err != nil {
		return err
	}
	events, err := waitStuck(ctx, c, target)
	if err != nil {
		return err
	}
	kubectlOut(l.Kubectl(ctx, "get", "pods", "--namespace="+demoNS, "-o", "wide"))
	say("   kubelet's event on a stuck pod:")
	say("%s", indent("Warning FailedCreatePodSandBox "+events[0].Message))

	heading(5, "cnimedic takes over")
	say("   Follow along in another terminal:")
	shell("export KUBECONFIG=%s", l.Config().Kubeconfig)
	shell("export PATH=%s", toolsPath(l))
	shell("kubectl get noderemediations -w")
	shell("kubectl events --for noderemediation/NAME --watch")
	nr, err := awaitRemediation(ctx, c, l, target, events)
	if err != nil {
		return err
	}
	final, err := stream(ctx, c, nr.Name, broken)
	if err != nil {
		return err
	}

	heading(6, "The outcome")
	kubectlOut(l.Kubectl(ctx, "get", "noderemediations"))
	if final.Status.Phase != v1alpha1.PhaseSucceeded {
		say("   The repair ended %s: %s", final.Status.Phase, final.Status.Message)
		return fmt.Errorf("the demo's repair ended %s", final.Status.Phase)
	}
	if err := waitWorkload(ctx, c); err != nil {
		return err
	}
	took := time.Since(broken)
	kubectlOut(l.Kubectl(ctx, "get", "nodes"))
	kubectlOut(l.Kubectl(ctx, "get", "pods", "--namespace="+demoNS, "-o", "wide"))
	if out, err := l.Kubectl(ctx, "get", "noderemediation", nr.Name, "-o", "jsonpath={.status.result.changes[*].diff}"); err == nil && len(out) > 0 {
		say("   What the executor changed on %s (every change was backed up first):", target)
		say("%s", indent(string(out)))
	}
	say("   From the break to the workload Running again: %.0fs. The whole demo took %.0fs.", took.Seconds(), time.Since(start).Seconds())

	fmt.Printf(`
What next
   The lab stays up. Point kubectl at it (bin/k8s has kubectl, bin the kubectl cnimedic plugin):
     export KUBECONFIG=%s
     export PATH=%s
     kubectl cnimedic status
   Try the other failures of the runbooks: bin/lab break NODE FAULT, then watch kubectl get noderemediations -w.
   Each is repaired, or escalated when a node repair would be the wrong answer:
%s
   For example:
     bin/lab break worker-2 ipam-exhausted
     bin/lab reset worker-2        # give a node back its healthy configuration (and uncordon it)
   Require a human's approval: set approval.mode: Manual in %s, kubectl apply it, break a node,
   then: kubectl annotate noderemediation/NAME cnimedic.io/approve=true
   The end-to-end suite runs every scenario:  make e2e
   Tear everything down (nothing is left behind): make lab-down
`, l.Config().Kubeconfig, toolsPath(l), faultList(), rel(file))
	return nil
}

// toolsPath is a PATH with the lab's kubectl (bin/k8s) and the kubectl-cnimedic plugin (bin) first.
func toolsPath(l *lab.Lab) string {
	return l.Config().K8sBin + ":" + filepath.Join(l.Config().RepoRoot, "bin") + ":$PATH"
}

func faultList() string {
	var b strings.Builder
	for _, f := range lab.Faults {
		fmt.Fprintf(&b, "     %-26s %s\n", f.Fault, f.What)
	}
	return strings.TrimRight(b.String(), "\n")
}

func rel(path string) string {
	if r, ok := strings.CutPrefix(path, repo.Root()+"/"); ok {
		return r
	}
	return path
}

// nodeWithoutManager is a worker the manager does not run on, so that the drain does not move the manager itself.
func nodeWithoutManager(ctx context.Context, c client.Client, l *lab.Lab) (string, error) {
	pods := &corev1.PodList{}
	if err := c.List(ctx, pods, client.InNamespace(lab.Namespace), client.MatchingLabels{"app.kubernetes.io/component": "manager"}); err != nil {
		return "", err
	}
	busy := map[string]bool{}
	for _, p := range pods.Items {
		if p.DeletionTimestamp == nil {
			busy[p.Spec.NodeName] = true
		}
	}
	for _, n := range l.Config().Nodes() {
		if !busy[n.Name] {
			return n.Name, nil
		}
	}
	return "", errors.New("every worker runs a manager replica")
}

// clearDemo removes what an earlier demo left: its workload and the NodeRemediations (their history would make
// the story harder to read).
func clearDemo(ctx context.Context, c client.Client) error {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: demoNS}}
	if err := c.Create(ctx, ns); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	_ = c.DeleteAllOf(ctx, &appsv1.Deployment{}, client.InNamespace(demoNS))
	_ = c.DeleteAllOf(ctx, &corev1.Pod{}, client.InNamespace(demoNS), client.GracePeriodSeconds(0))
	if err := c.DeleteAllOf(ctx, &v1alpha1.NodeRemediation{}); err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		list := &v1alpha1.NodeRemediationList{}
		pods := &corev1.PodList{}
		if err := c.List(ctx, list); err != nil {
			return err
		}
		if err := c.List(ctx, pods, client.InNamespace(demoNS)); err != nil {
			return err
		}
		if len(list.Items) == 0 && len(pods.Items) == 0 {
			return nil
		}
		time.Sleep(250 * time.Millisecond)
	}
	return errors.New("an earlier demo's objects do not go away")
}

func startWorkload(ctx context.Context, c client.Client, node string) error {
	return c.Create(ctx, lab.Workload(demoNS, demoWorkload, node))
}

// waitStuck waits for the workload's FailedCreatePodSandBox events on the node, long enough for the lab policy's
// detection thresholds.
func waitStuck(ctx context.Context, c client.Client, node string) ([]corev1.Event, error) {
	d := lab.LabPolicy().Spec.Detection
	deadline := time.Now().Add(2 * time.Minute)
	say("   Waiting for the pods to get stuck (the policy counts a pod after %s stuck)...", d.MinStuckDuration.Duration)
	for time.Now().Before(deadline) {
		pods := &corev1.PodList{}
		if err := c.List(ctx, pods, client.InNamespace(demoNS)); err != nil {
			return nil, err
		}
		onNode := map[string]bool{}
		for _, p := range pods.Items {
			if p.Spec.NodeName == node {
				onNode[p.Name] = true
			}
		}
		events := &corev1.EventList{}
		if err := c.List(ctx, events, client.InNamespace(demoNS)); err != nil {
			return nil, err
		}
		var stuck []corev1.Event
		var count int32
		var first time.Time
		for _, e := range events.Items {
			if e.Reason == "FailedCreatePodSandBox" && onNode[e.InvolvedObject.Name] {
				stuck = append(stuck, e)
				count += max(e.Count, 1)
				if t := lab.EventFirst(e); first.IsZero() || t.Before(first) {
					first = t
				}
			}
		}
		if count >= d.MinOccurrences && len(stuck) > 0 && time.Since(first) >= d.MinStuckDuration.Duration {
			return stuck, nil
		}
		time.Sleep(500 * time.Millisecond)
	}
	return nil, errors.New("the workload's pods never got stuck: is the fault in place? (bin/lab logs NODE containerd)")
}

// awaitRemediation returns the NodeRemediation for the node: the one the manager's detection creates, or, while
// detection is not part of the manager yet, one created here exactly as detection would (and the demo says so).
func awaitRemediation(ctx context.Context, c client.Client, l *lab.Lab, node string, events []corev1.Event) (*v1alpha1.NodeRemediation, error) {
	detects, err := l.ManagerRunsDetection(ctx)
	if err != nil {
		return nil, err
	}
	if !detects {
		nr, err := lab.RemediationAsDetection(node, lab.LabPolicy().Name, events, "")
		if err != nil {
			return nil, err
		}
		say("   (This manager build has no detection controller yet: the demo files the NodeRemediation it would.)")
		return nr, c.Create(ctx, nr)
	}
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		list := &v1alpha1.NodeRemediationList{}
		if err := c.List(ctx, list); err != nil {
			return nil, err
		}
		for i := range list.Items {
			if list.Items[i].Spec.NodeName == node {
				return &list.Items[i], nil
			}
		}
		time.Sleep(250 * time.Millisecond)
	}
	return nil, errors.New("the manager did not detect the failure within 2 minutes (kubectl logs -n cnimedic-system deploy/cnimedic-manager)")
}

// stream prints the NodeRemediation's phases and events as they happen, like `kubectl get noderemediations -w`
// and `kubectl events --for noderemediation/NAME --watch` side by side, until it ends.
func stream(ctx context.Context, c client.Client, name string, since time.Time) (*v1alpha1.NodeRemediation, error) {
	say("")
	say("   %-8s %-8s %-18s %s", "TIME", "TYPE", "REASON", "MESSAGE  (events of noderemediation/"+name+")")
	seen := map[string]bool{}
	deadline := time.Now().Add(8 * time.Minute)
	for {
		nr := &v1alpha1.NodeRemediation{}
		if err := c.Get(ctx, client.ObjectKey{Name: name}, nr); err != nil {
			return nil, err
		}
		events := &corev1.EventList{}
		if err := c.List(ctx, events, client.MatchingFields{"involvedObject.name": name}); err != nil {
			return nil, err
		}
		sort.SliceStable(events.Items, func(i, j int) bool {
			return lab.EventFirst(events.Items[i]).Before(lab.EventFirst(events.Items[j]))
		})
		for _, e := range events.Items {
			key := string(e.UID)
			if seen[key] {
				continue
			}
			seen[key] = true
			say("   +%-6s %-8s %-18s %s", fmt.Sprintf("%.0fs", lab.EventFirst(e).Sub(since).Seconds()), e.Type, e.Reason, wrap(e.Message, 72, 41))
		}
		if nr.Status.Phase.IsTerminal() {
			return nr, nil
		}
		if time.Now().After(deadline) {
			return nr, fmt.Errorf("noderemediation/%s still %s after 8 minutes", name, nr.Status.Phase)
		}
		select {
		case <-ctx.Done():
			return nr, ctx.Err()
		case <-time.After(300 * time.Millisecond):
		}
	}
}

// wrap breaks a long message into lines of width, indenting the continuation lines.
func wrap(s string, width, indentBy int) string {
	words := strings.Fields(s)
	var lines []string
	line := ""
	for _, w := range words {
		if line != "" && len(line)+1+len(w) > width {
			lines = append(lines, line)
			line = w
			continue
		}
		if line != "" {
			line += " "
		}
		line += w
	}
	lines = append(lines, line)
	return strings.Join(lines, "\n"+strings.Repeat(" ", indentBy))
}

func waitWorkload(ctx context.Context, c client.Client) error {
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		pods := &corev1.PodList{}
		if err := c.List(ctx, pods, client.InNamespace(demoNS)); err != nil {
			return err
		}
		running := 0
		for _, p := range pods.Items {
			if p.DeletionTimestamp == nil && p.Status.Phase == corev1.PodRunning {
				running++
			}
		}
		if running >= 2 {
			return nil
		}
		time.Sleep(500 * time.Millisecond)
	}
	return errors.New("the workload is not Running again")
}
