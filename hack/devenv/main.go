// Command devenv runs a local control plane (the envtest kube-apiserver and etcd built by `make controlplane`) with
// cnimedic's CRDs installed, writes a kubeconfig for it and waits until interrupted. `make run` uses it to run the
// manager on a laptop-sized setup without nodes; the lab (`make lab-up`) is the full cluster.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/cnimedic/cnimedic/test/testenv"
)

func main() {
	kubeconfig := flag.String("kubeconfig", ".lab/devenv.kubeconfig", "Where to write the kubeconfig of the control plane.")
	flag.Parse()

	env, err := testenv.Start()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer func() { _ = env.Stop() }()

	cfg := env.Config
	kc := clientcmdapi.NewConfig()
	kc.Clusters["devenv"] = &clientcmdapi.Cluster{Server: cfg.Host, CertificateAuthorityData: cfg.CAData}
	kc.AuthInfos["devenv"] = &clientcmdapi.AuthInfo{ClientCertificateData: cfg.CertData, ClientKeyData: cfg.KeyData}
	kc.Contexts["devenv"] = &clientcmdapi.Context{Cluster: "devenv", AuthInfo: "devenv"}
	kc.CurrentContext = "devenv"
	if err := os.MkdirAll(filepath.Dir(*kubeconfig), 0o755); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return
	}
	if err := clientcmd.WriteToFile(*kc, *kubeconfig); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return
	}
	fmt.Printf("control plane at %s; kubeconfig written to %s; Ctrl-C stops it\n", cfg.Host, *kubeconfig)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	<-sig
}
