package main

import (
	"os/exec"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
)

// The node cache keeps what the controllers read, and a release patched from a cached copy changes only what the
// release changes: nothing stripped is written back, and the other annotations stay (a merge patch that emptied the
// copy's annotations would clear the node's).
func TestStripNodeKeepsWhatIsReadAndPatchesOnlyTheCordon(t *testing.T) {
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: "n1", ResourceVersion: "7",
			Labels:      map[string]string{"pool": "a", "node-role.kubernetes.io/control-plane": ""},
			Annotations: map[string]string{"flannel.alpha.coreos.com/public-ip": "10.0.0.1", v1alpha1.AnnotationCordonedBy: "nr-1"}},
		Spec: corev1.NodeSpec{Unschedulable: true, Taints: []corev1.Taint{{Key: "k", Effect: corev1.TaintEffectNoSchedule}}},
		Status: corev1.NodeStatus{
			Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionFalse, Message: "cni plugin not initialized"}},
			Images:     []corev1.ContainerImage{{Names: []string{"registry.k8s.io/pause:3.10"}, SizeBytes: 1}},
			Capacity:   corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("8")},
			NodeInfo:   corev1.NodeSystemInfo{KubeletVersion: "v1.37.2"},
			Addresses:  []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "10.0.0.1"}},
		},
	}
	out, err := stripNode(node.DeepCopy())
	if err != nil {
		t.Fatal(err)
	}
	got := out.(*corev1.Node)
	if got.Name != "n1" || got.ResourceVersion != "7" || len(got.Labels) != 2 || !got.Spec.Unschedulable || len(got.Spec.Taints) != 1 {
		t.Errorf("lost what the controllers read: %+v", got.ObjectMeta)
	}
	if len(got.Status.Conditions) != 1 || got.Status.Conditions[0].Message != "cni plugin not initialized" {
		t.Errorf("lost the Ready condition: %+v", got.Status.Conditions)
	}
	if got.Annotations[v1alpha1.AnnotationCordonedBy] != "nr-1" || len(got.Annotations) != 2 {
		t.Errorf("annotations: %v, want all of them", got.Annotations)
	}
	if len(got.Status.Images) != 0 || len(got.Status.Capacity) != 0 || got.Status.NodeInfo.KubeletVersion != "" || len(got.Status.Addresses) != 0 {
		t.Errorf("kept what nobody reads: %+v", got.Status)
	}

	// release(): the cordon mark removed and the node uncordoned, from the cached copy.
	before := got.DeepCopy()
	delete(got.Annotations, v1alpha1.AnnotationCordonedBy)
	got.Spec.Unschedulable = false
	raw, err := client.MergeFromWithOptions(before, client.MergeFromWithOptimisticLock{}).Data(got)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"metadata":{"annotations":{"cnimedic.io/cordoned-by":null},"resourceVersion":"7"},"spec":{"unschedulable":null}}`
	if string(raw) != want {
		t.Errorf("patch from a stripped copy:\n got %s\nwant %s", raw, want)
	}
}

// TestTheManagerDoesNotLinkTheNodesCNILibrary: the manager decides, the node acts; libcni (which runs plugin
// binaries) belongs to the remediator alone. Issue 15: the manager linked it only to ask whether a plugin is a
// reference plugin, which internal/signature answers for both sides.
func TestTheManagerDoesNotLinkTheNodesCNILibrary(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, pkg := range strings.Fields(string(out)) {
		if strings.HasPrefix(pkg, "github.com/containernetworking/") {
			t.Errorf("the manager links %s", pkg)
		}
	}
}
