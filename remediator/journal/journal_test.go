package journal

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
	"github.com/cnimedic/cnimedic/remediator/host"
	"github.com/cnimedic/cnimedic/test/labtest"
)

// A journal test re-executes its own binary as a second process that holds the lock and gets SIGKILLed.
const holdEnv = "CNIMEDIC_JOURNAL_TEST_HOLD"

func TestMain(m *testing.M) {
	if spec := os.Getenv(holdEnv); spec != "" {
		root, id, _ := strings.Cut(spec, "|")
		j, err := Open(host.Root(root), "", id)
		if err != nil {
			os.Stderr.WriteString(err.Error())
			os.Exit(2)
		}
		_ = j
		os.Stdout.WriteString("locked\n")
		time.Sleep(time.Hour)
	}
	labtest.Main(m)
}

func TestLockIsExclusiveAndDiesWithItsProcess(t *testing.T) {
	root := host.Root(t.TempDir())
	j, err := Open(root, "", "rem-1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Open(root, "", "rem-1"); !errors.Is(err, ErrBusy) {
		t.Fatalf("second open: %v, want ErrBusy", err)
	}
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}

	// Another process holds it; SIGKILL releases it.
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), holdEnv+"="+string(root)+"|rem-1")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 7)
	if _, err := out.Read(buf); err != nil || string(buf) != "locked\n" {
		t.Fatalf("holder: %q %v", buf, err)
	}
	if _, err := Open(root, "", "rem-1"); !errors.Is(err, ErrBusy) {
		t.Fatalf("open while another process holds it: %v", err)
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	_ = cmd.Wait()
	j, err = Open(root, "", "rem-1")
	if err != nil {
		t.Fatalf("open after the holder died: %v", err)
	}
	_ = j.Close()
}

func TestTornLastRecordIsDroppedDamageIsRefused(t *testing.T) {
	root := host.Root(t.TempDir())
	j, err := Open(root, "", "rem-2")
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []Kind{KindBegin, KindStepStart} {
		if _, err := j.Append(Record{Kind: k, Step: 1}); err != nil {
			t.Fatal(err)
		}
	}
	_ = j.Close()
	log := filepath.Join(Dir(root, "", "rem-2"), LogFile)
	f, _ := os.OpenFile(log, os.O_APPEND|os.O_WRONLY, 0)
	_, _ = f.WriteString(`{"seq":3,"kind":"backu`)
	_ = f.Close()

	j, err = Open(root, "", "rem-2")
	if err != nil {
		t.Fatal(err)
	}
	if n := len(j.Records()); n != 2 {
		t.Fatalf("%d records after a torn write, want 2", n)
	}
	r, err := j.Append(Record{Kind: KindNote, Message: "after"})
	if err != nil || r.Seq != 3 {
		t.Fatalf("append after torn write: %+v %v", r, err)
	}
	_ = j.Close()
	data, _ := os.ReadFile(log)
	if bytes.Contains(data, []byte("backu")) {
		t.Fatalf("torn record still in the log:\n%s", data)
	}

	// Damage in the middle is not a crash artefact: refuse to guess.
	lines := bytes.SplitAfter(data, []byte("\n"))
	lines[1] = []byte("garbage\n")
	if err := os.WriteFile(log, bytes.Join(lines, nil), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(root, "", "rem-2"); err == nil || !strings.Contains(err.Error(), "damaged") {
		t.Fatalf("damaged journal opened: %v", err)
	}
}

func TestBackupRestoreByteForByte(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("this test chowns files: run it as root")
	}
	root := host.Root(t.TempDir())
	must(t, os.MkdirAll(root.Path("/etc/cni/net.d"), 0o755))
	conf := "/etc/cni/net.d/10-lab.conflist"
	orig := []byte("{\n  \"cniVersion\": \"1.0.0\"\n}\n")
	must(t, os.WriteFile(root.Path(conf), orig, 0o600))
	must(t, os.Chmod(root.Path(conf), 0o640))
	must(t, os.Chown(root.Path(conf), 7, 8))
	zero := "/etc/cni/net.d/secret"
	must(t, os.WriteFile(root.Path(zero), []byte("s"), 0o600))
	must(t, os.Chmod(root.Path(zero), 0))

	j, err := Open(root, "", "rem-3")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = j.Close() }()
	b1, err := j.Backup(1, conf)
	if err != nil {
		t.Fatal(err)
	}
	bz, err := j.Backup(1, zero)
	if err != nil {
		t.Fatal(err)
	}
	bn, err := j.Backup(1, "/etc/cni/net.d/99-new.conf")
	if err != nil {
		t.Fatal(err)
	}
	if !b1.Existed || bn.Existed || b1.Size != int64(len(orig)) || b1.Mode != 0o640 || b1.UID != 7 || b1.GID != 8 {
		t.Fatalf("backup records: %+v %+v", b1, bn)
	}
	if got, _ := os.ReadFile(j.BackupFile(b1)); !bytes.Equal(got, orig) {
		t.Fatal("backup content differs")
	}

	// Change everything, then restore newest first.
	must(t, host.WriteFileAtomic(root.Path(conf), []byte("{}"), 0o755))
	must(t, os.Chown(root.Path(conf), 0, 0))
	must(t, host.WriteFileAtomic(root.Path(zero), []byte("changed"), 0o644))
	must(t, os.WriteFile(root.Path("/etc/cni/net.d/99-new.conf"), []byte("new"), 0o644))
	for _, b := range []Backup{bn, bz, b1} {
		if err := j.Restore(b); err != nil {
			t.Fatal(err)
		}
	}
	got, _ := os.ReadFile(root.Path(conf))
	if !bytes.Equal(got, orig) {
		t.Fatalf("restored content %q", got)
	}
	fi, _ := os.Stat(root.Path(conf))
	st := fi.Sys().(*syscall.Stat_t)
	if fi.Mode().Perm() != 0o640 || st.Uid != 7 || st.Gid != 8 {
		t.Fatalf("restored meta %v %d:%d", fi.Mode(), st.Uid, st.Gid)
	}
	if fi, _ := os.Stat(root.Path(zero)); fi.Mode().Perm() != 0 {
		t.Fatalf("mode 0 restored as %v", fi.Mode())
	}
	if _, err := os.Stat(root.Path("/etc/cni/net.d/99-new.conf")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatal("a file the change created is still there after restore")
	}
	// Restoring twice is harmless.
	if err := j.Restore(b1); err != nil {
		t.Fatal(err)
	}
	sum := Summarize(j.Records())
	if len(sum.Backups) != 0 {
		t.Fatalf("backups still live after restore: %+v", sum.Backups)
	}
}

