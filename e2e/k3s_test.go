//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pelletier/go-toml/v2"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
	"github.com/cnimedic/cnimedic/e2e/lab"
)

// The scenarios of this file run on the lab's k3s-layout node, worker-3. It EMULATES a k3s agent's layout, not k3s's
// binary (none can be had on this machine; e2e/lab/k3s.go): one k3s-agent.service (KillMode=process) running the real
// containerd at k3s's socket, state and root, with config.toml rendered from config.toml.tmpl at every start, and the
// real kubelet; CNI in k3s's agent/etc/cni/net.d and data/current/bin. cnimedic sees it only through the node's
// files, as it would see k3s.

// spec is the lab's description of the scenario's node.
func (r *run) spec() lab.NodeSpec {
	_, spec, err := theLab.Node(r.node)
	if err != nil {
		r.t.Fatal(err)
	}
	return spec
}

// nodeOfLayout is the lab's node of a layout, with the manager moved off it: its drain would evict the manager in
// the middle of the repair, which is a different test.
func (r *run) nodeOfLayout(layout string) string {
	for _, n := range theLab.Config().Nodes() {
		if n.Layout == layout {
			r.moveManagerOff(n.Name)
			return n.Name
		}
	}
	r.t.Fatalf("the lab has no node of layout %q", layout)
	return ""
}

// moveManagerOff reschedules the manager's pod elsewhere when it runs on node: the node cordoned, the pod deleted,
// a new one Ready on another worker, the node uncordoned.
func (r *run) moveManagerOff(node string) {
	managers := func() []corev1.Pod {
		pods := &corev1.PodList{}
		if err := r.c.List(r.ctx, pods, client.InNamespace(lab.Namespace), client.MatchingLabels{"app.kubernetes.io/component": "manager"}); err != nil {
			r.t.Fatal(err)
		}
		return pods.Items
	}
	var on []corev1.Pod
	for _, p := range managers() {
		if p.Spec.NodeName == node {
			on = append(on, p)
		}
	}
	if len(on) == 0 {
		return
	}
	r.t.Logf("the manager runs on %s: moving it to another worker first", node)
	cordon := func(v bool) {
		patch := []byte(fmt.Sprintf(`{"spec":{"unschedulable":%t}}`, v))
		if err := r.c.Patch(r.ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: node}}, client.RawPatch(types.StrategicMergePatchType, patch)); err != nil {
			r.t.Fatal(err)
		}
	}
	cordon(true)
	defer cordon(false)
	for i := range on {
		if err := r.c.Delete(r.ctx, &on[i]); err != nil {
			r.t.Fatal(err)
		}
	}
	r.eventually("the manager Ready on another worker", 2*time.Minute, func() (bool, string) {
		var where []string
		ready := false
		for _, p := range managers() {
			where = append(where, p.Spec.NodeName)
			if p.Spec.NodeName == node {
				return false, "a manager pod still on " + node
			}
			ready = ready || (p.DeletionTimestamp == nil && podReady(&p))
		}
		return ready, fmt.Sprintf("manager pods on %v, none Ready", where)
	})
}

// assertK3sLayout checks that the node's diagnosis recognised the k3s agent: its one unit, k3s's socket and the
// template containerd's config is rendered from, and a layout cnimedic serves.
func assertK3sLayout(t *testing.T, r *run) {
	t.Helper()
	if r.nr.Status.Diagnosis == nil || r.nr.Status.Diagnosis.Layout == nil {
		t.Fatalf("status.diagnosis.layout is empty: %+v", r.nr.Status.Diagnosis)
	}
	l := r.nr.Status.Diagnosis.Layout
	if l.Kind != v1alpha1.LayoutK3s || l.Role != "agent" || !slices.Equal(l.Units, []string{lab.K3sUnit}) || l.CRISocket != lab.K3sSocket ||
		l.RuntimeConfig != lab.K3sContainerdConfig || l.RuntimeConfigTemplate != lab.K3sContainerdTemplate || !l.Servable {
		t.Errorf("status.diagnosis.layout %+v: want k3s (agent), units [%s], socket %s, config %s from %s, servable", *l, lab.K3sUnit, lab.K3sSocket, lab.K3sContainerdConfig, lab.K3sContainerdTemplate)
	}
	if !slices.Contains(l.BinDirs, lab.K3sBinDir) {
		t.Errorf("status.diagnosis.layout binDirs %v, want k3s's %s", l.BinDirs, lab.K3sBinDir)
	}
}

