//go:build e2e

package e2e

// This file sorts after zz_storm_test.go on purpose: it replaces the lab's installation with the Helm chart, so it
// runs last, and puts the manifest installation and the lab policy back when it ends.

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
	"github.com/cnimedic/cnimedic/e2e/lab"
	"github.com/cnimedic/cnimedic/remediator/diagnose"
)

// cnimedic installed with its Helm chart instead of deploy/cnimedic.yaml: helm install succeeds and the manager
// becomes Ready, the chart's default policy is there in Manual approval and covers the workers, and the kubectl
// plugin works against it: status, and diagnose, which runs the remediator's read-only diagnosis on a real node
// through a short-lived pod of the chart's executor ServiceAccount and PriorityClass.
func TestHelmChartInstallsAndThePluginWorks(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 12*time.Minute)
	defer cancel()
	if err := theLab.UninstallManifest(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// Leave the lab as Up leaves it: the manifest installation with the lab policy.
		ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
		defer cancel()
		if err := theLab.UninstallHelm(ctx); err != nil {
			t.Errorf("uninstalling the chart: %v", err)
		}
		if err := theLab.Install(ctx); err != nil {
			t.Errorf("reinstalling deploy/cnimedic.yaml: %v", err)
		}
		if _, err := theLab.ApplyPolicy(ctx, lab.LabPolicy()); err != nil {
			t.Errorf("reapplying the lab policy: %v", err)
		}
	})

	out, err := theLab.InstallHelm(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("helm install:\n%s", out)
	c, err := theLab.Client()
	if err != nil {
		t.Fatal(err)
	}
	dep := &appsv1.Deployment{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: lab.Namespace, Name: "cnimedic-manager"}, dep); err != nil {
		t.Fatal(err)
	}
	if dep.Labels["app.kubernetes.io/managed-by"] != "Helm" || dep.Annotations["meta.helm.sh/release-name"] != lab.HelmRelease {
		t.Fatalf("the manager's Deployment is not the chart's: labels %v annotations %v", dep.Labels, dep.Annotations)
	}
	if dep.Status.ReadyReplicas < 1 {
		t.Fatalf("the manager is not Ready: %+v", dep.Status)
	}

	// kubectl cnimedic status: the chart's policy, in Manual approval, covering the workers (counted by the
	// chart's manager, so the manager runs and reconciles).
	workers := len(theLab.Config().Nodes())
	var rep struct {
		Policies []struct {
			Name         string `json:"name"`
			ApprovalMode string `json:"approvalMode"`
			Covered      int    `json:"covered"`
		} `json:"policies"`
	}
	var status []byte
	deadline := time.Now().Add(2 * time.Minute)
	for {
		status, err = theLab.Plugin(ctx, "status", "-o", "json")
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(status, &rep); err != nil {
			t.Fatalf("kubectl cnimedic status -o json: %v\n%s", err, status)
		}
		if len(rep.Policies) == 1 && rep.Policies[0].Covered >= workers {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("kubectl cnimedic status never showed the chart's policy covering the %d workers:\n%s", workers, status)
		}
		time.Sleep(2 * time.Second)
	}
	if p := rep.Policies[0]; p.Name != "default" || p.ApprovalMode != string(v1alpha1.ApprovalManual) {
		t.Fatalf("the chart's policy: %+v, want default in Manual approval", p)
	}
	text, err := theLab.Plugin(ctx, "status")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("kubectl cnimedic status:\n%s", text)

	// kubectl cnimedic diagnose NODE: a real diagnosis of a healthy worker.
	node := theLab.Config().Nodes()[0].Name
	report, err := theLab.Plugin(ctx, "diagnose", node)
	if err != nil {
		t.Fatal(err)
	}
	var d diagnose.Report
	if err := json.Unmarshal(report, &d); err != nil {
		t.Fatalf("kubectl cnimedic diagnose %s: %v\n%s", node, err, report)
	}
	if d.Runtime == nil || !d.Runtime.NetworkReady {
		t.Errorf("diagnose %s: the runtime's network is not ready: %+v %s", node, d.Runtime, d.RuntimeError)
	}
	if d.Containerd.Version == "" || d.Containerd.VersionError != "" { // asked of containerd through its own client
		t.Errorf("diagnose %s: containerd's version %q (%s)", node, d.Containerd.Version, d.Containerd.VersionError)
	}
	if len(d.Selection.Loaded) == 0 || len(d.ConfLists) == 0 || len(d.ConfLists[0].Chain) == 0 {
		t.Errorf("diagnose %s: no conflist loaded: %s", node, d.Selection.Reason)
	}
	// The node is healthy: a diagnosis from the pod must find nothing wrong. Its plugins are Debian's, linked
	// dynamically, and the pod's image has no loader: their versions must still be known.
	for _, f := range d.Findings {
		if f.Severity == diagnose.Error {
			t.Errorf("diagnose %s: a healthy node reported an error: %s", node, f.Summary)
		}
	}
	for _, cl := range d.ConfLists {
		for _, p := range cl.Chain {
			if len(p.Versions) == 0 {
				t.Errorf("diagnose %s: plugin %s's versions are unknown: %s", node, p.Type, p.Error)
			}
		}
	}
	if len(d.Units) == 0 {
		t.Errorf("diagnose %s: no unit states (%s)", node, d.UnitsNote)
	}
	for _, u := range d.Units {
		if u.ActiveState != "active" {
			t.Errorf("diagnose %s: unit %s is %s %s", node, u.Unit, u.ActiveState, u.Error)
		}
	}
	readable, err := theLab.Plugin(ctx, "diagnose", node, "-o", "text")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("kubectl cnimedic diagnose %s -o text:\n%s", node, readable)
}
