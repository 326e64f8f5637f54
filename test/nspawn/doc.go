// Package nspawn boots and tears down "nodes": systemd-nspawn containers running a real systemd as PID 1, with
// Debian's containerd, runc and CNI plugins, on hosts whose own PID 1 is not systemd. The remediator's tests drive
// the node's units over its D-Bus system bus; the lab runs kubelet in such nodes on a host bridge.
//
// A node is made of:
//   - a root filesystem: an overlayfs over the shared base built by hack/node-rootfs.sh (bin/node-rootfs), so the
//     base stays pristine and every boot starts clean; the writable layer lives in the node's state directory, and
//     the node's / is visible from the host at Node.RootDir, where tests inject faults;
//   - /var/lib/containerd bound from a plain directory, since containerd's overlayfs snapshotter cannot stack on
//     the overlay root;
//   - its own cgroup, a child of the caller's, in every hierarchy of the cgroup v1 hybrid layout: a launcher
//     process joins them before it execs systemd-nspawn, so that the node's cgroup namespace, and so its kubelet's
//     kubepods tree, is its own (two kubelets sharing one garbage-collect each other's pods);
//   - its system bus socket on the host at STATE/bus/system_bus_socket (Node.BusAddress), reached with
//     Node.Systemd (go-systemd over godbus, with no process-wide DBUS_SYSTEM_BUS_ADDRESS);
//   - a private network, or a veth on a host bridge with a static address set by systemd-networkd.
//
// Boot waits for SystemState=running; Halt powers the node off the orderly way and then removes every trace of it
// (processes, mounts, cgroups, nspawn's files in /run/systemd/nspawn, the state directory); Cleanup does the same
// at once, for a node left behind by a process that was killed. Boot runs Cleanup on its state directory first,
// so a killed test run never breaks the next one. The host facts behind the flags are in docs/lab.md.
//
// Measured on our CI machine kind (2 vCPU VM, cgroup v1 hybrid, systemd 252 in the node, containerd 1.6.20):
//   - boot to SystemState=running: 0.4-0.5 s on an idle host, up to 2 s while other builds load both CPUs;
//     two nodes booted at once on a bridge, addresses configured: 0.8 s;
//   - halt (orderly power-off) and cleanup: 0.2-0.4 s;
//   - stop / start of the node's containerd.service over D-Bus: 5-25 ms / 70-110 ms;
//   - memory per idle node (systemd, journald, networkd, logind, dbus, containerd; no kubelet): 23 MiB charged to
//     its memory cgroup, of which 15 MiB RSS. The lab's nodes with kubelet were measured at 70-120 MiB.
//   - hack/node-rootfs.sh: a cold build (debootstrap from the Debian mirror) 1 min 36 s, 322 MB; a rebuild from
//     its cached bin/node-rootfs.tar.zst (117 MB) 1.6 s.
//
// Everything here needs root. Tests use the nspawntest subpackage, which fails (never skips) with the make target
// to run when a prerequisite is missing.
package nspawn
