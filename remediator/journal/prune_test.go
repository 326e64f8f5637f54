package journal

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
	"github.com/cnimedic/cnimedic/remediator/host"
)

// journalAt makes a journal with one backup; finished gives it a result dated at.
func journalAt(t *testing.T, root host.Root, id string, finished bool, at time.Time) {
	t.Helper()
	j, err := Open(root, "", id)
	must(t, err)
	defer func() { _ = j.Close() }()
	src := filepath.Join(string(root), "etc-"+id)
	must(t, os.WriteFile(src, []byte(id), 0o644))
	_, err = j.Backup(1, "/etc-"+id) // recorded in the log as a backup record
	must(t, err)
	if finished {
		must(t, j.Finish(v1alpha1.ExecutorResult{RemediationID: id, Outcome: v1alpha1.OutcomeSucceeded}))
		must(t, os.Chtimes(filepath.Join(j.Dir(), ResultFile), at, at))
	}
}

func ids(t *testing.T, root host.Root) []string {
	t.Helper()
	ents, err := os.ReadDir(root.Path(DefaultBase))
	must(t, err)
	var out []string
	for _, e := range ents {
		if e.IsDir() {
			out = append(out, e.Name())
		}
	}
	return out
}

// Pruning may only ever take old, finished journals beyond the newest Keep: never an unfinished one (a recovery
// needs it), never one whose rollback was asked for and has no result, never one another process has locked.
func TestPruneKeepsWhatARecoveryOrAPersonNeeds(t *testing.T) {
	root := host.Root(t.TempDir())
	now := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	old := now.Add(-60 * 24 * time.Hour)
	ret := Retention{Keep: 2, MinAge: 30 * 24 * time.Hour}

	journalAt(t, root, "old-1", true, old.Add(-3*time.Hour))
	journalAt(t, root, "old-2", true, old.Add(-2*time.Hour))
	journalAt(t, root, "old-3", true, old.Add(-time.Hour)) // old, but among the newest 2 finished
	journalAt(t, root, "recent", true, now.Add(-time.Hour))
	journalAt(t, root, "unfinished", false, time.Time{}) // a run that died: recovery reads it
	journalAt(t, root, "undo-pending", true, old.Add(-4*time.Hour))
	j, err := Open(root, "", "undo-pending")
	must(t, err)
	_, err = j.Append(Record{Kind: KindUndo, Message: "verification failed"})
	must(t, err)
	must(t, j.Close())
	journalAt(t, root, "held", true, old.Add(-5*time.Hour))
	// Another process holds "held" (reading or recovering it).
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), holdEnv+"="+string(root)+"|held")
	out, err := cmd.StdoutPipe()
	must(t, err)
	must(t, cmd.Start())
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	buf := make([]byte, 7)
	if _, err := out.Read(buf); err != nil {
		t.Fatal(err)
	}
	// The run that prunes holds its own journal open: an old id run again must keep its stored result.
	journalAt(t, root, "self", true, old.Add(-6*time.Hour))
	self, err := Open(root, "", "self")
	must(t, err)
	defer func() { _ = self.Close() }()
	// A removal interrupted by a crash last time.
	must(t, os.MkdirAll(filepath.Join(root.Path(DefaultBase), pruningPrefix+"gone", BackupDir), 0o700))

	removed, err := Prune(root, "", now, ret)
	must(t, err)
	slices.Sort(removed)
	if !slices.Equal(removed, []string{"old-1", "old-2"}) {
		t.Fatalf("removed %v, want [old-1 old-2]", removed)
	}
	if got, want := ids(t, root), []string{"held", "old-3", "recent", "self", "undo-pending", "unfinished"}; !slices.Equal(got, want) {
		t.Fatalf("left %v, want %v", got, want)
	}
	// What is left still serves its readers: the backups of the kept journals are there.
	copies, err := Copies(root, "", "/etc-old-3")
	must(t, err)
	if len(copies) != 1 || string(copies[0].Content) != "old-3" {
		t.Fatalf("copies of a kept journal: %+v", copies)
	}
	if copies, _ := Copies(root, "", "/etc-old-1"); len(copies) != 0 {
		t.Fatalf("a pruned journal's backup is still offered: %+v", copies)
	}

	// Once the holder is gone, the held one goes too; a second prune with nothing to do removes nothing.
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	removed, err = Prune(root, "", now, ret)
	must(t, err)
	if !slices.Equal(removed, []string{"held"}) {
		t.Fatalf("second prune removed %v, want [held]", removed)
	}
	if removed, _ := Prune(root, "", now, ret); len(removed) != 0 {
		t.Fatalf("third prune removed %v", removed)
	}
}
