// Package deploytest holds the tests of what cnimedic ships for installation and operation: the admission policy
// that limits who may approve a repair (config/admission), the least-privilege RBAC generated from markers
// (config/rbac), the Prometheus rules (config/prometheus) and the Helm chart (deploy/helm/cnimedic). Each is
// tested the way a cluster would use it: rendered, applied to a real API server where one is involved, and
// checked against the code it describes.
package deploytest

import (
	"bytes"
	"errors"
	"io"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/yaml"
)

// Objects decodes a multi-document YAML or JSON stream into objects, skipping empty documents.
func Objects(stream []byte) ([]*unstructured.Unstructured, error) {
	var out []*unstructured.Unstructured
	dec := yaml.NewYAMLOrJSONDecoder(bytes.NewReader(stream), 4096)
	for {
		u := &unstructured.Unstructured{}
		if err := dec.Decode(&u.Object); err != nil {
			if errors.Is(err, io.EOF) {
				return out, nil
			}
			return nil, err
		}
		if len(u.Object) > 0 {
			out = append(out, u)
		}
	}
}
