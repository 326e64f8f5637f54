// Command lab drives cnimedic's lab, a real Kubernetes cluster of systemd-nspawn nodes on this machine (e2e/lab):
//
//	lab up [--no-install]     bring the lab up (control plane, 2 workers, cnimedic, the lab policy); idempotent
//	lab down                  tear it down, leaving nothing
//	lab status                what runs, and its memory
//	lab faults                the faults that can be injected
//	lab break NODE FAULT      inject a fault into a node
//	lab reset NODE            give a node back its healthy configuration
//	lab logs NODE UNIT        a node unit's journal (kubelet, containerd, cnimedic-run-...)
//	lab demo                  the guided tour (make demo)
//
// The Makefile runs it as bin/lab (hack/lab.mk). It needs root.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/cnimedic/cnimedic/e2e/lab"
	"github.com/cnimedic/cnimedic/test/repo"
)

func usage() {
	fmt.Fprint(os.Stderr, `usage: lab COMMAND [ARGS]

  up [--no-install]   bring the lab up: control plane, 2 worker nodes, cnimedic and the lab policy (idempotent)
  down                tear the lab down, leaving nothing behind
  status              what runs, and how much memory it uses
  faults              list the faults that can be injected
  break NODE FAULT    inject a fault into a worker node (see faults)
  reset NODE          give a node back its healthy configuration and make it schedulable
  logs NODE UNIT      print a node unit's journal (kubelet, containerd, ...)
  demo                the guided tour: break a node and watch cnimedic repair it

The admin kubeconfig is .lab/kubeconfig: export KUBECONFIG=$PWD/.lab/kubeconfig
`)
}

func main() {
	if len(os.Args) < 2 {
		usage()
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1], os.Args[2:]); err != nil {
		fmt.Fprintln(os.Stderr, "lab:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, cmd string, args []string) error {
	l, err := lab.New(lab.Default(repo.Root()))
	if err != nil {
		return err
	}
	l.Out = os.Stdout
	switch cmd {
	case "up":
		fs := flag.NewFlagSet("up", flag.ExitOnError)
		noInstall := fs.Bool("no-install", false, "bring up the cluster only, without cnimedic and its policy")
		_ = fs.Parse(args)
		if err := l.Lock(); err != nil {
			return err
		}
		defer l.Unlock()
		start := time.Now()
		if *noInstall {
			err = l.UpCluster(ctx)
		} else {
			err = l.Up(ctx)
		}
		if err != nil {
			return fmt.Errorf("%w\n(tear down what came up with `make lab-down`)", err)
		}
		fmt.Printf("\nThe lab is up (%.0fs). Memory: %s\n", time.Since(start).Seconds(), l.MeasureMemory())
		fmt.Printf("Use it with:  export KUBECONFIG=%s\n", l.Config().Kubeconfig)
		return nil
	case "down":
		if err := l.Lock(); err != nil {
			return err
		}
		defer l.Unlock()
		return l.Down(ctx)
	case "status":
		return status(ctx, l)
	case "faults":
		for _, f := range lab.Faults {
			fmt.Printf("  %-26s %-26s %s\n", f.Fault, f.Signature, f.What)
		}
		return nil
	case "break":
		if len(args) != 2 {
			return errors.New("usage: lab break NODE FAULT (lab faults lists them)")
		}
		if _, ok := lab.Info(lab.Fault(args[1])); !ok {
			return fmt.Errorf("no fault %q; `lab faults` lists them", args[1])
		}
		if err := l.Inject(ctx, args[0], lab.Fault(args[1])); err != nil {
			return err
		}
		fmt.Printf("%s broken: %s\n", args[0], args[1])
		return nil
	case "reset":
		if len(args) != 1 {
			return errors.New("usage: lab reset NODE")
		}
		if err := l.Reset(ctx, args[0]); err != nil {
			return err
		}
		fmt.Printf("%s reset to healthy\n", args[0])
		return nil
	case "logs":
		if len(args) != 2 {
			return errors.New("usage: lab logs NODE UNIT")
		}
		node, _, err := l.Node(args[0])
		if err != nil {
			return err
		}
		unit := args[1]
		if !strings.Contains(unit, ".") {
			unit += ".service"
		}
		c := node.Command(ctx, "journalctl", "--no-pager", "--output=short-precise", "--unit="+unit)
		c.Stdout, c.Stderr = os.Stdout, os.Stderr
		return c.Run()
	case "demo":
		return demo(ctx, l)
	case "help", "-h", "--help":
		usage()
		return nil
	}
	usage()
	return fmt.Errorf("unknown command %q", cmd)
}

func status(ctx context.Context, l *lab.Lab) error {
	out, err := l.Kubectl(ctx, "get", "nodes", "-o", "wide")
	if err != nil {
		return fmt.Errorf("the lab does not answer (is it up? `make lab-up`): %w", err)
	}
	fmt.Print(string(out))
	if out, err := l.Kubectl(ctx, "get", "pods", "--all-namespaces", "-o", "wide"); err == nil {
		fmt.Print("\n", string(out))
	}
	if out, err := l.Kubectl(ctx, "get", "noderemediations"); err == nil {
		fmt.Print("\n", string(out))
	}
	fmt.Printf("\nMemory: %s\n", l.MeasureMemory())
	return nil
}
