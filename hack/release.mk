# The release: multi-arch OCI image indexes, the kubectl plugin's archives and krew manifest, the install and the
# chart pinned by digest, all under bin/release/VERSION (hack/release). Included by the Makefile. Not part of make
# test (whose hack/release test builds a tiny release in seconds); the lab keeps its single-arch images (make images).

# A tag when HEAD has one (git describe), else a dev version naming the commit.
VERSION ?= $(shell git describe --tags --match 'v*' 2>/dev/null || echo v0.0.0-dev.g$$(git rev-parse --short=12 HEAD))
# Where the images will be pushed: the pinned install and chart name REGISTRY/NAME:VERSION@DIGEST.
RELEASE_REGISTRY ?= ghcr.io/cnimedic

##@ Release

.PHONY: release
release: ## Build the release (linux/amd64 + linux/arm64 images as OCI layouts, plugin archives, krew manifest, pinned install and chart) into bin/release/VERSION.
	hack/build-cni-plugins.sh bundle-amd64 bundle-arm64
	go run ./hack/release -version $(VERSION) -registry $(RELEASE_REGISTRY) -out $(BIN)/release
