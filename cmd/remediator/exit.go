package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/spf13/cobra"
)

// Exit codes: a script can tell a bad command line from a failed run.
const (
	// ExitOK: the command did its work (a preview, a diagnosis, a run that Succeeded, changed nothing or rolled back
	// as asked).
	ExitOK = 0
	// ExitFailed: the command ran and failed (a run Failed or was rolled back; the node could not be read).
	ExitFailed = 1
	// ExitBadInput: nothing was done because of the input: a flag, a plan or a file given on the command line.
	ExitBadInput = 2
	// ExitInterrupted: SIGTERM or SIGINT ended the command.
	ExitInterrupted = 3
)

const exitCodesHelp = `Exit codes: 0 done (a preview, a diagnosis, a run that succeeded or found nothing to change); 1 the command ran
and failed (a run that failed or was rolled back); 2 bad input (a flag, a plan or a file, nothing was done);
3 interrupted by SIGTERM or SIGINT. Errors are one line on stderr, starting "remediator:".`

// inputError marks an error as bad input (ExitBadInput).
type inputError struct{ err error }

func (e inputError) Error() string { return e.err.Error() }
func (e inputError) Unwrap() error { return e.err }

func badInput(err error) error {
	if err == nil {
		return nil
	}
	return inputError{err}
}

// interruptGrace is how long a command has, after SIGTERM or SIGINT, to end on its own (its context is cancelled)
// before the process exits anyway: a read blocked in the kernel or a call that does not honour its context must
// not keep a pod from terminating.
const interruptGrace = 500 * time.Millisecond

// patient is set by commands that must not be cut short by a signal, once their flags are parsed: the host-side
// run, rollback and recovery (systemd stops them with SIGTERM and they must roll back), and apply --in-process.
var patient atomic.Bool

// started runs before a command's work, with its flags parsed.
func started(cmd *cobra.Command) {
	inProcess := false
	if f := cmd.Flags().Lookup("in-process"); f != nil {
		inProcess = f.Value.String() == "true"
	}
	patient.Store(cmd.Hidden || inProcess)
}

// run executes the command line and returns the exit code; errors go to stderr as one line.
func run(args []string, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	root := newRoot()
	root.SetArgs(args)
	done := make(chan error, 1)
	go func() { done <- root.ExecuteContext(ctx) }()
	var err error
	select {
	case err = <-done:
	case <-ctx.Done():
		if patient.Load() {
			err = <-done
			break
		}
		select {
		case err = <-done:
		case <-time.After(interruptGrace):
		}
		// Whatever the command was doing or printed, the signal ended it.
		if err == nil || errors.Is(err, context.Canceled) {
			err = errInterrupted
		} else {
			err = fmt.Errorf("%w: %w", errInterrupted, err)
		}
	}
	if err == nil {
		return ExitOK
	}
	fmt.Fprintln(stderr, "remediator: "+oneLine(err))
	return exitCode(err)
}

var errInterrupted = errors.New("interrupted by SIGTERM or SIGINT")

func exitCode(err error) int {
	var in inputError
	switch {
	case errors.Is(err, errInterrupted):
		return ExitInterrupted
	case errors.As(err, &in):
		return ExitBadInput
	case strings.HasPrefix(err.Error(), "unknown command") || strings.HasPrefix(err.Error(), "required flag") ||
		strings.HasPrefix(err.Error(), "if any flags in the group"):
		// cobra's own checks of the command line, which run before any command's work.
		return ExitBadInput
	}
	return ExitFailed
}

// oneLine joins an error's lines (errors.Join writes one per error) so that stderr holds one line per failure.
func oneLine(err error) string {
	return strings.Join(strings.Fields(strings.ReplaceAll(err.Error(), "\n", "; ")), " ")
}
