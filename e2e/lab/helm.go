package lab

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"sigs.k8s.io/yaml"
)

// HelmRelease is the release name the lab installs the chart under.
const HelmRelease = "cnimedic"

// Helm runs the helm CLI (built from its Go module into bin/) against the lab as the admin.
func (l *Lab) Helm(ctx context.Context, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, l.cfg.helm(), append([]string{"--kubeconfig=" + l.cfg.Kubeconfig}, args...)...)
	cmd.Env = append(os.Environ(), "HELM_CACHE_HOME="+filepath.Join(l.cfg.Dir, "helm", "cache"),
		"HELM_CONFIG_HOME="+filepath.Join(l.cfg.Dir, "helm", "config"), "HELM_DATA_HOME="+filepath.Join(l.cfg.Dir, "helm", "data"))
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return out.Bytes(), fmt.Errorf("helm %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return out.Bytes(), nil
}

// Plugin runs `kubectl cnimedic ARGS` as a user would (kubectl finds the plugin, bin/kubectl-cnimedic, on PATH) and
// returns what it printed on stdout.
func (l *Lab) Plugin(ctx context.Context, args ...string) ([]byte, error) {
	// kubectl takes no flag before a plugin's name: the plugin gets --kubeconfig itself (cli-runtime's flags).
	cmd := exec.CommandContext(ctx, l.cfg.binary("kubectl"), append([]string{"cnimedic", "--kubeconfig=" + l.cfg.Kubeconfig}, args...)...)
	cmd.Env = append(os.Environ(), "PATH="+filepath.Dir(l.cfg.plugin())+string(os.PathListSeparator)+os.Getenv("PATH"))
	// Its output (a report, JSON) apart from its progress messages, which go to stderr.
	var out, progress bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &progress
	if err := cmd.Run(); err != nil {
		return out.Bytes(), fmt.Errorf("kubectl cnimedic %s: %w: %s%s", strings.Join(args, " "), err, progress.String(), out.String())
	}
	return out.Bytes(), nil
}

// UninstallManifest removes what Install applied, as a user moving to the Helm chart would: the remediations first
// (their finalizers are the manager's to remove, so it must still run), then every object of the manifest,
// CRDs and namespace included.
func (l *Lab) UninstallManifest(ctx context.Context) error {
	return l.step("uninstall cnimedic (kubectl delete deploy/cnimedic.yaml)", func() error {
		if _, err := l.Kubectl(ctx, "delete", "noderemediations", "--all", "--wait", "--timeout=2m"); err != nil {
			return err
		}
		if _, err := l.Kubectl(ctx, "delete", "-k", filepath.Join(l.cfg.Dir, "install"), "--ignore-not-found", "--wait", "--timeout=3m"); err != nil {
			return err
		}
		l.st.Installed = false
		return l.writeState()
	})
}

// helmValues are the values the lab gives the chart: the same single change as Install's overlay (the manager's
// API server address), everything else the chart's defaults (Manual approval, the images the lab imported).
type helmValues struct {
	ExtraEnv []envVarLit `json:"extraEnv"`
}

// InstallHelm installs the chart (deploy/helm/cnimedic) with helm install --wait and labels the namespace for the
// executor pods, as its values.yaml tells a user to, and waits until the manager's Deployment is available. It
// returns helm's output.
func (l *Lab) InstallHelm(ctx context.Context) ([]byte, error) {
	var out []byte
	err := l.step("install cnimedic (helm install deploy/helm/cnimedic)", func() error {
		values, err := yaml.Marshal(helmValues{ExtraEnv: l.managerEnv()})
		if err != nil {
			return err
		}
		file := filepath.Join(l.cfg.Dir, "helm", "lab-values.yaml")
		if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(file, values, 0o644); err != nil {
			return err
		}
		out, err = l.Helm(ctx, "install", HelmRelease, filepath.Join(l.cfg.RepoRoot, "deploy", "helm", "cnimedic"),
			"--namespace", Namespace, "--create-namespace", "--values", file, "--wait", "--timeout", "3m")
		if err != nil {
			return err
		}
		if _, err := l.Kubectl(ctx, "label", "namespace", Namespace, "pod-security.kubernetes.io/enforce=privileged"); err != nil {
			return err
		}
		_, err = l.Kubectl(ctx, "rollout", "status", "--namespace="+Namespace, "deployment/cnimedic-manager", "--timeout=180s")
		return err
	})
	return out, err
}

// UninstallHelm removes the release, then what Helm leaves by design: the CRDs (its rule for crds/) and the
// namespace --create-namespace made. The remediations go first, while the manager still runs.
func (l *Lab) UninstallHelm(ctx context.Context) error {
	return l.step("uninstall cnimedic (helm uninstall)", func() error {
		if _, err := l.Kubectl(ctx, "delete", "noderemediations", "--all", "--ignore-not-found", "--wait", "--timeout=2m"); err != nil {
			return err
		}
		if _, err := l.Helm(ctx, "uninstall", HelmRelease, "--namespace", Namespace, "--wait", "--timeout", "3m"); err != nil {
			return err
		}
		_, err := l.Kubectl(ctx, "delete", "--ignore-not-found", "--wait", "--timeout=3m",
			"crd/noderemediations.cnimedic.io", "crd/remediationpolicies.cnimedic.io", "namespace/"+Namespace)
		return err
	})
}
