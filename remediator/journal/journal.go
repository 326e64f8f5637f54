// Package journal keeps, on the host, the record of one remediation: the plan, what each step did, and a backup of
// every file before it changes, so that a run that died half-way can be resumed or rolled back by the next run with
// the same remediation id instead of being repeated blindly.
//
// Layout of a remediation's directory, <base>/<id>/ on the host (base is /var/lib/cnimedic/journal):
//
//	lock          flock(2)ed by the run that owns the journal; the kernel drops it when that process dies
//	plan.json     the plan, written once; a later run with the same id must bring the same plan
//	log.jsonl     the records, one JSON object a line, each fsynced before the change it announces
//	backups/N     the content of a file before record N changed it (mode, owner, sha256 in the record)
//	result.json   the ExecutorResult, written atomically when the run ends: its presence means "finished"
//
// The order of operations makes every crash point recoverable: a backup is durable before its record, the record
// before the file changes; an intent record (stop a unit, run an action, create a dir) before the thing it
// announces. Restoring a backup is absolute (content, mode, owner), so doing it twice is harmless.
package journal

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"syscall"
	"time"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
	"github.com/cnimedic/cnimedic/remediator/host"
	"github.com/cnimedic/cnimedic/remediator/step"
)

// DefaultBase is the host directory holding one journal directory per remediation id.
const DefaultBase = "/var/lib/cnimedic/journal"

// File names inside a journal directory.
const (
	LockFile   = "lock"
	PlanFile   = "plan.json"
	LogFile    = "log.jsonl"
	BackupDir  = "backups"
	ResultFile = "result.json"
	// UndoFile holds the result of a rollback the manager asked for after the remediation had finished (its
	// cluster-level verification failed): present once that rollback is over.
	UndoFile = "rollback.json"
)

// ErrBusy is returned by Open when another live process owns the journal.
var ErrBusy = errors.New("journal is in use by another run")

// idPattern is a Kubernetes object name (DNS subdomain), which is what a remediation id is. It is also a valid
// directory name and, as it is, part of a systemd unit name.
var idPattern = regexp.MustCompile(`^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$`)

// ValidID checks a remediation id.
func ValidID(id string) error {
	if len(id) == 0 || len(id) > 200 || !idPattern.MatchString(id) || id == "." || id == ".." {
		return fmt.Errorf("invalid remediation id %q: want a Kubernetes object name of at most 200 characters", id)
	}
	return nil
}

// Kind is the kind of a record.
type Kind string

// Record kinds. "Intent" records come before what they announce; the others after it is durable.
const (
	KindBegin        Kind = "begin"          // the run started working on the plan
	KindStepStart    Kind = "step-start"     // Step
	KindStepEnd      Kind = "step-end"       // Step, Outcome, Message
	KindUnitStop     Kind = "unit-stop"      // intent: Step, Unit
	KindUnitStopped  Kind = "unit-stopped"   // Step, Unit, Message
	KindUnitStart    Kind = "unit-start"     // intent: Step, Unit
	KindUnitStarted  Kind = "unit-started"   // Step, Unit, Message
	KindBackup       Kind = "backup"         // Step, Backup: the file's previous state is safe
	KindWritten      Kind = "written"        // Step, Path, SHA256: the new content is in place
	KindRemoved      Kind = "removed"        // Step, Path
	KindMkdir        Kind = "mkdir"          // intent: Step, Path of a directory the run creates
	KindAction       Kind = "action"         // intent: Step, Message (the action's description)
	KindActionDone   Kind = "action-done"    // Step, Message
	KindRestored     Kind = "restored"       // BackupSeq, Path: a backup was put back
	KindRmdir        Kind = "rmdir"          // Path: a rollback removed a directory the run had created
	KindRollback     Kind = "rollback-start" // Message: why
	KindRollbackDone Kind = "rollback-end"   // Outcome, Message
	KindNote         Kind = "note"           // Message: anything worth keeping, such as a resume
	KindUndo         Kind = "undo"           // Message: a rollback of the finished remediation was asked for
)

