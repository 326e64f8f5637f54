# cnimedic — build, generate, test.
#
# Everything this Makefile needs is built from Go modules into bin/ (gitignored): no release download works on
# our machines. Versions are pinned in hack/versions.env.

include hack/versions.env
export

SHELL := /usr/bin/env bash -o pipefail
.SHELLFLAGS := -ec

ROOT := $(CURDIR)
BIN := $(ROOT)/bin
K8S_BIN := $(BIN)/k8s
CONTROLLER_GEN := $(BIN)/controller-gen
KUSTOMIZE := $(BIN)/kustomize
# envtest (controller-runtime) and our suites find kube-apiserver and etcd here.
export KUBEBUILDER_ASSETS := $(K8S_BIN)
# Go test flags; CI may add -race or -count.
GOTESTFLAGS ?=

.PHONY: all
all: build

##@ Development

.PHONY: generate
generate: $(CONTROLLER_GEN) ## Generate DeepCopy methods.
	$(CONTROLLER_GEN) object:headerFile=hack/boilerplate.go.txt paths=./api/...

.PHONY: manifests
manifests: $(CONTROLLER_GEN) ## Generate CRDs and RBAC from the kubebuilder markers.
	$(CONTROLLER_GEN) rbac:roleName=cnimedic-manager crd paths=./api/... paths=./controllers/... \
		output:crd:artifacts:config=config/crd/bases output:rbac:artifacts:config=config/rbac

.PHONY: fmt
fmt: ## Format the Go code.
	gofmt -w $$(git ls-files '*.go')

.PHONY: lint
lint: ## gofmt and go vet.
	@unformatted=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$unformatted" ]; then echo "gofmt would change: $$unformatted"; exit 1; fi
	go vet ./...

.PHONY: verify-generated
verify-generated: generate manifests ## Fail when generated files are not committed.
	@git diff --exit-code -- api config || { echo "generated files are stale: run make generate manifests and commit"; exit 1; }

##@ Build

.PHONY: build
build: ## Build the manager, the remediator and the kubectl plugin into bin/.
	CGO_ENABLED=0 go build -o $(BIN)/manager ./cmd/manager
	CGO_ENABLED=0 go build -o $(BIN)/remediator ./cmd/remediator
	CGO_ENABLED=0 go build -o $(BIN)/kubectl-cnimedic ./cmd/kubectl-cnimedic

.PHONY: controlplane
controlplane: ## Build kube-apiserver and etcd for envtest from their Go modules (about 5 minutes cold).
	hack/build-controlplane.sh kube-apiserver etcd

##@ Test

.PHONY: test
test: controlplane lint verify-generated ## Unit tests and the envtest suites against a real kube-apiserver and etcd.
	go test $(GOTESTFLAGS) ./...

.PHONY: test-unit
test-unit: ## Only the tests that need no control plane binaries (fast feedback).
	go test $(GOTESTFLAGS) -short ./...

##@ Tools

$(CONTROLLER_GEN): hack/versions.env
	GOBIN=$(BIN) GOFLAGS=-mod=mod go install sigs.k8s.io/controller-tools/cmd/controller-gen@$(CONTROLLER_TOOLS_VERSION)
	@touch $@

$(KUSTOMIZE): hack/versions.env
	GOBIN=$(BIN) GOFLAGS=-mod=mod go install sigs.k8s.io/kustomize/kustomize/v5@$(KUSTOMIZE_VERSION)
	@touch $@

.PHONY: help
help: ## Show this help.
	@awk 'BEGIN {FS = ":.*##"} /^[a-zA-Z_0-9-]+:.*?##/ { printf "  %-18s %s\n", $$1, $$2 } /^##@/ { printf "\n%s\n", substr($$0, 5) }' $(MAKEFILE_LIST)
