package deploytest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
	"github.com/cnimedic/cnimedic/test/repo"
	"github.com/cnimedic/cnimedic/test/testenv"
)

// The install steps of docs/operations.md, run verbatim against a fresh API server (no CRDs installed), must
// succeed the first time (issue 17 item 7: the first `kubectl apply -f deploy/cnimedic.yaml` failed with "no matches
// for kind RemediationPolicy ... ensure CRDs are installed first" because the default policy was in the same file
// as its CRD). There is no kubectl binary in make test: kubectlRunner reproduces what each command does, including
// the check that made the old install fail.

const (
	installBegin = "<!-- install:begin -->"
	installEnd   = "<!-- install:end -->"
)

// installCommands returns the shell commands of the doc's marked install block, one per line, without comments.
func installCommands(t *testing.T, doc string) [][]string {
	t.Helper()
	_, rest, ok := strings.Cut(doc, installBegin)
	if !ok {
		t.Fatalf("docs/operations.md has no %s marker", installBegin)
	}
	block, _, ok := strings.Cut(rest, installEnd)
	if !ok {
		t.Fatalf("docs/operations.md has no %s marker", installEnd)
	}
	var cmds [][]string
	inCode := false
	for _, line := range strings.Split(block, "\n") {
		line = strings.TrimSpace(line)
		if strings.HasPrefix(line, "```") {
			inCode = !inCode
			continue
		}
		if !inCode {
			continue
		}
		if i := strings.Index(line, " #"); i >= 0 {
			line = strings.TrimSpace(line[:i])
		}
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		cmds = append(cmds, strings.Fields(line))
	}
	if len(cmds) == 0 {
		t.Fatal("the install block of docs/operations.md has no command")
	}
	return cmds
}

// kubectlRunner runs the kubectl commands the install block uses, with kubectl's semantics, against one API server.
type kubectlRunner struct {
	cfg  *rest.Config
	c    client.Client
	dir  string // where relative paths are resolved: the repository root, where the doc's commands run
	dyn  dynamic.Interface
	disc discovery.DiscoveryInterface
}

