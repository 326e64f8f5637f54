//go:build e2e

package e2e

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/cnimedic/cnimedic/e2e/lab"
	"github.com/cnimedic/cnimedic/test/repo"
)

// theLab is the lab every test runs on; TestMain brings it up (or finds it up) and holds its lock.
var theLab *lab.Lab

// mttrs collects each scenario's measured time from injection to the workload Running again, printed at the end.
var mttrs []string

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	// The suite's clients log nothing of their own; the story is in the test log.
	ctrllog.SetLogger(logr.Discard())
	flag.Parse()
	if f := flag.Lookup("test.list"); f != nil && f.Value.String() != "" {
		return m.Run() // listing the tests needs no lab
	}
	cfg := lab.Default(repo.Root())
	if missing := cfg.Prerequisites(); len(missing) > 0 {
		// Fail, never skip: a suite that silently runs nothing reads as green.
		fmt.Fprintf(os.Stderr, "e2e: FAIL: the lab cannot come up on this machine; missing:\n  - %s\nRun `make e2e` (it builds them: make lab-deps).\n",
			strings.Join(missing, "\n  - "))
		return 1
	}
	l, err := lab.New(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e: FAIL:", err)
		return 1
	}
	l.Out = os.Stdout
	// The lock for the whole run: a `make lab-down` from another shell cannot pull the lab from under the tests.
	if err := l.Lock(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: FAIL:", err)
		return 1
	}
	defer l.Unlock()
	_, statErr := os.Stat(cfg.Kubeconfig)
	wasUp := statErr == nil
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	start := time.Now()
	err = l.Up(ctx)
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e: FAIL: bringing the lab up:", err)
		downIfOurs(l, wasUp)
		return 1
	}
	fmt.Printf("e2e: lab up in %.1fs (%s); memory: %s\n", time.Since(start).Seconds(), map[bool]string{true: "it was up already", false: "from nothing"}[wasUp], l.MeasureMemory())
	theLab = l

	code := m.Run()

	fmt.Println("\ne2e: MTTR (injection to the workload Running again):")
	for _, s := range mttrs {
		fmt.Println("  " + s)
	}
	fmt.Printf("e2e: memory at the end: %s\n", l.MeasureMemory())
	downIfOurs(l, wasUp)
	return code
}

// downIfOurs tears the lab down unless it was up before the suite: a developer's lab stays for them.
func downIfOurs(l *lab.Lab, wasUp bool) {
	if wasUp || os.Getenv("E2E_KEEP_LAB") != "" {
		fmt.Println("e2e: leaving the lab up (make lab-down tears it down)")
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := l.Down(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: tearing the lab down:", err)
	}
}
