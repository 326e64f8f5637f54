// Command pause is the lab's pod sandbox process (containerd's sandbox_image): it holds the pod's namespaces and
// does nothing until it is told to stop, like registry.k8s.io/pause, which no registry here can serve.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	c := make(chan os.Signal, 1)
	// As PID 1 of its PID namespace it gets no default signal handling: without these, SIGTERM would be ignored
	// and every pod deletion would wait for the SIGKILL after the grace period.
	signal.Notify(c, syscall.SIGTERM, syscall.SIGINT)
	<-c
}
