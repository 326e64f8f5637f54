// Package step is the contract between the two halves of the executor: resolving a plan step against the node
// (what to change, decided read-only) and executing it (how to change it safely: journal, backup, atomic write,
// rollback). Resolvers never write; the executor never decides what to write.
package step

import (
	"context"
	"io/fs"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
	"github.com/cnimedic/cnimedic/remediator/node"
)

// Env is what resolving a step needs to know about the node: the node's one settings value (remediator/node).
type Env = node.Settings

// BackupCopy is an earlier copy of a file, as the executor kept it.
type BackupCopy = node.BackupCopy

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
