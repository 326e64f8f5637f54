// Package remediator holds the node-side executor of cnimedic: the program that runs in the executor pod on a broken
// node, reads the node's CNI and runtime state (diagnose), turns a typed plan into concrete changes (plan) and carries
// them out with backups, atomic writes, a host-side journal and rollback (apply).
//
// Layout:
//
//	host/     the host filesystem as seen through --host-root
//	step/     the contract between resolving a plan step (what to change) and executing it (how to change it safely)
//
// Other subpackages each hold one part of the node: conflists, plugins, containerd's config, host-local IPAM, the
// CRI, systemd units, the journal, the executor and the diagnosis.
package remediator
