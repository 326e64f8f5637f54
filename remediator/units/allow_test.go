package units

import (
	"strings"
	"testing"
)

// TestUnitNamesAreMadeCanonicalAndOnlyTheNodesKubeletAndRuntimeUnitsAreAllowed: a name without a type is a
// service (as systemctl completes it); anything that is not a unit name is refused; the allowlist holds only the
// node's kubelet and runtime units, which must be ones cnimedic knows.
func TestUnitNamesAreMadeCanonicalAndOnlyTheNodesKubeletAndRuntimeUnitsAreAllowed(t *testing.T) {
	for in, want := range map[string]string{"kubelet": "kubelet.service", "k3s-agent.service": "k3s-agent.service", "containerd.socket": "containerd.socket"} {
		if got, err := Canonical(in); err != nil || got != want {
			t.Fatalf("Canonical(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"", ".", "..", "../x", "a/b", "kube let", "-kubelet", ".hidden", "kubelet\n", "kubelet;reboot"} {
		if got, err := Canonical(bad); err == nil {
			t.Fatalf("Canonical(%q) = %q, want an error", bad, got)
		}
	}
	if err := CheckLayout("kubelet.service", "containerd"); err != nil {
		t.Fatal(err)
	}
	if err := CheckLayout("k3s.service", "k3s.service"); err != nil {
		t.Fatal(err)
	}
	if err := CheckLayout("sshd.service", "containerd.service"); err == nil || !strings.HasPrefix(err.Error(), "--kubelet-unit sshd.service: not one cnimedic knows") {
		t.Fatalf("sshd as kubelet: %v", err)
	}
	if err := CheckLayout("kubelet.service", "auditd.service"); err == nil || !strings.HasPrefix(err.Error(), "--runtime-unit auditd.service") {
		t.Fatalf("auditd as runtime: %v", err)
	}
	if err := CheckLayout("kubelet.service", "kubelet.service"); err == nil {
		t.Fatal("kubelet is no runtime unit")
	}
	// A unit the flags leave empty is the detected layout's (checked by NewAllowlist); the other is still checked.
	if err := CheckLayout("", ""); err != nil {
		t.Fatalf("no units given: %v", err)
	}
	if err := CheckLayout("", "sshd.service"); err == nil || !strings.HasPrefix(err.Error(), "--runtime-unit sshd.service") {
		t.Fatalf("sshd as runtime, kubelet left to the layout: %v", err)
	}
	a, err := NewAllowlist("containerd.service", "kubelet")
	if err != nil {
		t.Fatal(err)
	}
	for _, ok := range []string{"kubelet", "kubelet.service", "containerd.service"} {
		if err := a.Check(ok); err != nil {
			t.Fatalf("%s: %v", ok, err)
		}
	}
	for _, no := range []string{"sshd.service", "auditd", "k3s.service", "../x", "."} {
		if err := a.Check(no); err == nil {
			t.Fatalf("%s allowed", no)
		}
	}
	if _, err := NewAllowlist("kubelet.service", "sshd.service"); err == nil || !strings.Contains(err.Error(), "sshd.service is not a kubelet or container runtime unit cnimedic knows") {
		t.Fatalf("sshd as a node unit: %v", err)
	}
}
