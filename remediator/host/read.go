package host

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"syscall"
)

// The most the remediator reads of each kind of file. A node file past its cap is an error naming the file, never
// a partial read: a conflist linked to /dev/zero or a 60 MB one must end in a clear error, not in an out-of-memory
// crash or a plan preview of hundreds of megabytes.
const (
	// MaxConfList caps a CNI network configuration file (.conf, .conflist, .json).
	MaxConfList = 1 << 20
	// MaxContainerdConfig caps containerd's config.toml.
	MaxContainerdConfig = 4 << 20
	// MaxSmallFile caps the small bookkeeping files: host-local leases, flannel's subnet.env, a sha256 record.
	MaxSmallFile = 64 << 10
	// MaxCNICacheEntry caps one of libcni's cached results.
	MaxCNICacheEntry = 1 << 20
	// MaxManifest caps the plugin bundle's SHA256SUMS.
	MaxManifest = 1 << 20
	// MaxPlugin caps a bundled plugin binary.
	MaxPlugin = 256 << 20
	// MaxPlan caps a plan file handed to the remediator.
	MaxPlan = 4 << 20
)

// ErrNotRegular is returned (wrapped) for a name that is not a regular file: a FIFO, a device, a socket, a dir.
var ErrNotRegular = errors.New("not a regular file")

// ErrTooLarge is returned (wrapped) for a file larger than its cap.
var ErrTooLarge = errors.New("file too large")

// ReadFile reads a regular file of at most max bytes. It opens without blocking (a FIFO's open would wait for a
// writer forever), refuses anything fstat does not call a regular file (a FIFO, /dev/zero, a socket), and reads at
// most max bytes, failing past them. Every error names the file.
func ReadFile(name string, max int64) ([]byte, error) {
	f, err := os.OpenFile(name, os.O_RDONLY|syscall.O_NONBLOCK|syscall.O_NOCTTY, 0)
	if err != nil {
		return nil, err
	}
	defer func() { _ = f.Close() }()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, &fs.PathError{Op: "read", Path: name, Err: fmt.Errorf("%w (%s)", ErrNotRegular, kind(st.Mode()))}
	}
	if st.Size() > max {
		return nil, tooLarge(name, max)
	}
	// The size can grow between the fstat and the read: read one byte past the cap to tell.
	raw, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, &fs.PathError{Op: "read", Path: name, Err: err}
	}
	if int64(len(raw)) > max {
		return nil, tooLarge(name, max)
	}
	return raw, nil
}

// ReadAll reads at most max bytes from r (such as a plan on stdin), failing past them; name says what r is.
func ReadAll(name string, r io.Reader, max int64) ([]byte, error) {
	raw, err := io.ReadAll(io.LimitReader(r, max+1))
	if err != nil {
		return nil, &fs.PathError{Op: "read", Path: name, Err: err}
	}
	if int64(len(raw)) > max {
		return nil, tooLarge(name, max)
	}
	return raw, nil
}

func tooLarge(name string, max int64) error {
	return &fs.PathError{Op: "read", Path: name, Err: fmt.Errorf("%w: larger than %s", ErrTooLarge, size(max))}
}

func size(n int64) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d bytes", n)
}

func kind(m fs.FileMode) string {
	switch {
	case m&fs.ModeNamedPipe != 0:
		return "a named pipe"
	case m&fs.ModeCharDevice != 0:
		return "a character device"
	case m&fs.ModeDevice != 0:
		return "a block device"
	case m&fs.ModeSocket != 0:
		return "a socket"
	case m.IsDir():
		return "a directory"
	}
	return "mode " + m.String()
}
