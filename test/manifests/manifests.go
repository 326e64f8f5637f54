// Package manifests renders the kustomize tree in config/ the way `kubectl apply -k` does, for tests and for the
// tools that install cnimedic.
package manifests

import (
	"fmt"

	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
)

// Render builds the kustomization in dir and returns it as one multi-document YAML stream.
func Render(dir string) ([]byte, error) {
	opts := krusty.MakeDefaultOptions()
	// The order kubectl applies in: namespaces and CRDs before what lives in them.
	opts.Reorder = krusty.ReorderOptionLegacy
	k := krusty.MakeKustomizer(opts)
	res, err := k.Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		return nil, fmt.Errorf("kustomize build %s: %w", dir, err)
	}
	return res.AsYaml()
}
