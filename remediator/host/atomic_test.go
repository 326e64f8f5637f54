package host

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/fsnotify/fsnotify"
)

// libcniLoads is libcni's own rule for which files of a conf dir it loads (ConfFiles with the extensions
// containerd passes).
func libcniLoads(name string) bool {
	switch filepath.Ext(name) {
	case ".conf", ".conflist", ".json":
		return true
	}
	return false
}

// TestWriteAtomicAsContainerdSeesIt watches the conf dir with inotify, as containerd does, while a conflist is
// replaced: the only event on a loadable name must be the rename onto the final name, never a create or write of a
// half-written loadable file.
func TestWriteAtomicAsContainerdSeesIt(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "10-lab.conflist")
	if err := os.WriteFile(target, []byte(`{"cniVersion":"1.0.0"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = w.Close() }()
	if err := w.Add(dir); err != nil {
		t.Fatal(err)
	}

	if err := WriteFileAtomic(target, []byte(`{"cniVersion":"0.4.0"}`), 0); err != nil {
		t.Fatal(err)
	}

	var events []fsnotify.Event
	timeout := time.After(500 * time.Millisecond)
collect:
	for {
		select {
		case ev := <-w.Events:
			events = append(events, ev)
		case err := <-w.Errors:
			t.Fatal(err)
		case <-timeout:
			break collect
		}
	}
	sawTemp, sawRenameOnto := false, false
	for _, ev := range events {
		base := filepath.Base(ev.Name)
		switch {
		case ev.Name == target:
			if ev.Has(fsnotify.Write) {
				t.Errorf("the conflist was written in place: %v", ev)
			}
			if ev.Has(fsnotify.Create) {
				sawRenameOnto = true
			}
		case libcniLoads(base):
			t.Errorf("a loadable file other than the target appeared: %v", ev)
		default:
			if !IsTemp(base) {
				t.Errorf("unexpected file in the conf dir: %v", ev)
			}
			sawTemp = true
		}
	}
	if !sawTemp || !sawRenameOnto {
		t.Fatalf("expected a temp file then a rename onto the target, got %v", events)
	}
	got, err := os.ReadFile(target)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != `{"cniVersion":"0.4.0"}` {
		t.Fatalf("content %q", got)
	}
	assertNoTemps(t, dir)
}

// TestWriteAtomicReadersSeeOldOrNew replaces a file many times while readers read it: every read must be one of
// the two complete contents.
func TestWriteAtomicReadersSeeOldOrNew(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "big.conflist")
	a := bytes.Repeat([]byte("a"), 256<<10)
	b := bytes.Repeat([]byte("b"), 300<<10)
	if err := os.WriteFile(target, a, 0o644); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var bad error
	var reads int
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			got, err := os.ReadFile(target)
			if err != nil {
				bad = err
				return
			}
			reads++
			if !bytes.Equal(got, a) && !bytes.Equal(got, b) {
				bad = errors.New("a reader saw a partial file")
				return
			}
		}
	}()
	for i := range 100 {
		content := a
		if i%2 == 0 {
			content = b
		}
		if err := WriteFileAtomic(target, content, 0); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
	if bad != nil {
		t.Fatal(bad)
	}
	if reads == 0 {
		t.Fatal("the reader never ran")
	}
}

func TestWriteAtomicKeepsModeAndOwner(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("this test chowns files: run it as root (the remediator runs as root on a node)")
	}
	old := syscall.Umask(0o077)
	defer syscall.Umask(old)

	dir := t.TempDir()
	f := filepath.Join(dir, "10-lab.conflist")
	if err := os.WriteFile(f, []byte("old"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(f, 0o640); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(f, 1234, 5678); err != nil {
		t.Fatal(err)
	}
	if err := WriteFileAtomic(f, []byte("new"), 0); err != nil {
		t.Fatal(err)
	}
	assertMeta(t, f, 0o640, 1234, 5678)

	// An explicit mode wins; the owner is still kept. setuid survives the chown that precedes the chmod.
	if err := WriteFileAtomic(f, []byte("newer"), 0o755|fs.ModeSetuid); err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(f)
	if fi.Mode()&fs.ModeSetuid == 0 {
		t.Errorf("setuid lost: %v", fi.Mode())
	}
	assertMeta(t, f, 0o755, 1234, 5678)

	// A new file gets the default mode whatever the umask.
	n := filepath.Join(dir, "new.conf")
	if err := WriteFileAtomic(n, []byte("x"), 0); err != nil {
		t.Fatal(err)
	}
	assertMeta(t, n, 0o644, 0, 0)

	// An explicit owner.
	if err := WriteAtomic(n, strings.NewReader("y"), WriteOptions{Owner: &Owner{UID: 42, GID: 43}}); err != nil {
		t.Fatal(err)
	}
	assertMeta(t, n, 0o644, 42, 43)
	assertNoTemps(t, dir)
}

type failingReader struct{ n int }

func (r *failingReader) Read(p []byte) (int, error) {
	if r.n <= 0 {
		return 0, errors.New("source broke")
	}
	k := min(len(p), r.n)
	for i := range k {
		p[i] = 'x'
	}
	r.n -= k
	return k, nil
}

func TestWriteAtomicFailureLeavesOriginal(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "bridge")
	if err := os.WriteFile(f, []byte("original"), 0o755); err != nil {
		t.Fatal(err)
	}
	err := WriteAtomic(f, &failingReader{n: 100 << 10}, WriteOptions{})
	if err == nil || !strings.Contains(err.Error(), "source broke") {
		t.Fatalf("expected the reader's error, got %v", err)
	}
	got, _ := os.ReadFile(f)
	if string(got) != "original" {
		t.Fatalf("original changed: %q", got)
	}
	assertNoTemps(t, dir)
}

func TestWriteAtomicRefusesSymlinkAndDir(t *testing.T) {
	dir := t.TempDir()
	real := filepath.Join(dir, "real.conflist")
	if err := os.WriteFile(real, []byte("r"), 0o644); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "10-link.conflist")
	if err := os.Symlink("real.conflist", link); err != nil {
		t.Fatal(err)
	}
	if err := WriteFileAtomic(link, []byte("x"), 0); err == nil {
		t.Fatal("replaced a symlink")
	}
	if err := WriteFileAtomic(dir, []byte("x"), 0); err == nil {
		t.Fatal("replaced a directory")
	}
	if fi, err := os.Lstat(link); err != nil || fi.Mode()&fs.ModeSymlink == 0 {
		t.Fatal("the link was touched")
	}
}

func TestRemoveAtomicIsRepeatable(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "x.conf")
	if err := os.WriteFile(f, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := RemoveAtomic(f); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := os.Stat(f); !errors.Is(err, fs.ErrNotExist) {
		t.Fatal("still there")
	}
}

func TestResolveStaysInsideRoot(t *testing.T) {
	root := t.TempDir()
	r := Root(root)
	mk := func(p string) {
		if err := os.MkdirAll(r.Path(p), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	mk("/usr/lib/cni")
	mk("/etc/cni/net.d")
	mk("/etc/kubernetes")
	mk("/opt/cni")
	// Debian-style: the CNI bin dir is an absolute link on the host.
	if err := os.Symlink("/usr/lib/cni", r.Path("/opt/cni/bin")); err != nil {
		t.Fatal(err)
	}
	// A relative link and one that tries to climb out of the root.
	if err := os.Symlink("../../kubernetes/lab.conflist", r.Path("/etc/cni/net.d/10-lab.conflist")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("../../../../../../../../etc/passwd", r.Path("/etc/cni/net.d/escape")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("loop2", r.Path("/etc/loop1")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("loop1", r.Path("/etc/loop2")); err != nil {
		t.Fatal(err)
	}

	cases := map[string]string{
		"/opt/cni/bin/bridge":            "/usr/lib/cni/bridge",
		"/opt/cni/bin":                   "/usr/lib/cni",
		"/etc/cni/net.d/10-lab.conflist": "/etc/kubernetes/lab.conflist",
		"/etc/cni/net.d/escape":          "/etc/passwd",
		"/etc/cni/net.d/new/dir/f.conf":  "/etc/cni/net.d/new/dir/f.conf",
		"/../../etc/cni":                 "/etc/cni",
	}
	for in, want := range cases {
		got, err := r.Resolve(in)
		if err != nil {
			t.Errorf("%s: %v", in, err)
			continue
		}
		if got != r.Path(want) {
			t.Errorf("Resolve(%s) = %s, want %s", in, got, r.Path(want))
		}
	}
	if _, err := r.Resolve("/etc/loop1/x"); err == nil {
		t.Error("a symlink loop resolved")
	}
	// The root "/" resolves through the real filesystem.
	if got, err := Root("/").Resolve("/"); err != nil || got != "/" {
		t.Errorf("Resolve on / = %q, %v", got, err)
	}
}

func assertMeta(t *testing.T, name string, perm fs.FileMode, uid, gid int) {
	t.Helper()
	fi, err := os.Stat(name)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != perm {
		t.Errorf("%s: mode %v, want %v", name, fi.Mode().Perm(), perm)
	}
	st := fi.Sys().(*syscall.Stat_t)
	if int(st.Uid) != uid || int(st.Gid) != gid {
		t.Errorf("%s: owner %d:%d, want %d:%d", name, st.Uid, st.Gid, uid, gid)
	}
}

func assertNoTemps(t *testing.T, dir string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if IsTemp(e.Name()) {
			t.Errorf("temp file left behind: %s", e.Name())
		}
	}
}