// Record is one line of the log.
type Record struct {
	Seq  int       `json:"seq"`
	Time time.Time `json:"time"`
	Kind Kind      `json:"kind"`
	// Step is the 1-based index of the plan step, 0 when the record belongs to no step.
	Step      int     `json:"step,omitempty"`
	Unit      string  `json:"unit,omitempty"`
	Path      string  `json:"path,omitempty"`
	SHA256    string  `json:"sha256,omitempty"`
	Backup    *Backup `json:"backup,omitempty"`
	BackupSeq int     `json:"backupSeq,omitempty"`
	Outcome   string  `json:"outcome,omitempty"`
	Message   string  `json:"message,omitempty"`
}

// Backup is a file's state before a change.
type Backup struct {
	// Seq is the record that holds this backup; the content is backups/<Seq>.
	Seq  int `json:"seq"`
	Step int `json:"step"`
	// Path is the host path of the file (symlinks resolved).
	Path string `json:"path"`
	// Existed is false when the change creates the file: restoring then removes it.
	Existed bool        `json:"existed"`
	Mode    fs.FileMode `json:"mode,omitempty"`
	UID     int         `json:"uid"`
	GID     int         `json:"gid"`
	Size    int64       `json:"size"`
	SHA256  string      `json:"sha256,omitempty"`
}

// Journal is an open journal, owned (locked) by this process.
type Journal struct {
	root    host.Root
	base    string // host path
	id      string
	dir     string // local path
	lock    *os.File
	log     *os.File
	records []Record
}

// Dir is the local path of a remediation's journal directory.
func Dir(root host.Root, base, id string) string {
	if base == "" {
		base = DefaultBase
	}
	return root.Path(filepath.Join(base, id))
}

// Open opens (creating if needed) the journal of a remediation and locks it. It returns ErrBusy when another live
// process holds it. A record torn by a crash mid-write (the last line, without its newline) is dropped.
func Open(root host.Root, base, id string) (*Journal, error) {
	if err := ValidID(id); err != nil {
		return nil, err
	}
	if base == "" {
		base = DefaultBase
	}
	dir := Dir(root, base, id)
	if err := os.MkdirAll(filepath.Join(dir, BackupDir), 0o700); err != nil {
		return nil, err
	}
	lock, err := os.OpenFile(filepath.Join(dir, LockFile), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		_ = lock.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("%s: %w", dir, ErrBusy)
		}
		return nil, fmt.Errorf("lock %s: %w", dir, err)
	}
	j := &Journal{root: root, base: base, id: id, dir: dir, lock: lock}
	if err := j.load(); err != nil {
		_ = lock.Close()
		return nil, err
	}
	return j, nil
}

func (j *Journal) load() error {
	name := filepath.Join(j.dir, LogFile)
	data, err := os.ReadFile(name)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	good := 0
	for len(data[good:]) > 0 {
		rest := data[good:]
		nl := bytes.IndexByte(rest, '\n')
		if nl < 0 {
			break // torn last record: the crash happened before its fsync returned
		}
		var r Record
		if err := json.Unmarshal(rest[:nl], &r); err != nil {
			if good+nl+1 == len(data) {
				break // a torn last line that happened to contain a newline byte is still a torn last line
			}
			return fmt.Errorf("journal %s is damaged at byte %d: %v", name, good, err)
		}
		j.records = append(j.records, r)
		good += nl + 1
	}
	f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	if good < len(data) {
		if err := f.Truncate(int64(good)); err != nil {
			_ = f.Close()
			return err
		}
	}
	j.log = f
	return host.SyncDir(j.dir)
}

// Close releases the journal.
func (j *Journal) Close() error {
	err := j.log.Close()
	if e := j.lock.Close(); err == nil {
		err = e
	}
	return err
}

// ID is the remediation id.
func (j *Journal) ID() string { return j.id }

// Dir is the journal's local directory.
func (j *Journal) Dir() string { return j.dir }

// HostDir is the journal's directory as a host path.
func (j *Journal) HostDir() string { return filepath.Join(j.base, j.id) }

// Root is the host root the journal maps paths through.
func (j *Journal) Root() host.Root { return j.root }

// Records returns the records so far, oldest first.
func (j *Journal) Records() []Record { return append([]Record(nil), j.records...) }

