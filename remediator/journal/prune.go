package journal

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/cnimedic/cnimedic/remediator/host"
)

// Retention says which finished journals are kept. A journal is the record of what a repair changed and holds
// the backups that RestoreConfList and a later rollback read, so pruning is conservative: only finished
// journals, only beyond the newest Keep of them, and only once they are older than MinAge.
type Retention struct {
	// Keep is how many of the newest finished journals always stay, whatever their age.
	Keep int
	// MinAge is how long a finished journal stays at least (from its result, or its rollback's result).
	MinAge time.Duration
}

// DefaultRetention keeps the last 10 finished journals and any that finished in the last 30 days: long after the
// manager could ask for a rollback (minutes), and enough history for a person reading a node's past repairs.
var DefaultRetention = Retention{Keep: 10, MinAge: 30 * 24 * time.Hour}

// pruningPrefix marks a journal being removed: it is renamed first, so that a crash mid-removal leaves a directory
// no reader takes for a journal (no remediation id starts with a dot), which the next prune finishes removing.
const pruningPrefix = ".pruning-"

// Prune removes the finished journals under base that ret does not keep, and returns their ids. The caller holds
// the node lock, so no run starts meanwhile; a journal whose own lock is held (a process reading or recovering
// it) is left alone. Unfinished journals (no result, or a requested rollback without its result) are never
// removed: they are what a recovery needs.
func Prune(root host.Root, base string, now time.Time, ret Retention) ([]string, error) {
	if base == "" {
		base = DefaultBase
	}
	dir := root.Path(base)
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	type finished struct {
		id string
		at time.Time
	}
	var done []finished
	var errs []error
	for _, e := range ents {
		if !e.IsDir() {
			continue
		}
		if strings.HasPrefix(e.Name(), pruningPrefix) {
			errs = append(errs, os.RemoveAll(filepath.Join(dir, e.Name()))) // an earlier prune was interrupted
			continue
		}
		if ValidID(e.Name()) != nil {
			continue
		}
		if at, ok := finishedAt(root, base, e.Name()); ok {
			done = append(done, finished{id: e.Name(), at: at})
		}
	}
	sort.Slice(done, func(a, b int) bool { return done[a].at.After(done[b].at) })
	var removed []string
	for i, f := range done {
		if i < ret.Keep || now.Sub(f.at) < ret.MinAge {
			continue
		}
		ok, err := removeJournal(dir, f.id)
		if err != nil {
			errs = append(errs, fmt.Errorf("prune journal %s: %w", f.id, err))
		}
		if ok {
			removed = append(removed, f.id)
		}
	}
	return removed, errors.Join(errs...)
}

// finishedAt is when a journal finished: the newest of its result files. ok is false for an unfinished journal:
// no result yet, or a rollback was asked for (an undo record) and has no result yet.
func finishedAt(root host.Root, base, id string) (time.Time, bool) {
	dir := Dir(root, base, id)
	res, err := os.Stat(filepath.Join(dir, ResultFile))
	if err != nil {
		return time.Time{}, false
	}
	at := res.ModTime()
	if undo, err := os.Stat(filepath.Join(dir, UndoFile)); err == nil {
		if undo.ModTime().After(at) {
			at = undo.ModTime()
		}
	} else if recs, err := ReadRecords(root, base, id); err != nil || Summarize(recs).Undo {
		return time.Time{}, false
	}
	return at, true
}

// removeJournal removes one journal unless a process holds its lock. It is renamed away first, under its lock.
func removeJournal(dir, id string) (bool, error) {
	path := filepath.Join(dir, id)
	lock, err := os.OpenFile(filepath.Join(path, LockFile), os.O_RDWR, 0)
	if err != nil {
		return false, err
	}
	defer func() { _ = lock.Close() }()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return false, nil // in use: next time
		}
		return false, err
	}
	gone := filepath.Join(dir, pruningPrefix+id)
	if err := os.Rename(path, gone); err != nil {
		return false, err
	}
	return true, os.RemoveAll(gone)
}
