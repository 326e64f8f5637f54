// Package e2e is cnimedic's end-to-end suite: each seed failure is injected for real into a node of the lab (a real
// kubelet, containerd, runc and CNI plugins under a real systemd, see e2e/lab), and cnimedic, installed from
// deploy/cnimedic.yaml, must take the node from stuck pods to repaired: detection, approval, drain, the executor
// pod's repair under the node's systemd, verification with a canary, uncordon, and the workload Running again.
//
// The tests carry the build tag e2e and run with `make e2e`, which builds everything the lab needs first. They
// need root. When a prerequisite is missing they fail, naming the make target that provides it; they never skip.
package e2e