// Append writes a record and fsyncs it. Seq and Time are filled in.
func (j *Journal) Append(r Record) (Record, error) {
	r.Seq = len(j.records) + 1
	if r.Time.IsZero() {
		r.Time = time.Now().UTC()
	}
	line, err := json.Marshal(r)
	if err != nil {
		return r, err
	}
	if _, err := j.log.Write(append(line, '\n')); err != nil {
		return r, fmt.Errorf("append to journal: %w", err)
	}
	if err := j.log.Sync(); err != nil {
		return r, fmt.Errorf("fsync journal: %w", err)
	}
	j.records = append(j.records, r)
	return r, nil
}

// NextSeq is the Seq the next record will get.
func (j *Journal) NextSeq() int { return len(j.records) + 1 }

// BackupFile is the local path of a backup's content.
func (j *Journal) BackupFile(b Backup) string {
	return filepath.Join(j.dir, BackupDir, strconv.Itoa(b.Seq))
}

// HostBackupFile is the host path of a backup's content, as results report it.
func (j *Journal) HostBackupFile(b Backup) string {
	return filepath.Join(j.HostDir(), BackupDir, strconv.Itoa(b.Seq))
}

// Backup saves the current state of the file at hostPath (symlinks already resolved) and records it, before the
// caller changes the file. Only regular files (or absent ones) can be backed up.
func (j *Journal) Backup(step int, hostPath string) (Backup, error) {
	b := Backup{Seq: j.NextSeq(), Step: step, Path: hostPath}
	local := j.root.Path(hostPath)
	fi, err := os.Lstat(local)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		// Nothing to save: restoring removes the file.
	case err != nil:
		return b, err
	case !fi.Mode().IsRegular():
		return b, fmt.Errorf("cannot back up %s: not a regular file (%s)", hostPath, fi.Mode().Type())
	default:
		b.Existed = true
		b.Mode = fi.Mode() & (fs.ModePerm | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky)
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			b.UID, b.GID = int(st.Uid), int(st.Gid)
		}
		src, err := os.Open(local)
		if err != nil {
			return b, err
		}
		h := sha256.New()
		cr := &countingReader{r: io.TeeReader(src, h)}
		err = host.WriteAtomic(j.BackupFile(b), cr, host.WriteOptions{Mode: 0o600})
		_ = src.Close()
		if err != nil {
			return b, fmt.Errorf("back up %s: %w", hostPath, err)
		}
		b.Size = cr.n
		b.SHA256 = hex.EncodeToString(h.Sum(nil))
	}
	if _, err := j.Append(Record{Kind: KindBackup, Step: step, Path: hostPath, Backup: &b}); err != nil {
		return b, err
	}
	return b, nil
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// ReadBackup returns a backup's content after checking it against the recorded size and sha256. A missing or
// altered backup is an error: restoring from it would not give the file back.
func (j *Journal) ReadBackup(b Backup) ([]byte, error) {
	if !b.Existed {
		return nil, nil
	}
	data, err := os.ReadFile(j.BackupFile(b))
	if err != nil {
		return nil, fmt.Errorf("backup of %s: %w", b.Path, err)
	}
	sum := sha256.Sum256(data)
	if int64(len(data)) != b.Size || hex.EncodeToString(sum[:]) != b.SHA256 {
		return nil, fmt.Errorf("backup of %s (%s) does not match its record: size %d sha256 %s, recorded %d %s",
			b.Path, j.BackupFile(b), len(data), hex.EncodeToString(sum[:]), b.Size, b.SHA256)
	}
	return data, nil
}

// Restore puts a file back as the backup recorded it (content, mode, owner), or removes it when it did not exist,
// and records that. Restoring twice is harmless.
func (j *Journal) Restore(b Backup) error {
	local := j.root.Path(b.Path)
	if !b.Existed {
		fi, err := os.Lstat(local)
		if err == nil && fi.IsDir() {
			return fmt.Errorf("cannot restore %s: it did not exist and is now a directory", b.Path)
		}
		if err := host.RemoveAtomic(local); err != nil {
			return fmt.Errorf("restore %s (remove): %w", b.Path, err)
		}
	} else {
		data, err := j.ReadBackup(b)
		if err != nil {
			return err
		}
		if err := os.MkdirAll(filepath.Dir(local), 0o755); err != nil {
			return err
		}
		if fi, err := os.Lstat(local); err == nil && !fi.Mode().IsRegular() {
			// Something replaced the file with a link or a directory: do not write through it.
			return fmt.Errorf("cannot restore %s: it is now %s", b.Path, fi.Mode().Type())
		}
		err = host.WriteAtomic(local, bytes.NewReader(data), host.WriteOptions{
			Mode:      b.Mode,
			ExactMode: true,
			Owner:     &host.Owner{UID: b.UID, GID: b.GID},
		})
		if err != nil {
			return fmt.Errorf("restore %s: %w", b.Path, err)
		}
	}
	_, err := j.Append(Record{Kind: KindRestored, Step: b.Step, Path: b.Path, BackupSeq: b.Seq, SHA256: b.SHA256})
	return err
}