// confDirOf is the CNI conf dir a containerd config (version 2) sets.
func confDirOf(t *testing.T, data []byte) string {
	t.Helper()
	var doc struct {
		Plugins map[string]struct {
			CNI struct {
				ConfDir string `toml:"conf_dir"`
			} `toml:"cni"`
		} `toml:"plugins"`
	}
	if err := toml.Unmarshal(data, &doc); err != nil {
		t.Fatalf("containerd's config does not parse: %v\n%s", err, data)
	}
	return doc.Plugins["io.containerd.grpc.v1.cri"].CNI.ConfDir
}

// The first seed on the k3s-layout node (emulated: see the top of this file): the conflist in k3s's conf dir is
// rewritten to the highest version the plugins in k3s's data/current/bin support, with k3s-agent.service stopped and
// started as the one unit.
func TestTheVersionSeedIsRepairedOnTheNodeLaidOutAsAK3sAgent(t *testing.T) {
	scenario{
		fault:       lab.FaultCNIVersionNewer,
		layout:      lab.LayoutK3sAgent,
		wantPhase:   v1alpha1.PhaseSucceeded,
		wantReasons: succeededReasons,
		check: func(t *testing.T, r *run) {
			assertK3sLayout(t, r)
			if v := conflistVersion(t, r); v != "1.0.0" {
				t.Errorf("repaired conflist has cniVersion %q, want 1.0.0 (the highest the plugins in %s support)", v, lab.K3sBinDir)
			}
			if m := repairedMessage(r); !strings.Contains(m, lab.K3sConfDir) {
				t.Errorf("Repaired event %q does not name the conflist it changed in k3s's conf dir", m)
			}
		},
	}.run(t)
}

// The seed's second error on the k3s-layout node (emulated): containerd 1.6.1 in place of the binary k3s-agent.service
// runs, a conflist without cniVersion in k3s's conf dir, pods stuck Terminating. Repaired by adding the version; the
// stuck pods are gone.
func TestTheMissingVersionSeedIsRepairedOnTheNodeLaidOutAsAK3sAgent(t *testing.T) {
	scenario{
		fault:       lab.FaultCNIVersionMissing,
		layout:      lab.LayoutK3sAgent,
		teardown:    true,
		wantPhase:   v1alpha1.PhaseSucceeded,
		wantReasons: succeededReasons,
		check: func(t *testing.T, r *run) {
			assertK3sLayout(t, r)
			if v := conflistVersion(t, r); v == "" {
				t.Error("the repaired conflist in k3s's conf dir still has no cniVersion")
			}
			if len(r.stuck) == 0 {
				t.Fatal("no pod was stuck terminating")
			}
			r.eventually("the pods stuck terminating are gone", time.Minute, func() (bool, string) {
				for _, ref := range r.stuck {
					p := &corev1.Pod{}
					if err := r.c.Get(r.ctx, client.ObjectKey{Namespace: ref.Namespace, Name: ref.Name}, p); err == nil {
						return false, p.Name + " still there"
					}
				}
				return true, ""
			})
		},
	}.run(t)
}

// IPAM exhausted on the k3s-layout node (emulated): the leaked leases reclaimed while k3s-agent.service is stopped;
// a DaemonSet pod that runs through the repair keeps its lease and its container, as k3s's KillMode=process leaves
// the containers of a stopped unit running.
func TestIPAMExhaustionIsRepairedOnTheNodeLaidOutAsAK3sAgent(t *testing.T) {
	var keeper corev1.Pod
	scenario{
		fault:       lab.FaultIPAMExhausted,
		layout:      lab.LayoutK3sAgent,
		wantPhase:   v1alpha1.PhaseSucceeded,
		wantReasons: succeededReasons,
		setup: func(t *testing.T, r *run) {
			keeper = r.startKeeper()
			r.waitLeasesSettled()
		},
		check: func(t *testing.T, r *run) {
			assertK3sLayout(t, r)
			if len(r.nodeFile(filepath.Join(lab.NodeIPAMDir, keeper.Status.PodIP))) == 0 {
				t.Errorf("the live pod's lease %s was removed", keeper.Status.PodIP)
			}
			assertSameContainer(t, r, keeper)
			assertRangeReclaimed(t, r)
		},
	}.run(t)
}

