package host

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// TempSuffix ends the name of every temporary file the remediator writes next to a file it replaces. containerd
// (libcni) loads every *.conf, *.conflist and *.json of its conf dir on each file event, so a temp file must never
// carry one of those extensions, or the runtime could load a half-written network config.
const TempSuffix = ".cnimedic-tmp"

// DefaultFileMode is the mode of a file created without an explicit mode.
const DefaultFileMode fs.FileMode = 0o644

// Owner is a file's numeric owner.
type Owner struct {
	UID, GID int
}

// WriteOptions say how WriteAtomic sets the new file's metadata.
type WriteOptions struct {
	// Mode of the new file. Zero keeps the mode of the file being replaced, or DefaultFileMode for a new file.
	// Only permission, setuid, setgid and sticky bits are used.
	Mode fs.FileMode
	// ExactMode applies Mode even when it is zero (restoring a file nobody may read).
	ExactMode bool
	// Owner of the new file. Nil keeps the owner of the file being replaced, or the process's for a new file.
	Owner *Owner
}

// WriteFileAtomic replaces (or creates) the file at the local path name with data, so that a reader sees either
// the old or the new content and never a partial file, and the change survives a crash once it returns.
// See WriteAtomic.
func WriteFileAtomic(name string, data []byte, mode fs.FileMode) error {
	return WriteAtomic(name, bytes.NewReader(data), WriteOptions{Mode: mode})
}

// WriteAtomic replaces (or creates) the file at the local path name with the content of r: it writes a temp file
// in the same directory (named so that no CNI config loader picks it up, see TempSuffix), sets its mode and owner,
// fsyncs it, renames it over name and fsyncs the directory so the rename itself is durable.
//
// name must not be a symlink: rename(2) would replace the link, not its target; resolve it first (Root.Resolve).
// The parent directory must exist.
func WriteAtomic(name string, r io.Reader, opts WriteOptions) (err error) {
	dir, base := filepath.Split(name)
	if dir == "" {
		dir = "."
	}
	mode := opts.Mode
	owner := opts.Owner
	if fi, statErr := os.Lstat(name); statErr == nil {
		if fi.Mode()&fs.ModeSymlink != 0 {
			return fmt.Errorf("refusing to replace symlink %s: resolve it first", name)
		}
		if !fi.Mode().IsRegular() {
			return fmt.Errorf("refusing to replace %s: not a regular file (%s)", name, fi.Mode().Type())
		}
		if mode == 0 && !opts.ExactMode {
			mode = fi.Mode()
		}
		if owner == nil {
			if st, ok := fi.Sys().(*syscall.Stat_t); ok {
				owner = &Owner{UID: int(st.Uid), GID: int(st.Gid)}
			}
		}
	} else if !errors.Is(statErr, fs.ErrNotExist) {
		return statErr
	}
	if mode == 0 && !opts.ExactMode {
		mode = DefaultFileMode
	}
	mode &= fs.ModePerm | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky

	tmp, err := createTemp(dir, base)
	if err != nil {
		return err
	}
	tmpName := tmp.Name()
	defer func() {
		if err != nil {
			_ = tmp.Close()
			_ = os.Remove(tmpName)
		}
	}()
	if _, err = io.Copy(tmp, r); err != nil {
		return fmt.Errorf("write %s: %w", tmpName, err)
	}
	if owner != nil {
		// Before the chmod: chown clears setuid/setgid bits.
		if err = tmp.Chown(owner.UID, owner.GID); err != nil {
			return fmt.Errorf("chown %s: %w", tmpName, err)
		}
	}
	// Explicitly, because the create mode went through the umask.
	if err = tmp.Chmod(mode); err != nil {
		return fmt.Errorf("chmod %s: %w", tmpName, err)
	}
	if err = tmp.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", tmpName, err)
	}
	if err = tmp.Close(); err != nil {
		return fmt.Errorf("close %s: %w", tmpName, err)
	}
	if err = os.Rename(tmpName, name); err != nil {
		return err
	}
	return SyncDir(dir)
}

// createTemp creates an empty temp file for base in dir, readable by its owner only until WriteAtomic sets the
// final mode. The name starts with a dot and ends in TempSuffix.
func createTemp(dir, base string) (*os.File, error) {
	for range 10 {
		var rnd [6]byte
		if _, err := rand.Read(rnd[:]); err != nil {
			return nil, err
		}
		// Keep the name under NAME_MAX (255) whatever the length of base.
		b := base
		if len(b) > 200 {
			b = b[:200]
		}
		name := filepath.Join(dir, "."+b+"."+hex.EncodeToString(rnd[:])+TempSuffix)
		f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if errors.Is(err, fs.ErrExist) {
			continue
		}
		return f, err
	}
	return nil, fmt.Errorf("could not create a temp file in %s", dir)
}

// IsTemp reports whether name is a temp file of WriteAtomic (left behind when the process died mid-write).
func IsTemp(name string) bool {
	return strings.HasSuffix(name, TempSuffix)
}

// RemoveAtomic removes the file at the local path name and fsyncs its directory. A file that does not exist is
// not an error: removal is meant to be repeatable.
func RemoveAtomic(name string) error {
	if err := os.Remove(name); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return SyncDir(filepath.Dir(name))
}

// SyncDir fsyncs a directory, which makes the creations, renames and removals of its entries durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer func() { _ = d.Close() }()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("fsync dir %s: %w", dir, err)
	}
	return nil
}

// maxSymlinks bounds symlink resolution like the kernel's own limit (ELOOP).
const maxSymlinks = 40

// Resolve returns where the host path p is visible to this process with every symlink in it resolved as the host
// would resolve it: inside the root. An absolute link target is taken relative to the host's root, not this
// process's, and ".." never leaves the root. With --host-root, a plain filepath.EvalSymlinks would follow a host
// link such as /opt/cni/bin -> /usr/lib/cni into the executor's own image.
//
// Components that do not exist yet are kept as they are, so the result can name a file about to be created.
func (r Root) Resolve(p string) (string, error) {
	root := string(r)
	if root == "" {
		root = "/"
	}
	// resolved is a clean host path whose components all exist and are not symlinks (so far).
	resolved := "/"
	rest := strings.Split(filepath.Clean("/"+p), "/")
	links := 0
	for len(rest) > 0 {
		c := rest[0]
		rest = rest[1:]
		switch c {
		case "", ".":
			continue
		case "..":
			resolved = filepath.Dir(resolved)
			continue
		}
		next := filepath.Join(resolved, c)
		fi, err := os.Lstat(r.Path(next))
		if errors.Is(err, fs.ErrNotExist) {
			// Nothing below a missing component can be a link: keep the rest as given.
			resolved = filepath.Join(append([]string{next}, rest...)...)
			rest = nil
			break
		}
		if err != nil {
			return "", err
		}
		if fi.Mode()&fs.ModeSymlink == 0 {
			resolved = next
			continue
		}
		links++
		if links > maxSymlinks {
			return "", fmt.Errorf("resolve %s: too many levels of symbolic links", p)
		}
		target, err := os.Readlink(r.Path(next))
		if err != nil {
			return "", err
		}
		if filepath.IsAbs(target) {
			resolved = "/"
		}
		rest = append(strings.Split(target, "/"), rest...)
	}
	return r.Path(resolved), nil
}
