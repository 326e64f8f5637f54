//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
	"github.com/cnimedic/cnimedic/e2e/lab"
	"github.com/cnimedic/cnimedic/test/repo"
)

// conflistVersion is the cniVersion of the node's lab conflist (in the conf dir of the node's layout).
func conflistVersion(t *testing.T, r *run) string {
	t.Helper()
	var c lab.ConfList
	if err := json.Unmarshal(r.nodeFile(r.spec().ConfListPath()), &c); err != nil {
		t.Fatalf("the repaired conflist does not parse: %v", err)
	}
	return c.CNIVersion
}

// repairedMessage is the Repaired event's message: what the executor changed.
func repairedMessage(r *run) string {
	for _, e := range r.events {
		if e.Reason == "Repaired" {
			return e.Message
		}
	}
	return ""
}

// The first seed: a conflist whose cniVersion is newer than the node's plugins support. Repaired by rewriting the
// conflist to the highest version every plugin of the chain answers to VERSION with (Debian's 1.1.1 plugins: 1.0.0).
func TestCNIVersionIncompatible(t *testing.T) {
	scenario{
		fault:       lab.FaultCNIVersionNewer,
		wantPhase:   v1alpha1.PhaseSucceeded,
		wantReasons: succeededReasons,
		check: func(t *testing.T, r *run) {
			if v := conflistVersion(t, r); v != "1.0.0" {
				t.Errorf("repaired conflist has cniVersion %q, want 1.0.0 (the highest Debian's plugins support)", v)
			}
			if m := repairedMessage(r); !strings.Contains(m, lab.NodeConfList) {
				t.Errorf("Repaired event %q does not name the conflist it changed", m)
			}
		},
	}.run(t)
}

// The seed's exact variant as an independently built cluster had it (issue 17): every reference plugin at v0.9.1
// (`plugin supports ["0.1.0" ... "0.4.0"]`), loopback included, under cniVersion 1.0.0. Under the default policy
// (versionStrategy RewriteConfig) the node's diagnosis shows what a rewrite cannot fix (containerd asks loopback for
// 1.0.0), so the plan installs the bundled plugins instead of rolling back after a useless rewrite.
func TestCNIVersionIncompatibleOldPluginsUnderTheDefaultPolicy(t *testing.T) {
	scenario{
		fault:       lab.FaultCNIVersionOldPlugins,
		wantPhase:   v1alpha1.PhaseSucceeded,
		wantReasons: succeededReasons,
		check: func(t *testing.T, r *run) {
			if r.nr.Status.Action != v1alpha1.ActionInstallReferencePlugins {
				t.Errorf("action %s: a rewrite cannot serve the old loopback plugin", r.nr.Status.Action)
			}
			if v := conflistVersion(t, r); v != "1.0.0" {
				t.Errorf("conflist cniVersion %q: installing plugins must leave it at 1.0.0", v)
			}
			assertBundledPlugins(t, r, "bridge", "host-local", "portmap", "loopback")
		},
	}.run(t)
}

// The same failure under a policy that allows only rewriting the conflist: no plan can succeed, so the
// remediation escalates saying what the policy would have to allow, and the node is never cordoned or drained.
func TestCNIVersionIncompatibleOldPluginsEscalatesWhenOnlyARewriteIsAllowed(t *testing.T) {
	scenario{
		fault:       lab.FaultCNIVersionOldPlugins,
		policy:      func(p *v1alpha1.RemediationPolicy) { p.Spec.Repair.InstallReferencePlugins = ptr.To(false) },
		wantPhase:   v1alpha1.PhaseEscalated,
		unrepaired:  true,
		wantReasons: []string{"Detected", "Diagnosing", "PlanCannotSucceed"},
		check: func(t *testing.T, r *run) {
			if r.nr.Status.Reason != "PlanCannotSucceed" || !strings.Contains(r.nr.Status.Message, "InstallReferencePlugins") {
				t.Errorf("ended %s: %s", r.nr.Status.Reason, r.nr.Status.Message)
			}
			for _, e := range r.events {
				if e.Reason == "Cordoned" || e.Reason == "Draining" {
					t.Errorf("the node was touched: %s %s", e.Reason, e.Message)
				}
			}
		},
	}.run(t)
}

// assertBundledPlugins fails unless each named plugin on the node is the bundled build.
func assertBundledPlugins(t *testing.T, r *run, names ...string) {
	t.Helper()
	bundle := filepath.Join(repo.Root(), "bin", "cni-bundle")
	for _, p := range names {
		want, err := os.ReadFile(filepath.Join(bundle, p))
		if err != nil {
			t.Fatal(err)
		}
		if got := r.nodeFile(filepath.Join(lab.NodePluginDir, p)); string(got) != string(want) {
			t.Errorf("%s on the node is not the bundled plugin", p)
		}
	}
}

// The same failure repaired the runbook's other way: the reference plugins bundled in the executor image installed
// over the old ones (their sha256 checked against the bundle's manifest), the conflist left as it was.
func TestCNIVersionIncompatibleOldPluginsUpgradePlugins(t *testing.T) {
	scenario{
		fault: lab.FaultCNIVersionOldPlugins,
		policy: func(p *v1alpha1.RemediationPolicy) {
			p.Spec.Repair.VersionStrategy = v1alpha1.VersionRepairUpgradePlugins
		},
		wantPhase:   v1alpha1.PhaseSucceeded,
		wantReasons: succeededReasons,
		check: func(t *testing.T, r *run) {
			if v := conflistVersion(t, r); v != "1.0.0" {
				t.Errorf("conflist cniVersion %q: installing plugins must leave it at 1.0.0", v)
			}
			assertBundledPlugins(t, r, "bridge", "host-local", "portmap", "loopback")
		},
	}.run(t)
}

// The seed's second error: containerd 1.6.0-1.6.3 (v1.6.1 here, built from its module) under a conflist without
// cniVersion sets pods up but cannot tear them down: `failed to destroy network for sandbox "...": invalid version
// "": the version is empty`, pods stuck Terminating. Repaired by adding the version; the runbook's "next attempt
// to stop the pod should be successful" is asserted: the stuck pods are gone.
func TestCNIVersionMissing(t *testing.T) {
	scenario{
		fault:       lab.FaultCNIVersionMissing,
		teardown:    true,
		wantPhase:   v1alpha1.PhaseSucceeded,
		wantReasons: succeededReasons,
		check: func(t *testing.T, r *run) {
			if v := conflistVersion(t, r); v == "" {
				t.Error("the repaired conflist still has no cniVersion")
			}
			if len(r.stuck) == 0 {
				t.Fatal("no pod was stuck terminating")
			}
			r.eventually("the pods stuck terminating are gone", time.Minute, func() (bool, string) {
				for _, ref := range r.stuck {
					p := &corev1.Pod{}
					err := r.c.Get(r.ctx, client.ObjectKey{Namespace: ref.Namespace, Name: ref.Name}, p)
					if !apierrors.IsNotFound(err) {
						return false, fmt.Sprintf("%s still there (%v)", ref.Name, err)
					}
				}
				return true, ""
			})
		},
	}.run(t)
}