func TestMissingOrAlteredBackupIsAnError(t *testing.T) {
	root := host.Root(t.TempDir())
	must(t, os.WriteFile(root.Path("/f.conf"), []byte("original"), 0o644))
	j, err := Open(root, "", "rem-4")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = j.Close() }()
	b, err := j.Backup(1, "/f.conf")
	if err != nil {
		t.Fatal(err)
	}
	must(t, os.WriteFile(root.Path("/f.conf"), []byte("changed"), 0o644))

	must(t, os.WriteFile(j.BackupFile(b), []byte("origina!"), 0o600))
	if err := j.Restore(b); err == nil || !strings.Contains(err.Error(), "does not match") {
		t.Fatalf("altered backup restored: %v", err)
	}
	must(t, os.Remove(j.BackupFile(b)))
	if err := j.Restore(b); err == nil {
		t.Fatal("missing backup restored")
	}
	if got, _ := os.ReadFile(root.Path("/f.conf")); string(got) != "changed" {
		t.Fatalf("a failed restore touched the file: %q", got)
	}
}

func TestPlanIsFixedPerID(t *testing.T) {
	root := host.Root(t.TempDir())
	p1 := v1alpha1.Plan{Steps: []v1alpha1.PlanStep{{Type: v1alpha1.StepStopUnit, Unit: "kubelet.service"}}}
	p2 := v1alpha1.Plan{Steps: []v1alpha1.PlanStep{{Type: v1alpha1.StepStopUnit, Unit: "containerd.service"}}}
	must(t, PutPlan(root, "", "rem-5", p1))
	must(t, PutPlan(root, "", "rem-5", p1))
	if err := PutPlan(root, "", "rem-5", p2); err == nil {
		t.Fatal("a second plan was accepted for the same id")
	}
	for _, bad := range []string{"", "../x", "A", "a/b", ".", strings.Repeat("a", 201)} {
		if err := PutPlan(root, "", bad, p1); err == nil {
			t.Errorf("id %q accepted", bad)
		}
	}
}

func TestSummary(t *testing.T) {
	recs := []Record{
		{Kind: KindBegin},
		{Kind: KindStepStart, Step: 1}, {Kind: KindUnitStop, Step: 1, Unit: "kubelet.service"},
		{Kind: KindUnitStopped, Step: 1, Unit: "kubelet.service"}, {Kind: KindStepEnd, Step: 1, Outcome: "Done"},
		{Kind: KindStepStart, Step: 2}, {Kind: KindUnitStop, Step: 2, Unit: "containerd.service"},
		{Kind: KindStepEnd, Step: 2, Outcome: "Done"},
		{Kind: KindStepStart, Step: 3}, {Kind: KindMkdir, Step: 3, Path: "/opt/cni"},
		{Kind: KindBackup, Step: 3, Backup: &Backup{Seq: 11, Step: 3, Path: "/a"}},
		{Kind: KindBackup, Step: 3, Backup: &Backup{Seq: 12, Step: 3, Path: "/b"}},
		{Kind: KindRestored, BackupSeq: 11},
		{Kind: KindStepStart, Step: 4}, {Kind: KindUnitStart, Step: 4, Unit: "containerd.service"},
		{Kind: KindUnitStarted, Step: 4, Unit: "containerd.service"},
	}
	s := Summarize(recs)
	if !s.Begun || len(s.Backups) != 1 || s.Backups[0].Seq != 12 {
		t.Fatalf("%+v", s)
	}
	if strings.Join(s.Touched, ",") != "kubelet.service,containerd.service" || strings.Join(s.Down, ",") != "kubelet.service" {
		t.Fatalf("touched %v down %v", s.Touched, s.Down)
	}
	if s.Interrupted() == 0 || len(s.Dirs) != 1 {
		t.Fatalf("interrupted %d dirs %v", s.Interrupted(), s.Dirs)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