// SavePlan stores the plan of a new journal, or checks that a resumed journal was started for the same plan.
func (j *Journal) SavePlan(plan v1alpha1.Plan) error { return PutPlan(j.root, j.base, j.id, plan) }

// PutPlan stores a remediation's plan without taking the journal's lock (the executor pod does this before it
// starts the host-side run). A journal that already has a different plan is an error: a remediation id stands
// for one plan.
func PutPlan(root host.Root, base, id string, plan v1alpha1.Plan) error {
	if err := ValidID(id); err != nil {
		return err
	}
	want, err := json.MarshalIndent(plan, "", "  ")
	if err != nil {
		return err
	}
	dir := Dir(root, base, id)
	if err := os.MkdirAll(filepath.Join(dir, BackupDir), 0o700); err != nil {
		return err
	}
	name := filepath.Join(dir, PlanFile)
	have, err := os.ReadFile(name)
	if err == nil {
		var old v1alpha1.Plan
		if err := json.Unmarshal(have, &old); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		oldJSON, _ := json.MarshalIndent(old, "", "  ")
		if !bytes.Equal(oldJSON, want) {
			return fmt.Errorf("remediation %s already has a different plan in %s: use a new remediation id", id, name)
		}
		return nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return host.WriteFileAtomic(name, append(want, '\n'), 0o600)
}

// LoadPlan reads the stored plan.
func (j *Journal) LoadPlan() (v1alpha1.Plan, error) {
	var p v1alpha1.Plan
	data, err := os.ReadFile(filepath.Join(j.dir, PlanFile))
	if err != nil {
		return p, fmt.Errorf("plan of remediation %s: %w", j.id, err)
	}
	if err := json.Unmarshal(data, &p); err != nil {
		return p, fmt.Errorf("plan of remediation %s: %w", j.id, err)
	}
	return p, nil
}

// Finish stores the run's result. From then on the remediation is finished: a later run with the same id reports
// this result again and changes nothing.
func (j *Journal) Finish(res v1alpha1.ExecutorResult) error {
	data, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return err
	}
	return host.WriteFileAtomic(filepath.Join(j.dir, ResultFile), append(data, '\n'), 0o600)
}

// FinishUndo stores the result of a requested rollback (see UndoFile).
func (j *Journal) FinishUndo(res v1alpha1.ExecutorResult) error {
	data, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return err
	}
	return host.WriteFileAtomic(filepath.Join(j.dir, UndoFile), append(data, '\n'), 0o600)
}

// UndoResult returns the stored result of a requested rollback, or nil while there is none.
func (j *Journal) UndoResult() (*v1alpha1.ExecutorResult, error) {
	return ReadUndo(j.root, j.base, j.id)
}

// ReadUndo reads the result of a requested rollback without taking the journal's lock; nil while there is none.
func ReadUndo(root host.Root, base, id string) (*v1alpha1.ExecutorResult, error) {
	return readResultFile(filepath.Join(Dir(root, base, id), UndoFile), id)
}

// Result returns the stored result, or nil while the remediation is not finished.
func (j *Journal) Result() (*v1alpha1.ExecutorResult, error) { return ReadResult(j.root, j.base, j.id) }

// ReadResult reads a remediation's result without taking its lock (the executor pod follows the host-side run
// this way); nil while it is not finished.
func ReadResult(root host.Root, base, id string) (*v1alpha1.ExecutorResult, error) {
	return readResultFile(filepath.Join(Dir(root, base, id), ResultFile), id)
}

