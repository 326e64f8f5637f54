// Package step is the contract between the two halves of the executor: resolving a plan step against the node
// (what to change, decided read-only) and executing it (how to change it safely: journal, backup, atomic write,
// rollback). Resolvers never write; the executor never decides what to write.
package step

import (
	"context"
	"io/fs"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
	"github.com/cnimedic/cnimedic/remediator/host"
)

// Env is what resolving a step needs to know about the node. Paths are host paths.
type Env struct {
	Root host.Root
	// ConfDir is the CNI conf dir the runtime reads (containerd's conf_dir).
	ConfDir string
	// BinDirs are the CNI plugin search path (containerd's bin_dir, possibly several).
	BinDirs []string
	// ContainerdConfig is containerd's config.toml.
	ContainerdConfig string
	// IPAMDataDir is host-local's data dir (/var/lib/cni/networks).
	IPAMDataDir string
	// NetnsDir is where named network namespaces are bind-mounted (/var/run/netns).
	NetnsDir string
	// CNICacheDir is libcni's cache of results (cnicache.DefaultDir when empty; runtimes use libcni's default,
	// so only tests set it).
	CNICacheDir string
	// BundleDir is the directory of the bundled reference plugins and their sha256 manifest (a path inside the
	// executor's own image, not a host path).
	BundleDir string
	// CRIEndpoint is the runtime's CRI socket (host path).
	CRIEndpoint string

	// CNISpecCeiling is the highest CNI spec version the runtime's own libcni implements (1.0.0 for containerd 1.6
	// and 1.7, 1.1.0 for 2.x; see diagnose.RuntimeSpecCeiling). SetCNIVersion never picks a version above it when
	// it chooses one itself. Empty: no limit. Read it while the runtime is still up (it is stopped during repairs).
	CNISpecCeiling string
	// NetNS is the network namespace (a path in this process's view) whose links DeleteLink works on; empty is
	// this process's own, which in the executor pod (hostNetwork) is the host's. Tests point it elsewhere.
	NetNS string
	// FlannelSubnetEnv is flanneld's subnet.env (host path; /run/flannel/subnet.env when empty): while it exists,
	// flannel's VXLAN device flannel.1 is the node's own, which DeleteLink may delete.
	FlannelSubnetEnv string
	// ProcDir is the /proc scanned for processes still inside a network namespace before RemoveStaleNetns calls
	// it stale (the executor runs in the host's PID namespace); empty skips that check.
	ProcDir string
	// Backups lists earlier copies of a host file that the executor kept (its journals), newest first.
	// RestoreConfList restores the newest one that loads. Nil: no backups are known.
	Backups func(hostPath string) ([]BackupCopy, error)
}

// BackupCopy is an earlier copy of a file, as the executor kept it.
type BackupCopy struct {
	// Source says where the copy comes from (such as the journal and record), for the result's message.
	Source  string
	Content []byte
	Mode    fs.FileMode
}

// Edit replaces, creates or removes one file on the host.
type Edit struct {
	// Path is the host path.
	Path string
	// Content is the new content (ignored when Remove is set).
	Content []byte
	// Mode is the new file mode.
	Mode fs.FileMode
	// Remove removes the file instead of writing it.
	Remove bool
	// Why says in words why the file changes; it goes into the result.
	Why string
}

// HostAction is a change that is not a file write, such as deleting a link or unmounting a network namespace.
// The executor journals its description before running it; such actions must be safe to repeat.
type HostAction interface {
	Describe() string
	Do(ctx context.Context) error
}

// Resolution is what a step will change on this node.
type Resolution struct {
	// Edits to files, in order.
	Edits []Edit
	// Actions to run after the edits, in order.
	Actions []HostAction
	// Message says in words what the step found and will do (or why nothing needs doing).
	Message string
}

// NoChange reports whether the node is already as the step wants it.
func (r Resolution) NoChange() bool { return len(r.Edits) == 0 && len(r.Actions) == 0 }

// Resolver decides what one step changes on the node, without changing anything. StopUnit, StartUnit and
// VerifyNode are executed directly and have no resolver.
type Resolver func(ctx context.Context, env Env, s v1alpha1.PlanStep) (Resolution, error)