// waitLeasesSettled waits until the node's host-local range holds exactly the leases of the pods that run there: an
// earlier scenario's pods, deleted at once, are torn down by kubelet after they are gone from the API, and a lease
// they free after the injection would leave the range not quite full (the diagnosis then rightly finds it not
// exhausted).
func (r *run) waitLeasesSettled() {
	node, spec, err := theLab.Node(r.node)
	if err != nil {
		r.t.Fatal(err)
	}
	r.eventually("only live pods' leases in "+lab.NodeIPAMDir+" on "+r.node, 2*time.Minute, func() (bool, string) {
		pods := &corev1.PodList{}
		if err := r.c.List(r.ctx, pods); err != nil {
			return false, err.Error()
		}
		live := 0
		for _, p := range pods.Items {
			if a, err := netip.ParseAddr(p.Status.PodIP); err == nil && p.Spec.NodeName == r.node && !p.Spec.HostNetwork && spec.PodCIDR.Contains(a) {
				live++
			}
		}
		entries, err := os.ReadDir(node.RootDir() + lab.NodeIPAMDir)
		if err != nil {
			return false, err.Error()
		}
		leases := 0
		for _, e := range entries {
			if a, err := netip.ParseAddr(e.Name()); err == nil && spec.PodCIDR.Contains(a) {
				leases++
			}
		}
		return leases == live, fmt.Sprintf("%d leases, %d live pods with an address", leases, live)
	})
}

// assertSameContainer fails unless a pod that ran before is still the same pod, Running, its container never
// restarted.
func assertSameContainer(t *testing.T, r *run, before corev1.Pod) {
	t.Helper()
	now := &corev1.Pod{}
	if err := r.c.Get(r.ctx, client.ObjectKeyFromObject(&before), now); err != nil {
		t.Fatalf("the pod that ran before: %v", err)
	}
	restarts := int32(-1)
	if len(now.Status.ContainerStatuses) == 1 {
		restarts = now.Status.ContainerStatuses[0].RestartCount
	}
	if now.UID != before.UID || now.Status.PodIP != before.Status.PodIP || now.Status.Phase != corev1.PodRunning || restarts != 0 {
		t.Errorf("the pod that ran before changed: %s %s -> %s %s, %s, %d restarts", before.UID, before.Status.PodIP, now.UID, now.Status.PodIP, now.Status.Phase, restarts)
	}
}

// containerd's CNI settings wrong on the k3s-layout node (emulated): conf_dir pointed at an empty directory in
// config.toml.tmpl, as a person misconfiguring k3s would write it (config.toml itself is rendered from the template
// at every start). The repair edits the template; config.toml carries the repaired value; and after a restart of
// k3s-agent.service, as a person or a reboot does, config.toml is rendered afresh with it, the node is Ready, a pod
// that ran through the restart keeps its container, and a new pod gets its network.
func TestARepairOfContainerdsCNISettingsOnAK3sAgentEditsTheTemplateAndSurvivesARestartOfItsUnit(t *testing.T) {
	scenario{
		fault:         lab.FaultConfDirElsewhere,
		layout:        lab.LayoutK3sAgent,
		nodeCondition: true,
		wantPhase:     v1alpha1.PhaseSucceeded,
		wantReasons:   succeededReasons,
		check: func(t *testing.T, r *run) {
			assertK3sLayout(t, r)
			if got := confDirOf(t, r.nodeFile(lab.K3sContainerdTemplate)); got != lab.K3sConfDir {
				t.Fatalf("the template after the repair sets conf_dir %q, want k3s's %s", got, lab.K3sConfDir)
			}
			if got := confDirOf(t, r.nodeFile(lab.K3sContainerdConfig)); got != lab.K3sConfDir {
				t.Errorf("config.toml after the repair sets conf_dir %q, want %s", got, lab.K3sConfDir)
			}
			keeper := r.startKeeper()
			node, _, err := theLab.Node(r.node)
			if err != nil {
				t.Fatal(err)
			}
			inode := func() uint64 {
				st, err := os.Stat(node.RootDir() + lab.K3sContainerdConfig)
				if err != nil {
					return 0
				}
				return st.Sys().(*syscall.Stat_t).Ino
			}
			before := inode()
			t.Logf("systemctl restart %s on %s", lab.K3sUnit, r.node)
			ctx, cancel := context.WithTimeout(r.ctx, time.Minute)
			defer cancel()
			if err := theLab.RestartUnits(ctx, r.node, lab.K3sUnit); err != nil {
				t.Fatal(err)
			}
			r.eventually("config.toml rendered afresh from the template", 30*time.Second, func() (bool, string) {
				return inode() != before && inode() != 0, "config.toml not rewritten yet"
			})
			if got := confDirOf(t, r.nodeFile(lab.K3sContainerdConfig)); got != lab.K3sConfDir {
				t.Errorf("config.toml rendered after the restart sets conf_dir %q, want %s: the repair did not last", got, lab.K3sConfDir)
			}
			r.eventually("node "+r.node+" Ready after the restart", 2*time.Minute, func() (bool, string) {
				n := &corev1.Node{}
				if err := r.c.Get(r.ctx, client.ObjectKey{Name: r.node}, n); err != nil {
					return false, err.Error()
				}
				return lab.NodeReady(n)
			})
			r.assertNodeHealthy()
			assertSameContainer(t, r, keeper)
		},
	}.run(t)
}

