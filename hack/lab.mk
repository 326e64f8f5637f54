# The lab (a real cluster of systemd-nspawn nodes on this machine), the end-to-end suite and the demo.
# Included by the Makefile. Everything here needs root, as the node tests do; state lives in .lab/ (gitignored).
#
#   make demo      build what is needed, bring the lab up, break a node and watch cnimedic repair it
#   make lab-up    bring the lab up (idempotent)       make lab-down   tear it down, leaving nothing
#   make e2e       the end-to-end suite (brings the lab up if needed, and down again if it started it)
#   make images    the lab's container images (bin/images), built without a registry

LAB_BIN := $(BIN)/lab
# Every control-plane and node binary the lab runs, built from Go modules (hack/build-controlplane.sh).
LAB_K8S := kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl etcd
E2E_TIMEOUT ?= 75m
E2E_RUN ?= .

##@ Lab and end-to-end

.PHONY: images
images: ## Build the lab's images (pause, workload, canary, executor, manager) into bin/images, no registry needed.
	hack/build-cni-plugins.sh bundle
	go run ./hack/images -out $(BIN)/images -cni-bundle $(BIN)/cni-bundle

# The real flannel CNI plugin, for the cni-daemon-unavailable fault: containernetworking/plugins shipped it up to
# v0.9.1 (flannel's own module is not served here).
$(BIN)/cni-flannel/flannel: hack/versions.env
	GOFLAGS= CGO_ENABLED=0 GOBIN=$(BIN)/cni-flannel go install -ldflags "-s -w" github.com/containernetworking/plugins/plugins/meta/flannel@$(OLD_CNI_PLUGINS_VERSION)
	@touch $@

.PHONY: lab-deps
# The e2e suite also installs the Helm chart with the helm CLI ($(BIN)/helm, hack/operability.mk) and runs the
# kubectl plugin against the lab.
lab-deps: node-rootfs images $(BIN)/cni-flannel/flannel $(BIN)/helm ## Everything the lab runs: control plane and kubelet, CNI plugins, node rootfs, images, helm and the kubectl plugin.
	hack/build-controlplane.sh $(LAB_K8S)
	CGO_ENABLED=0 go build -o $(BIN)/kubectl-cnimedic ./cmd/kubectl-cnimedic
	hack/build-cni-plugins.sh old bundle debian
	hack/build-old-containerd.sh
	CGO_ENABLED=0 go build -o $(LAB_BIN) ./hack/lab

.PHONY: lab-up
lab-up: lab-deps ## Bring the lab up: control plane, 3 worker nodes (the third laid out as a k3s agent, emulated), cnimedic and the lab policy (idempotent).
	$(LAB_BIN) up

.PHONY: lab-down
lab-down: ## Tear the lab down, leaving nothing behind.
	@if [ -x $(LAB_BIN) ]; then $(LAB_BIN) down; else CGO_ENABLED=0 go run ./hack/lab down; fi

.PHONY: lab-status
lab-status: ## Show the lab's nodes, pods, remediations and memory.
	$(LAB_BIN) status

.PHONY: e2e
e2e: lab-deps ## End-to-end suite on the lab: each seed failure injected and repaired by cnimedic (about 15 min).
	go test -tags e2e -count=1 -timeout $(E2E_TIMEOUT) -v -run '$(E2E_RUN)' ./e2e/

.PHONY: demo
demo: lab-deps ## The guided tour: bring the lab up, break a node the way the first seed does, watch cnimedic repair it.
	$(LAB_BIN) demo
