# Operability targets: generated docs, the Helm chart's copies of generated files, the kubectl plugin's krew
# release, and a Helm CLI for the lab. Included by the Makefile (-include hack/operability.mk).

HELM := $(BIN)/helm
# The plugin release the krew manifest describes.
PLUGIN_VERSION ?= v0.1.0

##@ Operability

.PHONY: docs
docs: ## Regenerate docs/signatures.md from the signature catalog.
	go run ./hack/gendocs

.PHONY: helm-sync
helm-sync: ## Copy the generated CRDs, the manager's ClusterRole rules and the alerts into the Helm chart.
	@mkdir -p deploy/helm/cnimedic/files/crds
	cp config/crd/bases/cnimedic.io_noderemediations.yaml config/crd/bases/cnimedic.io_remediationpolicies.yaml config/crd/bases/cnimedic.io_cniremediations.yaml config/crd/bases/cnimedic.io_cniremediationtemplates.yaml deploy/helm/cnimedic/files/crds/
	cp config/rbac/role.yaml deploy/helm/cnimedic/files/manager-role.yaml
	cp config/prometheus/prometheusrule.yaml deploy/helm/cnimedic/files/prometheusrule.yaml

.PHONY: verify-operability
verify-operability: ## Fail when docs/signatures.md, the chart's copies or deploy/cnimedic.yaml are stale.
	go run ./hack/gendocs -check
	go test ./hack/gendocs ./hack/krew
	go test -run 'TestChartMatchesConfig|TestGeneratedRoleIsLeastPrivilege|TestAlertsUseTheMetricsTheCodeExports' ./test/deploytest
	go test -run TestRenderedInstallIsCurrent ./test/manifests

.PHONY: krew
krew: ## Build the plugin's release archives into bin/krew and write deploy/krew/cnimedic.yaml (PLUGIN_VERSION).
	go run ./hack/krew -version $(PLUGIN_VERSION)

.PHONY: krew-verify
krew-verify: ## Rebuild the release archives and fail when deploy/krew/cnimedic.yaml's sums differ.
	go run ./hack/krew -version $(PLUGIN_VERSION) -verify

$(HELM): hack/versions.env
	GOBIN=$(BIN) GOFLAGS=-mod=mod go install helm.sh/helm/v3/cmd/helm@$(HELM_VERSION)
	@touch $@

# The chart's tests (test/deploytest: helm lint, install, upgrade, uninstall) run the helm CLI.
test-deps: $(HELM)

.PHONY: helm-template
helm-template: $(HELM) ## Render the Helm chart with the helm CLI (built from its module), as helm install would.
	$(HELM) template cnimedic deploy/helm/cnimedic --namespace cnimedic-system --kube-version $(KUBERNETES_VERSION)