// A node whose CRI socket is where no layout cnimedic knows puts it: a kubeadm-style worker whose containerd an
// operator moved ([grpc] address in config.toml, kubelet's containerRuntimeEndpoint after it; the node Ready and
// running pods). A CNI failure there is detected and diagnosed, and the remediation ends Escalated
// (LayoutNotServable) before any cordon: the node is never cordoned or drained, and no executor runs a repair.
func TestANodeWhoseCRISocketIsWhereNoKnownLayoutPutsItIsEscalatedAndNeverCordoned(t *testing.T) {
	scenario{
		fault:       lab.FaultCNIVersionNewer,
		wantPhase:   v1alpha1.PhaseEscalated,
		unrepaired:  true,
		wantReasons: []string{"Detected", "Diagnosing", "LayoutNotServable"},
		setup: func(t *testing.T, r *run) {
			t.Logf("moving containerd's socket on %s to %s", r.node, lab.MovedCRISocket)
			if err := theLab.MoveCRISocket(r.ctx, r.node); err != nil {
				t.Fatal(err)
			}
		},
		check: func(t *testing.T, r *run) {
			if r.nr.Status.Diagnosis == nil || r.nr.Status.Diagnosis.Layout == nil {
				t.Fatalf("status.diagnosis.layout is empty: %+v", r.nr.Status.Diagnosis)
			}
			l := r.nr.Status.Diagnosis.Layout
			if l.Kind != v1alpha1.LayoutKubeadm || l.Servable || !strings.Contains(l.Reason, "no CRI socket") ||
				!slices.Equal(l.Units, []string{"kubelet.service", "containerd.service"}) {
				t.Errorf("status.diagnosis.layout %+v: want kubeadm (kubelet.service, containerd.service), not servable for want of a CRI socket", *l)
			}
			if !strings.Contains(r.nr.Status.Message, "never cordoned") {
				t.Errorf("the escalation does not say the node was left alone: %s", r.nr.Status.Message)
			}
			n := &corev1.Node{}
			if err := r.c.Get(r.ctx, client.ObjectKey{Name: r.node}, n); err != nil {
				t.Fatal(err)
			}
			if n.Spec.Unschedulable || n.Annotations[v1alpha1.AnnotationCordonedBy] != "" {
				t.Errorf("node %s was cordoned: unschedulable %v, annotations %v", r.node, n.Spec.Unschedulable, n.Annotations)
			}
			for _, e := range r.events {
				if e.Reason == "Cordoned" || e.Reason == "Draining" || e.Reason == "Repaired" || e.Reason == "ExecutorStarted" && strings.Contains(e.Message, "(apply)") {
					t.Errorf("the node was touched: %s %s", e.Reason, e.Message)
				}
			}
			for _, h := range r.nr.Status.History {
				if h.Phase == v1alpha1.PhaseDraining || h.Phase == v1alpha1.PhaseRepairing {
					t.Errorf("the remediation went through %s", h.Phase)
				}
			}
		},
	}.run(t)
}
