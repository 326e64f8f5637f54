//go:build bench

package bench

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"testing"
	"time"
)

func TestMain(m *testing.M) {
	// An interrupted benchmark (Ctrl-C, a timeout's signal) stops its control planes: kube-apiserver and etcd do
	// not die with this process, and at 150,000 pods they hold gigabytes.
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		s := <-sig
		fmt.Fprintf(os.Stderr, "bench: %v: stopping the control planes\n", s)
		stopAll()
		os.Exit(2)
	}()
	os.Exit(m.Run())
}

// newSection starts a report section; its file is written when the test ends, marked failed when the test failed,
// so that the report shows every benchmark that ran.
func newSection(t *testing.T, id, title string) *Section {
	sec := &Section{ID: id, Title: title, Started: time.Now()}
	t.Cleanup(func() {
		if t.Failed() {
			sec.Failed = true
		}
		if err := sec.Write(); err != nil {
			t.Error(err)
		}
	})
	return sec
}
