package lab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
)

// Namespace is where cnimedic runs (deploy/cnimedic.yaml).
const Namespace = "cnimedic-system"

// Kubectl runs the lab's kubectl (built from its Go module) as the admin and returns its combined output; the error
// carries the output too.
func (l *Lab) Kubectl(ctx context.Context, args ...string) ([]byte, error) {
	cmd := l.KubectlCmd(ctx, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return out.Bytes(), fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return out.Bytes(), nil
}

// KubectlCmd prepares kubectl with the admin kubeconfig, for callers that stream its output.
func (l *Lab) KubectlCmd(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, l.cfg.binary("kubectl"), append([]string{"--kubeconfig=" + l.cfg.Kubeconfig}, args...)...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+l.cfg.Kubeconfig)
	return cmd
}

// managerEnvPatch is the lab's only change to deploy/cnimedic.yaml, a strategic-merge patch of the manager's
// Deployment. Typed, so that it can carry nothing but what it says.
type managerEnvPatch struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name      string `json:"name"`
		Namespace string `json:"namespace"`
	} `json:"metadata"`
	Spec struct {
		Template struct {
			Spec struct {
				Containers []struct {
					Name string      `json:"name"`
					Env  []envVarLit `json:"env"`
				} `json:"containers"`
			} `json:"spec"`
		} `json:"template"`
	} `json:"spec"`
}

type envVarLit struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// managerEnv is what the lab adds to the manager's container, however cnimedic is installed: the API server's own
// address in place of the kubernetes Service's cluster IP (see Install).
func (l *Lab) managerEnv() []envVarLit {
	return []envVarLit{
		{Name: "KUBERNETES_SERVICE_HOST", Value: l.cfg.HostAddr.Addr().String()},
		{Name: "KUBERNETES_SERVICE_PORT", Value: strconv.Itoa(apiserverPort)},
	}
}

type kustomization struct {
	APIVersion string              `json:"apiVersion"`
	Kind       string              `json:"kind"`
	Resources  []string            `json:"resources"`
	Patches    []map[string]string `json:"patches"`
}

// Install applies deploy/cnimedic.yaml as a user would (kubectl apply, server side), with the lab's one overlay,
// waits for its CRDs, applies the default policy (deploy/cnimedic-policy.yaml), as docs/operations.md says, and
// waits until the manager's Deployment is available.
//
// The overlay points the manager's in-cluster client at the API server's real address. In a cluster, kubelet gives
// every container KUBERNETES_SERVICE_HOST/PORT = the kubernetes Service's cluster IP (10.96.0.1:443), and kube-proxy
// (or the CNI's replacement) routes that IP to the API server. The lab runs no kube-proxy: nothing would route
// 10.96.0.1 from the manager's node, so client-go's in-cluster config would time out. The variables set in the
// container spec take precedence over kubelet's, and the API server's certificate carries the bridge address.
// Everything else — the image, RBAC, the service account and its token, hostNetwork, probes — is as shipped.
func (l *Lab) Install(ctx context.Context) error {
	dir := filepath.Join(l.cfg.Dir, "install")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	return l.step("install cnimedic (kubectl apply deploy/cnimedic.yaml)", func() error {
		manifest, err := os.ReadFile(l.cfg.Deploy)
		if err != nil {
			return fmt.Errorf("%w: run `make deploy-render`", err)
		}
		// kubectl's kustomize refuses resources outside the kustomization's directory: copy the manifest in.
		if err := os.WriteFile(filepath.Join(dir, "cnimedic.yaml"), manifest, 0o644); err != nil {
			return err
		}
		var p managerEnvPatch
		p.APIVersion, p.Kind = "apps/v1", "Deployment"
		p.Metadata.Name, p.Metadata.Namespace = "cnimedic-manager", Namespace
		p.Spec.Template.Spec.Containers = append(p.Spec.Template.Spec.Containers, struct {
			Name string      `json:"name"`
			Env  []envVarLit `json:"env"`
		}{Name: "manager", Env: l.managerEnv()})
		patch, err := yaml.Marshal(p)
		if err != nil {
			return err
		}
		header := []byte("# The lab's only change to deploy/cnimedic.yaml (see e2e/lab/install.go): the lab runs no kube-proxy,\n" +
			"# so the manager dials the API server's own address instead of the kubernetes Service's cluster IP.\n")
		if err := os.WriteFile(filepath.Join(dir, "lab-manager-env.yaml"), append(header, patch...), 0o644); err != nil {
			return err
		}
		k, err := yaml.Marshal(kustomization{
			APIVersion: "kustomize.config.k8s.io/v1beta1", Kind: "Kustomization",
			Resources: []string{"cnimedic.yaml"},
			Patches:   []map[string]string{{"path": "lab-manager-env.yaml"}},
		})
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, "kustomization.yaml"), k, 0o644); err != nil {
			return err
		}
		// The install steps of docs/operations.md: the manifest (no object of its own CRDs in it, so it applies the
		// first time), the CRDs established, then the default policy from its own file.
		if _, err := l.Kubectl(ctx, "apply", "--server-side", "--force-conflicts", "--field-manager=cnimedic-lab", "-k", dir); err != nil {
			return err
		}
		if _, err := l.Kubectl(ctx, "wait", "--for", "condition=established", "--timeout=60s", "crd/remediationpolicies.cnimedic.io", "crd/noderemediations.cnimedic.io"); err != nil {
			return err
		}
		if _, err := l.Kubectl(ctx, "apply", "--server-side", "--force-conflicts", "--field-manager=cnimedic-lab", "-f", PolicyManifest(l.cfg.Deploy)); err != nil {
			return err
		}
		l.st.Installed = true
		if err := l.writeState(); err != nil {
			return err
		}
		if l.st.RestartManager {
			if _, err := l.Kubectl(ctx, "rollout", "restart", "--namespace="+Namespace, "deployment/cnimedic-manager"); err != nil {
				return err
			}
			l.st.RestartManager = false
			if err := l.writeState(); err != nil {
				return err
			}
		}
		_, err = l.Kubectl(ctx, "rollout", "status", "--namespace="+Namespace, "deployment/cnimedic-manager", "--timeout=180s")
		if err != nil {
			logs, _ := l.Kubectl(ctx, "logs", "--namespace="+Namespace, "deployment/cnimedic-manager", "--tail=40")
			return fmt.Errorf("%w\nmanager logs:\n%s", err, logs)
		}
		return nil
	})
}

