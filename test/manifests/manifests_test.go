package manifests

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/cnimedic/cnimedic/test/repo"
	"github.com/cnimedic/cnimedic/test/testenv"
)

func objects(t *testing.T, stream []byte) []*unstructured.Unstructured {
	t.Helper()
	var out []*unstructured.Unstructured
	dec := yaml.NewYAMLOrJSONDecoder(bytes.NewReader(stream), 4096)
	for {
		u := &unstructured.Unstructured{}
		if err := dec.Decode(&u.Object); err != nil {
			if errors.Is(err, io.EOF) {
				return out
			}
			t.Fatal(err)
		}
		if len(u.Object) > 0 {
			out = append(out, u)
		}
	}
}

// TestDefaultInstallsOnARealAPIServer renders config/default and applies every object to a real kube-apiserver,
// CRDs first, as `kubectl apply -k config/default` would.
func TestDefaultInstallsOnARealAPIServer(t *testing.T) {
	rendered, err := Render(filepath.Join(repo.Root(), "config", "default"))
	if err != nil {
		t.Fatal(err)
	}
	env, err := testenv.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Stop() })
	ctx := context.Background()

	objs := objects(t, rendered)
	kinds := map[string]int{}
	for _, o := range objs {
		kinds[o.GetKind()]++
		// envtest installed the CRDs already; applying them again proves the rendered ones are accepted too.
		if err := env.Client.Patch(ctx, o, client.Apply, client.FieldOwner("test"), client.ForceOwnership); err != nil {
			t.Fatalf("applying %s %s: %v", o.GetKind(), o.GetName(), err)
		}
	}
	for kind, want := range map[string]int{"CustomResourceDefinition": 2, "Deployment": 1, "ClusterRole": 1, "ServiceAccount": 2, "PriorityClass": 1, "Namespace": 1} {
		if kinds[kind] < want {
			t.Errorf("config/default renders %d %s, want at least %d", kinds[kind], kind, want)
		}
	}
	for _, name := range []string{"remediationpolicies.cnimedic.io", "noderemediations.cnimedic.io"} {
		deadline := time.Now().Add(10 * time.Second)
		for {
			crd := &apiextensionsv1.CustomResourceDefinition{}
			if err := env.Client.Get(ctx, types.NamespacedName{Name: name}, crd); err != nil {
				t.Fatal(err)
			}
			if established(crd) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("CRD %s not established", name)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
}

func established(crd *apiextensionsv1.CustomResourceDefinition) bool {
	for _, c := range crd.Status.Conditions {
		if c.Type == apiextensionsv1.Established && c.Status == apiextensionsv1.ConditionTrue {
			return true
		}
	}
	return false
}

// TestRenderedInstallIsCurrent fails when deploy/cnimedic.yaml was not re-rendered after a change in config/.
func TestRenderedInstallIsCurrent(t *testing.T) {
	rendered, err := Render(filepath.Join(repo.Root(), "config", "default"))
	if err != nil {
		t.Fatal(err)
	}
	committed, err := os.ReadFile(filepath.Join(repo.Root(), "deploy", "cnimedic.yaml"))
	if err != nil {
		t.Fatalf("deploy/cnimedic.yaml: %v (run make deploy-render)", err)
	}
	_, body, _ := strings.Cut(string(committed), "\n") // the generated-file header line
	if body != string(rendered) {
		t.Fatal("deploy/cnimedic.yaml is stale: run make deploy-render and commit it")
	}
}
