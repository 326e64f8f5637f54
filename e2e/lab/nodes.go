package lab

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
	"github.com/cnimedic/cnimedic/hack/ociimage"
	"github.com/cnimedic/cnimedic/test/nspawn"
)

// bootNodes boots every worker that does not run yet, all at once.
func (l *Lab) bootNodes(ctx context.Context) error {
	idx, err := readIndex(l.cfg.Images)
	if err != nil {
		return err
	}
	specs := l.cfg.Nodes()
	digest := indexDigest(idx)
	var todo []NodeSpec
	for _, n := range specs {
		node, err := nspawn.Load(n.StateDir)
		if err != nil {
			todo = append(todo, n)
			continue
		}
		if l.st.ImagesDigest != digest {
			// The images were rebuilt (make images) since this node booted: import them again, and have the
			// manager's pod restarted on its new image once cnimedic is applied.
			if err := l.step("re-import the rebuilt images on "+n.Name, func() error {
				if n.IsK3s() {
					// k3s imports agent/images at start; its containerd keeps running containers across it.
					return restartUnits(ctx, node, K3sUnit)
				}
				return restartUnits(ctx, node, imagesUnit)
			}); err != nil {
				return err
			}
			l.st.RestartManager = true
		}
	}
	l.st.Nodes = specs
	l.st.ImagesDigest = digest
	if err := l.writeState(); err != nil {
		return err
	}
	if len(todo) == 0 {
		return nil
	}
	names := make([]string, len(todo))
	for i, n := range todo {
		names[i] = n.Name
	}
	return l.step("boot nodes "+strings.Join(names, ", "), func() error {
		errs := make([]error, len(todo))
		var wg sync.WaitGroup
		for i, n := range todo {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs[i] = l.bootNode(ctx, n, idx)
			}()
		}
		wg.Wait()
		return errors.Join(errs...)
	})
}

func (l *Lab) bootNode(ctx context.Context, n NodeSpec, idx ociimage.Index) error {
	pki, err := l.nodePKI(n.Name)
	if err != nil {
		return err
	}
	opts, err := l.bootOptions(n, idx, pki)
	if err != nil {
		return err
	}
	if _, err := nspawn.Boot(ctx, opts); err != nil {
		return err
	}
	return nil
}

func (l *Lab) haltNodes(ctx context.Context, nodes []NodeSpec) error {
	errs := make([]error, len(nodes))
	var wg sync.WaitGroup
	for i, n := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if node, err := nspawn.Load(n.StateDir); err == nil {
				hctx, cancel := context.WithTimeout(ctx, 30*time.Second)
				defer cancel()
				errs[i] = node.Halt(hctx)
				return
			}
			// Not running (or half made): remove whatever is left.
			errs[i] = nspawn.Cleanup(ctx, n.StateDir)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// Node returns a running worker by name, to run commands in it or change its files.
func (l *Lab) Node(name string) (*nspawn.Node, NodeSpec, error) {
	for _, n := range l.cfg.Nodes() {
		if n.Name == name {
			node, err := nspawn.Load(n.StateDir)
			return node, n, err
		}
	}
	return nil, NodeSpec{}, fmt.Errorf("lab: no worker %q (the lab has %d: worker-1...)", name, len(l.cfg.Nodes()))
}

// Scheme knows the core types and cnimedic's.
func Scheme() *runtime.Scheme {
	s := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(s))
	utilruntime.Must(v1alpha1.AddToScheme(s))
	return s
}

// RESTConfig is the admin's client configuration.
func (l *Lab) RESTConfig() (*rest.Config, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", l.cfg.Kubeconfig)
	if err != nil {
		return nil, err
	}
	cfg.QPS, cfg.Burst = 50, 100
	return cfg, nil
}

// Client is a controller-runtime client (no cache) for the admin.
func (l *Lab) Client() (client.Client, error) {
	cfg, err := l.RESTConfig()
	if err != nil {
		return nil, err
	}
	return client.New(cfg, client.Options{Scheme: Scheme()})
}