// PolicyManifest is the default policy's file next to the install manifest (deploy/cnimedic-policy.yaml), applied
// once the CRDs are established (docs/operations.md, Install).
func PolicyManifest(deploy string) string {
	return filepath.Join(filepath.Dir(deploy), "cnimedic-policy.yaml")
}

// LabPolicy is the policy the lab applies, over the installed default one: every worker, every built-in signature, automatic approval, one node
// at a time, and short timings so that a repair takes seconds, not the production defaults' minutes.
func LabPolicy() *v1alpha1.RemediationPolicy {
	d := func(s string) *metav1.Duration {
		v, err := time.ParseDuration(s)
		if err != nil {
			panic(err)
		}
		return &metav1.Duration{Duration: v}
	}
	mc := intstr.FromInt32(1)
	return &v1alpha1.RemediationPolicy{
		TypeMeta: metav1.TypeMeta{APIVersion: v1alpha1.GroupVersion.String(), Kind: "RemediationPolicy"},
		// The name of the policy deploy/cnimedic-policy.yaml installs (Manual approval): the lab reconfigures it rather than
		// adding a second policy, since of two policies covering a node the first by name acts.
		ObjectMeta: metav1.ObjectMeta{Name: "default"},
		Spec: v1alpha1.RemediationPolicySpec{
			Detection: v1alpha1.DetectionSpec{
				MinStuckDuration: d("10s"), MinOccurrences: 2, MinPods: 1,
				Window: d("5m"), BootGracePeriod: d("0s"), EvidenceExpiry: d("10m"),
			},
			Approval:      v1alpha1.ApprovalSpec{Mode: v1alpha1.ApprovalAutomatic, Expiry: d("1h")},
			MaxConcurrent: &mc,
			Drain:         v1alpha1.DrainSpec{Timeout: d("2m"), GracePeriodSeconds: ptr.To(int32(2)), OnTimeout: v1alpha1.DrainTimeoutAbort},
			Repair:        v1alpha1.RepairSpec{VersionStrategy: v1alpha1.VersionRepairRewriteConfig, InstallReferencePlugins: ptr.To(true)},
			Verification:  v1alpha1.VerificationSpec{Canary: ptr.To(true), Timeout: d("2m")},
			// The suite repairs the same node again and again: no cooldown between repairs.
			Retry:    v1alpha1.RetrySpec{MaxAttempts: 3, Cooldown: d("0s")},
			Executor: v1alpha1.ExecutorSpec{Timeout: d("4m"), PriorityClassName: "cnimedic-executor"},
		},
	}
}

// ApplyPolicy writes the policy as YAML under .lab/cluster (the demo shows it to the user) and applies it with
// kubectl, server side. It returns the file.
func (l *Lab) ApplyPolicy(ctx context.Context, p *v1alpha1.RemediationPolicy) (string, error) {
	data, err := yaml.Marshal(p)
	if err != nil {
		return "", err
	}
	file := filepath.Join(l.cfg.Dir, "policy-"+p.Name+".yaml")
	if err := os.WriteFile(file, data, 0o644); err != nil {
		return "", err
	}
	err = l.step("apply RemediationPolicy "+p.Name, func() error {
		_, err := l.Kubectl(ctx, "apply", "--server-side", "--force-conflicts", "--field-manager=cnimedic-lab-policy", "-f", file)
		return err
	})
	return file, err
}

// errNotUp is returned by operations that need a running lab.
var errNotUp = errors.New("lab: the lab is not up: run `make lab-up`")