func newKubectlRunner(t *testing.T, cfg *rest.Config, dir string) *kubectlRunner {
	t.Helper()
	c, err := client.New(cfg, client.Options{Scheme: scheme.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	disc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return &kubectlRunner{cfg: cfg, c: c, dir: dir, dyn: dyn, disc: disc}
}

func (k *kubectlRunner) run(ctx context.Context, args []string) error {
	if len(args) < 2 || args[0] != "kubectl" {
		return fmt.Errorf("not a kubectl command the test knows: %q", strings.Join(args, " "))
	}
	switch args[1] {
	case "apply":
		var file string
		for i := 2; i < len(args); i++ {
			switch a := args[i]; {
			case a == "--server-side":
			case a == "-f" && i+1 < len(args):
				file = args[i+1]
				i++
			case strings.HasPrefix(a, "--filename="):
				file = strings.TrimPrefix(a, "--filename=")
			default:
				return fmt.Errorf("kubectl apply: the test does not know %q", a)
			}
		}
		if file == "" {
			return errors.New("kubectl apply: no -f")
		}
		data, err := os.ReadFile(filepath.Join(k.dir, file))
		if err != nil {
			return err
		}
		return k.apply(ctx, data)
	case "wait":
		return k.wait(ctx, args[2:])
	}
	return fmt.Errorf("kubectl %s: not a command the test knows", args[1])
}

// apply applies every object of the stream as kubectl apply does: the kinds are resolved from the API server's
// discovery as it stands when the command starts, so a kind whose CRD the same stream creates, or whose CRD is not
// established yet, fails with kubectl's message; every other object is still applied, and the command fails.
func (k *kubectlRunner) apply(ctx context.Context, data []byte) error {
	objs, err := Objects(data)
	if err != nil {
		return err
	}
	groups, err := restmapper.GetAPIGroupResources(k.disc)
	if err != nil {
		return err
	}
	mapper := restmapper.NewDiscoveryRESTMapper(groups)
	var errs []error
	for _, o := range objs {
		gvk := o.GroupVersionKind()
		m, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
		if err != nil {
			errs = append(errs, fmt.Errorf(`resource mapping not found for name: %q namespace: %q: no matches for kind %q in version %q: ensure CRDs are installed first`,
				o.GetName(), o.GetNamespace(), gvk.Kind, gvk.GroupVersion()))
			continue
		}
		var ri dynamic.ResourceInterface = k.dyn.Resource(m.Resource)
		if m.Scope.Name() == meta.RESTScopeNameNamespace {
			ns := o.GetNamespace()
			if ns == "" {
				ns = metav1.NamespaceDefault
			}
			ri = k.dyn.Resource(m.Resource).Namespace(ns)
		}
		body, err := o.MarshalJSON()
		if err != nil {
			return err
		}
		force := true
		if _, err := ri.Patch(ctx, o.GetName(), types.ApplyPatchType, body, metav1.PatchOptions{FieldManager: "kubectl", Force: &force}); err != nil {
			errs = append(errs, fmt.Errorf("%s %s: %w", gvk.Kind, o.GetName(), err))
		}
	}
	return errors.Join(errs...)
}

// wait is kubectl wait --for condition=established [--timeout=D] crd/NAME...: the only wait the install uses.
func (k *kubectlRunner) wait(ctx context.Context, args []string) error {
	timeout := 30 * time.Second
	var cond string
	var crds []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--for" && i+1 < len(args):
			cond = args[i+1]
			i++
		case strings.HasPrefix(a, "--for="):
			cond = strings.TrimPrefix(a, "--for=")
		case strings.HasPrefix(a, "--timeout="):
			d, err := time.ParseDuration(strings.TrimPrefix(a, "--timeout="))
			if err != nil {
				return err
			}
			timeout = d
		case strings.HasPrefix(a, "crd/"):
			crds = append(crds, strings.TrimPrefix(a, "crd/"))
		default:
			return fmt.Errorf("kubectl wait: the test does not know %q", a)
		}
	}
	if !strings.EqualFold(cond, "condition=established") || len(crds) == 0 {
		return fmt.Errorf("kubectl wait: the test knows only --for condition=established on crd/NAME, not %q %v", cond, crds)
	}
	deadline := time.Now().Add(timeout)
	for _, name := range crds {
		for {
			crd := &apiextensionsv1.CustomResourceDefinition{}
			err := k.c.Get(ctx, types.NamespacedName{Name: name}, crd)
			if err == nil && crdEstablished(crd) {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("timed out waiting for the condition on customresourcedefinitions/%s (%v)", name, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	return nil
}

func crdEstablished(crd *apiextensionsv1.CustomResourceDefinition) bool {
	for _, c := range crd.Status.Conditions {
		if c.Type == apiextensionsv1.Established && c.Status == apiextensionsv1.ConditionTrue {
			return true
		}
	}
	return false
}

// freshAPIServer starts a control plane of its own with nothing installed (no CRDs), as a new cluster is.
func freshAPIServer(t *testing.T) *rest.Config {
	t.Helper()
	env := &envtest.Environment{BinaryAssetsDirectory: testenv.AssetsDir()}
	cfg, err := env.Start()
	if err != nil {
		t.Fatalf("starting a fresh control plane from %s (make controlplane): %v", testenv.AssetsDir(), err)
	}
	t.Cleanup(func() { _ = env.Stop() })
	return cfg
}

func TestTheInstallStepsOfTheDocsSucceedTheFirstTimeOnAFreshCluster(t *testing.T) {
	root := repo.Root()
	doc, err := os.ReadFile(filepath.Join(root, "docs", "operations.md"))
	if err != nil {
		t.Fatal(err)
	}
	cmds := installCommands(t, string(doc))
	cfg := freshAPIServer(t)
	k := newKubectlRunner(t, cfg, root)
	ctx := context.Background()
	for _, cmd := range cmds {
		if err := k.run(ctx, cmd); err != nil {
			t.Fatalf("%s: %v", strings.Join(cmd, " "), err)
		}
	}

	// What the docs say is installed: the manager, and the default policy in Manual approval.
	dep := &metav1.PartialObjectMetadata{}
	dep.SetGroupVersionKind(schema.GroupVersionKind{Group: "apps", Version: "v1", Kind: "Deployment"})
	if err := k.c.Get(ctx, client.ObjectKey{Namespace: "cnimedic-system", Name: "cnimedic-manager"}, dep); err != nil {
		t.Errorf("the manager Deployment: %v", err)
	}
	p := &v1alpha1.RemediationPolicy{}
	if err := k.c.Get(ctx, client.ObjectKey{Name: "default"}, p); err != nil {
		t.Fatalf("the default policy: %v", err)
	}
	if p.Spec.Approval.Mode != v1alpha1.ApprovalManual {
		t.Errorf("the default policy's approval mode is %q, want Manual", p.Spec.Approval.Mode)
	}

	// The runner fails where kubectl does: an object whose kind's CRD the same apply creates.
	widgets := `apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.example.com}
spec:
  group: example.com
  names: {kind: Widget, plural: widgets, singular: widget, listKind: WidgetList}
  scope: Cluster
  versions:
  - name: v1
    served: true
    storage: true
    schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}
---
apiVersion: example.com/v1
kind: Widget
metadata: {name: w}
`
	if err := k.apply(ctx, []byte(widgets)); err == nil || !strings.Contains(err.Error(), `no matches for kind "Widget"`) {
		t.Errorf("applying a CRD and an object of it at once: %v, want kubectl's no matches for kind error", err)
	}
}
