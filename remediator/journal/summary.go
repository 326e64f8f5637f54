package journal

import (
	"slices"
	"time"
)

// StepState is what the records say about one plan step.
type StepState struct {
	Started  bool
	Ended    bool
	Outcome  string
	Message  string
	Start    time.Time
	End      time.Time
	Attempts int
}

// Summary is the state of a remediation as its records tell it.
type Summary struct {
	// Begun: the run started working on the plan.
	Begun bool
	// Steps by 1-based index.
	Steps map[int]*StepState
	// Backups not restored yet, oldest first. Restoring them newest first gives back the node as it was.
	Backups []Backup
	// Dirs the run created (intents) and no rollback removed yet, in creation order.
	Dirs []string
	// Touched lists every unit the run asked to stop, in the order of the first request.
	Touched []string
	// Down lists the units the run asked to stop and has not seen started again since, in stop order. A stop
	// whose outcome is unknown (the run died waiting for it) counts: the unit may well be down.
	Down []string
	// RollingBack: a rollback started and did not end.
	RollingBack bool
	// RolledBack: a rollback ended; RollbackOutcome says how.
	RolledBack      bool
	RollbackReason  string
	RollbackOutcome string
	RollbackMessage string
	// Undo: a rollback of the finished remediation was asked for.
	Undo bool
	// Last is the last record, for saying where an interrupted run stopped.
	Last *Record
}

// Summarize derives the state from the records.
func Summarize(recs []Record) Summary {
	s := Summary{Steps: map[int]*StepState{}}
	stepOf := func(i int) *StepState {
		st := s.Steps[i]
		if st == nil {
			st = &StepState{}
			s.Steps[i] = st
		}
		return st
	}
	for i := range recs {
		r := recs[i]
		s.Last = &recs[i]
		switch r.Kind {
		case KindBegin:
			s.Begun = true
		case KindStepStart:
			st := stepOf(r.Step)
			st.Started, st.Ended, st.Outcome, st.Message = true, false, "", ""
			st.Start = r.Time
			st.Attempts++
		case KindStepEnd:
			st := stepOf(r.Step)
			st.Ended, st.Outcome, st.Message, st.End = true, r.Outcome, r.Message, r.Time
		case KindUnitStop:
			if !slices.Contains(s.Touched, r.Unit) {
				s.Touched = append(s.Touched, r.Unit)
			}
			if !slices.Contains(s.Down, r.Unit) {
				s.Down = append(s.Down, r.Unit)
			}
		case KindUnitStarted:
			s.Down = slices.DeleteFunc(s.Down, func(u string) bool { return u == r.Unit })
		case KindBackup:
			if r.Backup != nil {
				s.Backups = append(s.Backups, *r.Backup)
			}
		case KindRestored:
			s.Backups = slices.DeleteFunc(s.Backups, func(b Backup) bool { return b.Seq == r.BackupSeq })
		case KindMkdir:
			if !slices.Contains(s.Dirs, r.Path) {
				s.Dirs = append(s.Dirs, r.Path)
			}
		case KindRmdir:
			s.Dirs = slices.DeleteFunc(s.Dirs, func(d string) bool { return d == r.Path })
		case KindRollback:
			s.RollingBack = true
			s.RollbackReason = r.Message
		case KindUndo:
			s.Undo = true
		case KindRollbackDone:
			s.RollingBack, s.RolledBack = false, true
			s.RollbackOutcome, s.RollbackMessage = r.Outcome, r.Message
		}
	}
	return s
}

// StepBackups returns the live backups of one step, oldest first.
func (s Summary) StepBackups(step int) []Backup {
	var out []Backup
	for _, b := range s.Backups {
		if b.Step == step {
			out = append(out, b)
		}
	}
	return out
}

// Interrupted returns the step that started and did not end (0 if none).
func (s Summary) Interrupted() int {
	for i, st := range s.Steps {
		if st.Started && !st.Ended {
			return i
		}
	}
	return 0
}
