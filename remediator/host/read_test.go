package host

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// readWithin runs ReadFile and fails the test when it has not returned within a second.
func readWithin(t *testing.T, name string, max int64) ([]byte, error) {
	t.Helper()
	type answer struct {
		raw []byte
		err error
	}
	done := make(chan answer, 1)
	go func() {
		raw, err := ReadFile(name, max)
		done <- answer{raw, err}
	}()
	select {
	case a := <-done:
		return a.raw, a.err
	case <-time.After(time.Second):
		t.Fatalf("ReadFile(%s) still blocks after a second", name)
		return nil, nil
	}
}

func TestReadFileRefusesAFIFOAtOnceNamingIt(t *testing.T) {
	name := filepath.Join(t.TempDir(), "10-fifo.conflist")
	if err := syscall.Mkfifo(name, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := readWithin(t, name, MaxConfList)
	if !errors.Is(err, ErrNotRegular) || !strings.Contains(err.Error(), name) || !strings.Contains(err.Error(), "named pipe") {
		t.Fatalf("want a not-a-regular-file error naming %s, got %v", name, err)
	}
}

func TestReadFileRefusesALinkToDevZero(t *testing.T) {
	name := filepath.Join(t.TempDir(), "10-zero.conflist")
	if err := os.Symlink("/dev/zero", name); err != nil {
		t.Fatal(err)
	}
	_, err := readWithin(t, name, MaxConfList)
	if !errors.Is(err, ErrNotRegular) || !strings.Contains(err.Error(), name) {
		t.Fatalf("want a not-a-regular-file error naming %s, got %v", name, err)
	}
}

func TestReadFileRefusesAFileOverItsCapNamingItAndTheCap(t *testing.T) {
	name := filepath.Join(t.TempDir(), "10-huge.conflist")
	if err := os.WriteFile(name, bytes.Repeat([]byte(" "), 60<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := readWithin(t, name, MaxConfList)
	if !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), name) || !strings.Contains(err.Error(), "1 MiB") {
		t.Fatalf("want a too-large error naming %s and 1 MiB, got %v", name, err)
	}
	if strings.Contains(err.Error(), "\n") {
		t.Fatalf("the error is not one line: %q", err)
	}
}

func TestReadFileReadsARegularFileUpToItsCap(t *testing.T) {
	name := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(name, []byte("1234"), 0o644); err != nil {
		t.Fatal(err)
	}
	if raw, err := ReadFile(name, 4); err != nil || string(raw) != "1234" {
		t.Fatalf("got %q, %v", raw, err)
	}
	if _, err := ReadFile(name, 3); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("a 4-byte file under a 3-byte cap: got %v", err)
	}
	if _, err := ReadFile(filepath.Join(t.TempDir(), "missing"), 4); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a missing file: got %v", err)
	}
}

func TestReadAllRefusesAStreamOverItsCap(t *testing.T) {
	if _, err := ReadAll("stdin", strings.NewReader("12345"), 4); !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), "stdin") {
		t.Fatalf("got %v", err)
	}
}
