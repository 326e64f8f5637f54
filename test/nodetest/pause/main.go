// Command pause is the test sandbox image's only process: it waits until it is told to stop, like the real pause
// container, so that the tests' containerd runs real pod sandboxes without a registry.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	c := make(chan os.Signal, 1)
	signal.Notify(c, syscall.SIGTERM, syscall.SIGINT)
	<-c
}
