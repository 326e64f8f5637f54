package lab

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

// ensurePKI makes the CA, the serving and client certificates, the service-account key and the kubeconfigs, once.
func (l *Lab) ensurePKI() error {
	dir := l.cfg.pkiDir()
	if _, err := os.Stat(filepath.Join(dir, "complete")); err == nil {
		return nil
	}
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	ca, err := newCA()
	if err != nil {
		return err
	}
	if err := writePair(dir, "ca", ca); err != nil {
		return err
	}
	host := l.cfg.HostAddr.Addr().AsSlice()
	// The serving certificate carries the bridge address (the nodes and the in-cluster manager dial it), loopback,
	// and the kubernetes Service's cluster IP and names (what in-cluster clients verify against by default).
	serving, err := ca.issue(certRequest{
		CommonName: "kube-apiserver", Server: true,
		IPs:      []net.IP{host, net.IPv4(127, 0, 0, 1), net.IPv4(10, 96, 0, 1)},
		DNSNames: []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"},
	})
	if err != nil {
		return err
	}
	pairs := map[string]certRequest{
		// The user, the API server's client for kubelets (logs, exec), the two controllers.
		"admin":                   {CommonName: "cnimedic-lab-admin", Organization: []string{"system:masters"}},
		"apiserver-kubelet":       {CommonName: "kube-apiserver-kubelet-client", Organization: []string{"system:masters"}},
		"kube-controller-manager": {CommonName: "system:kube-controller-manager"},
		"kube-scheduler":          {CommonName: "system:kube-scheduler"},
	}
	issued := map[string]*keyPair{"apiserver": serving}
	for name, req := range pairs {
		kp, err := ca.issue(req)
		if err != nil {
			return err
		}
		issued[name] = kp
	}
	for name, kp := range issued {
		if err := writePair(dir, name, kp); err != nil {
			return err
		}
	}
	// The service-account token signer: the API server signs with the key and verifies with it (a private key
	// file also serves as its public key), kube-controller-manager signs tokens for its controllers.
	_, saKey, err := newKey()
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "sa.key"), saKey, 0o600); err != nil {
		return err
	}
	for _, user := range []string{"admin", "kube-controller-manager", "kube-scheduler"} {
		// Every client dials the bridge address, the only one the API server binds; it is the host's own.
		data, err := kubeconfig(l.cfg.Server(), ca.Cert, user, issued[user])
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, user+".kubeconfig"), data, 0o600); err != nil {
			return err
		}
	}
	admin, err := os.ReadFile(filepath.Join(dir, "admin.kubeconfig"))
	if err != nil {
		return err
	}
	if err := os.WriteFile(l.cfg.Kubeconfig, admin, 0o600); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "complete"), nil, 0o644)
}

// nodePKI issues a node's kubelet client certificate (system:node:NAME in system:nodes, as the Node authorizer
// and NodeRestriction expect) and its kubeconfig.
func (l *Lab) nodePKI(name string) (nodePKI, error) {
	ca, err := loadCA(l.cfg.pkiDir())
	if err != nil {
		return nodePKI{}, err
	}
	kp, err := ca.issue(certRequest{CommonName: "system:node:" + name, Organization: []string{"system:nodes"}})
	if err != nil {
		return nodePKI{}, err
	}
	kc, err := kubeconfig(l.cfg.Server(), ca.Cert, "system:node:"+name, kp)
	if err != nil {
		return nodePKI{}, err
	}
	return nodePKI{CA: ca.Cert, Kubeconfig: kc}, nil
}

func (l *Lab) pki(name string) string { return filepath.Join(l.cfg.pkiDir(), name) }

// component is one control-plane process: its argv and how to tell it is ready.
type component struct {
	name  string
	argv  []string
	ready func(ctx context.Context) error
}

