package main

import (
	"os"
	"testing"
	"time"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
)

// TestApplyRefusesAPlanThatIsNotTheApprovedOne: the executor pod's plan file comes from an annotation that can be
// changed after the pod was created; its --plan-digest argument cannot. A plan whose digest is not the approved one
// is bad input: one line saying so, exit code 2, nothing read or written on the node.
func TestApplyRefusesAPlanThatIsNotTheApprovedOne(t *testing.T) {
	root := cliRoot(t)
	approved := v1alpha1.Plan{Steps: []v1alpha1.PlanStep{{Type: v1alpha1.StepVerifyNode}}}
	swapped := `{"steps":[{"type":"StopUnit","unit":"kubelet.service"},{"type":"VerifyNode"},{"type":"StartUnit","unit":"kubelet.service"}]}`
	args := append([]string{"apply", "--plan", "-", "--plan-digest", v1alpha1.PlanDigest(approved), "--state-dir", "/var/lib/cnimedic"}, offline(root)...)
	out, stderr, code := remediator(t, 10*time.Second, swapped, args...)
	if code != ExitBadInput || out != "" {
		t.Errorf("exit code %d (want %d), stdout %q", code, ExitBadInput, out)
	}
	oneLineError(t, "apply of a swapped plan", stderr, "not the approved "+v1alpha1.PlanDigest(approved))
	if entries, _ := os.ReadDir(root); len(entries) > 1 {
		t.Errorf("the host root was written: %v", entries)
	}
}