// HasPlan reports whether a remediation's journal holds a plan, i.e. whether it ever ran on this host.
func HasPlan(root host.Root, base, id string) bool {
	_, err := os.Stat(filepath.Join(Dir(root, base, id), PlanFile))
	return err == nil
}

func readResultFile(name, id string) (*v1alpha1.ExecutorResult, error) {
	data, err := os.ReadFile(name)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var res v1alpha1.ExecutorResult
	if err := json.Unmarshal(data, &res); err != nil {
		return nil, fmt.Errorf("result of remediation %s: %w", id, err)
	}
	return &res, nil
}

// ReadRecords reads a remediation's records without taking its lock, for following a run from another process.
// A torn last line is skipped.
func ReadRecords(root host.Root, base, id string) ([]Record, error) {
	f, err := os.Open(filepath.Join(Dir(root, base, id), LogFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer func() { _ = f.Close() }()
	var out []Record
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for sc.Scan() {
		var r Record
		if json.Unmarshal(sc.Bytes(), &r) == nil {
			out = append(out, r)
		}
	}
	return out, sc.Err()
}

// Copies returns the content of every backup of the file at hostPath kept in any remediation's journal under base,
// newest first, for step.Env.Backups (RestoreConfList restores the newest one that loads). Backups whose content
// does not match its record are left out.
func Copies(root host.Root, base, hostPath string) ([]step.BackupCopy, error) {
	if base == "" {
		base = DefaultBase
	}
	ents, err := os.ReadDir(root.Path(base))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	type found struct {
		at   time.Time
		copy step.BackupCopy
	}
	var all []found
	for _, e := range ents {
		if !e.IsDir() || ValidID(e.Name()) != nil {
			continue
		}
		recs, err := ReadRecords(root, base, e.Name())
		if err != nil {
			continue
		}
		j := &Journal{root: root, base: base, id: e.Name(), dir: Dir(root, base, e.Name())}
		for _, r := range recs {
			if r.Kind != KindBackup || r.Backup == nil || !r.Backup.Existed || r.Backup.Path != hostPath {
				continue
			}
			data, err := j.ReadBackup(*r.Backup)
			if err != nil {
				continue
			}
			all = append(all, found{at: r.Time, copy: step.BackupCopy{
				Source:  fmt.Sprintf("journal %s, record %d (%s)", e.Name(), r.Seq, r.Time.Format(time.RFC3339)),
				Content: data,
				Mode:    r.Backup.Mode,
			}})
		}
	}
	sort.SliceStable(all, func(a, b int) bool { return all[a].at.After(all[b].at) })
	out := make([]step.BackupCopy, len(all))
	for i, f := range all {
		out[i] = f.copy
	}
	return out, nil
}

// NodeLockFile is the lock that keeps two remediations from working on one node at once (they would stop and
// start the same units under each other). It lives beside the journals; no remediation id starts with a dot.
const NodeLockFile = ".node.lock"

// NodeLock is the node-wide lock, held by the process that works on the node.
type NodeLock struct{ f *os.File }

// LockNode takes the node-wide lock for remediation id. With wait false it fails at once, naming the
// remediation that holds it; with wait true it waits until ctx ends.
func LockNode(ctx context.Context, root host.Root, base, id string, wait bool) (*NodeLock, error) {
	if base == "" {
		base = DefaultBase
	}
	dir := root.Path(base)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	name := filepath.Join(dir, NodeLockFile)
	f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			break
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			_ = f.Close()
			return nil, fmt.Errorf("lock %s: %w", name, err)
		}
		if !wait {
			holder, _ := os.ReadFile(name)
			_ = f.Close()
			return nil, fmt.Errorf("remediation %s is working on this node: %w", bytes.TrimSpace(holder), ErrBusy)
		}
		select {
		case <-ctx.Done():
			_ = f.Close()
			return nil, fmt.Errorf("waiting for the node lock: %w", ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
	// Who holds it, for the message of a remediation that finds it taken.
	_ = f.Truncate(0)
	_, _ = f.WriteAt([]byte(id+"\n"), 0)
	return &NodeLock{f: f}, nil
}

// Unlock releases the node lock (the kernel also drops it when the process dies).
func (l *NodeLock) Unlock() error {
	if l == nil || l.f == nil {
		return nil
	}
	return l.f.Close()
}