func (l *Lab) components() []component {
	host := l.cfg.HostAddr.Addr().String()
	etcdURL := "http://127.0.0.1:" + strconv.Itoa(etcdPort)
	return []component{
		{
			name: "etcd",
			argv: []string{l.cfg.binary("etcd"),
				"--name=lab", "--data-dir=" + filepath.Join(l.cfg.Dir, "etcd"),
				"--listen-client-urls=" + etcdURL, "--advertise-client-urls=" + etcdURL,
				"--listen-peer-urls=http://127.0.0.1:" + strconv.Itoa(etcdPeerPort),
				"--initial-advertise-peer-urls=http://127.0.0.1:" + strconv.Itoa(etcdPeerPort),
				"--initial-cluster=lab=http://127.0.0.1:" + strconv.Itoa(etcdPeerPort),
				// A throw-away cluster: fsync on a shared CI disk costs seconds per write burst for nothing.
				"--unsafe-no-fsync=true", "--log-level=warn"},
			ready: func(ctx context.Context) error { return httpReady(ctx, nil, etcdURL+"/health") },
		},
		{
			name: "kube-apiserver",
			argv: []string{l.cfg.binary("kube-apiserver"),
				"--etcd-servers=" + etcdURL,
				// The nodes reach it on the bridge; the certificate carries that address.
				"--bind-address=" + host, "--advertise-address=" + host, "--secure-port=" + strconv.Itoa(apiserverPort),
				"--tls-cert-file=" + l.pki("apiserver.crt"), "--tls-private-key-file=" + l.pki("apiserver.key"),
				"--client-ca-file=" + l.pki("ca.crt"),
				"--service-account-key-file=" + l.pki("sa.key"), "--service-account-signing-key-file=" + l.pki("sa.key"),
				"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
				"--service-cluster-ip-range=10.96.0.0/16",
				"--authorization-mode=Node,RBAC", "--enable-admission-plugins=NodeRestriction",
				// The executor pod is privileged-adjacent (hostNetwork, host paths); the policy allows it.
				"--allow-privileged=true",
				// Measured: without it the API server refuses to publish its own address as the kubernetes
				// Service's endpoint here; nothing in the lab routes Service IPs anyway (no kube-proxy).
				"--endpoint-reconciler-type=none",
				"--kubelet-preferred-address-types=InternalIP",
				"--kubelet-client-certificate=" + l.pki("apiserver-kubelet.crt"), "--kubelet-client-key=" + l.pki("apiserver-kubelet.key"),
				"--profiling=false"},
			ready: func(ctx context.Context) error { return l.apiReady(ctx) },
		},
		{
			name: "kube-controller-manager",
			argv: []string{l.cfg.binary("kube-controller-manager"),
				"--kubeconfig=" + l.pki("kube-controller-manager.kubeconfig"),
				"--authentication-kubeconfig=" + l.pki("kube-controller-manager.kubeconfig"),
				"--authorization-kubeconfig=" + l.pki("kube-controller-manager.kubeconfig"),
				"--bind-address=127.0.0.1", "--secure-port=" + strconv.Itoa(kcmPort),
				// ReplicaSets, node lifecycle, service accounts and their tokens, the root CA published to every
				// namespace (kube-root-ca.crt, which in-cluster clients such as the manager need), disruption (PDBs).
				"--controllers=*", "--use-service-account-credentials=true",
				"--service-account-private-key-file=" + l.pki("sa.key"), "--root-ca-file=" + l.pki("ca.crt"),
				"--cluster-name=cnimedic-lab", "--leader-elect=false", "--profiling=false"},
			ready: func(ctx context.Context) error { return nil },
		},
		{
			name: "kube-scheduler",
			argv: []string{l.cfg.binary("kube-scheduler"),
				"--kubeconfig=" + l.pki("kube-scheduler.kubeconfig"),
				"--authentication-kubeconfig=" + l.pki("kube-scheduler.kubeconfig"),
				"--authorization-kubeconfig=" + l.pki("kube-scheduler.kubeconfig"),
				"--bind-address=127.0.0.1", "--secure-port=" + strconv.Itoa(schedulerPort),
				"--leader-elect=false", "--profiling=false"},
			ready: func(ctx context.Context) error { return nil },
		},
	}
}

// startControlPlane starts each component that does not run yet, in order, each once the previous one is ready.
func (l *Lab) startControlPlane(ctx context.Context) error {
	if l.st.Procs == nil {
		l.st.Procs = map[string]*Proc{}
	}
	for _, c := range l.components() {
		if p := l.st.Procs[c.name]; p.Alive() {
			continue
		}
		err := l.step("start "+c.name, func() error {
			p, err := startProc(c.name, c.argv, filepath.Join(l.cfg.logDir(), c.name+".log"))
			if err != nil {
				return err
			}
			l.st.Procs[c.name] = p
			if err := l.writeState(); err != nil {
				return err
			}
			rctx, cancel := context.WithTimeout(ctx, 90*time.Second)
			defer cancel()
			for {
				err := c.ready(rctx)
				if err == nil {
					return nil
				}
				if !p.Alive() {
					return fmt.Errorf("%s exited; its log %s ends with:\n%s", c.name, p.Log, logTail(p.Log, 2000))
				}
				select {
				case <-rctx.Done():
					return fmt.Errorf("%s not ready (%v); its log %s ends with:\n%s", c.name, err, p.Log, logTail(p.Log, 2000))
				case <-time.After(200 * time.Millisecond):
				}
			}
		})
		if err != nil {
			return err
		}
	}
	return nil
}

func httpReady(ctx context.Context, client *http.Client, url string) error {
	if client == nil {
		client = &http.Client{Timeout: 2 * time.Second}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	return nil
}

// apiReady asks the API server's /readyz with the admin certificate.
func (l *Lab) apiReady(ctx context.Context) error {
	caPEM, err := os.ReadFile(l.pki("ca.crt"))
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return errors.New("lab: bad CA")
	}
	cert, err := tls.LoadX509KeyPair(l.pki("admin.crt"), l.pki("admin.key"))
	if err != nil {
		return err
	}
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12},
	}}
	return httpReady(ctx, client, l.cfg.Server()+"/readyz")
}
