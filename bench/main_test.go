//go:build bench

package bench

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"testing"
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