// Clientset is a client-go clientset for the admin.
func (l *Lab) Clientset() (kubernetes.Interface, error) {
	cfg, err := l.RESTConfig()
	if err != nil {
		return nil, err
	}
	return kubernetes.NewForConfig(cfg)
}

// waitNodesReady waits until every worker is registered and Ready.
func (l *Lab) waitNodesReady(ctx context.Context, timeout time.Duration) error {
	cs, err := l.Clientset()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last string
	for {
		last = ""
		for _, n := range l.cfg.Nodes() {
			node, err := cs.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{})
			if err != nil {
				last += fmt.Sprintf("%s: %v; ", n.Name, err)
				continue
			}
			if ok, why := NodeReady(node); !ok {
				last += fmt.Sprintf("%s: %s; ", n.Name, why)
			}
		}
		if last == "" {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("nodes not Ready: %s(kubelet's log: `go run ./hack/lab logs NODE kubelet`)", last)
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// NodeReady reports whether a node's Ready condition is True, and why not.
func NodeReady(node *corev1.Node) (bool, string) {
	for _, c := range node.Status.Conditions {
		if c.Type == corev1.NodeReady {
			if c.Status == corev1.ConditionTrue {
				return true, ""
			}
			return false, fmt.Sprintf("Ready=%s %s: %s", c.Status, c.Reason, c.Message)
		}
	}
	return false, "no Ready condition yet"
}

// Memory is the lab's resident memory: each control-plane process (RSS) and each node (its memory cgroup's
// usage, everything running in it: systemd, containerd, kubelet, pods).
type Memory struct {
	Procs map[string]int64
	Nodes map[string]int64
}

// Total is the sum of all parts.
func (m Memory) Total() int64 {
	var t int64
	for _, v := range m.Procs {
		t += v
	}
	for _, v := range m.Nodes {
		t += v
	}
	return t
}

func (m Memory) String() string {
	var b strings.Builder
	mib := func(v int64) string { return strconv.FormatInt(v>>20, 10) + " MiB" }
	for _, name := range []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"} {
		if v, ok := m.Procs[name]; ok {
			fmt.Fprintf(&b, "%s %s, ", name, mib(v))
		}
	}
	for name, v := range m.Nodes {
		fmt.Fprintf(&b, "%s %s, ", name, mib(v))
	}
	fmt.Fprintf(&b, "total %s", mib(m.Total()))
	return b.String()
}

// MeasureMemory reads the lab's memory now.
func (l *Lab) MeasureMemory() Memory {
	m := Memory{Procs: map[string]int64{}, Nodes: map[string]int64{}}
	for name, p := range l.st.Procs {
		m.Procs[name] = p.RSS()
	}
	for _, n := range l.cfg.Nodes() {
		node, err := nspawn.Load(n.StateDir)
		if err != nil {
			continue
		}
		for _, cg := range node.Cgroups() {
			if !strings.Contains(cg, "/memory/") {
				continue
			}
			if data, err := os.ReadFile(filepath.Join(cg, "memory.usage_in_bytes")); err == nil {
				v, _ := strconv.ParseInt(strings.TrimSpace(string(data)), 10, 64)
				// The page cache of the images imported at boot is charged here too; subtract it to report what
				// the node's processes use, as RSS does for the control plane.
				if stat, err := os.ReadFile(filepath.Join(cg, "memory.stat")); err == nil {
					for line := range strings.SplitSeq(string(stat), "\n") {
						if f := strings.Fields(line); len(f) == 2 && f[0] == "total_cache" {
							c, _ := strconv.ParseInt(f[1], 10, 64)
							v -= c
						}
					}
				}
				m.Nodes[n.Name] = v
			}
		}
	}
	return m
}

// indexDigest identifies a set of images: the digests of all of them.
func indexDigest(idx ociimage.Index) string {
	var b strings.Builder
	for _, img := range idx.Images {
		b.WriteString(img.Ref + "@" + img.Digest + "\n")
	}
	return b.String()
}
