// Package testenv starts a real kube-apiserver and etcd (controller-runtime's envtest) with cnimedic's CRDs
// installed, for the integration suites.
//
// The binaries are built from their Go modules by `make controlplane` into bin/k8s: no release download works on
// our machines, so setup-envtest is not used. A suite whose binaries are missing fails with a message naming
// that target; it never skips, because a silent skip reads as "ran no test" and hides a broken install step.
package testenv

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"go.uber.org/zap/zapcore"

	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	cnimedicv1 "github.com/cnimedic/cnimedic/api/v1alpha1"
	"github.com/cnimedic/cnimedic/test/repo"
)

// AssetsDir is where kube-apiserver and etcd are expected: $KUBEBUILDER_ASSETS, else bin/k8s.
func AssetsDir() string {
	if dir := os.Getenv("KUBEBUILDER_ASSETS"); dir != "" {
		return dir
	}
	return filepath.Join(repo.Root(), "bin", "k8s")
}

// Env is a running control plane.
type Env struct {
	env    *envtest.Environment
	Config *rest.Config
	Client client.Client
}

func init() {
	// The scheme every suite uses: the built-in kinds plus cnimedic's.
	if err := cnimedicv1.AddToScheme(scheme.Scheme); err != nil {
		panic(err)
	}
}

// Start starts kube-apiserver and etcd with the CRDs from config/crd/bases installed. Call Stop when done.
func Start() (*Env, error) {
	assets := AssetsDir()
	for _, bin := range []string{"kube-apiserver", "etcd"} {
		if _, err := os.Stat(filepath.Join(assets, bin)); err != nil {
			return nil, fmt.Errorf("envtest needs %s in %s, built from its Go module: run `make controlplane` (%v)", bin, assets, err)
		}
	}
	env := &envtest.Environment{
		BinaryAssetsDirectory: assets,
		CRDDirectoryPaths:     []string{filepath.Join(repo.Root(), "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
	}
	cfg, err := env.Start()
	if err != nil {
		return nil, fmt.Errorf("starting envtest control plane from %s: %w", assets, err)
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme.Scheme})
	if err != nil {
		_ = env.Stop()
		return nil, err
	}
	return &Env{env: env, Config: cfg, Client: c}, nil
}

// Stop stops the control plane.
func (e *Env) Stop() error { return e.env.Stop() }

// AddUser adds a user with the given groups and returns a rest.Config that authenticates as it, for access
// control tests.
func (e *Env) AddUser(name string, groups ...string) (*rest.Config, error) {
	u, err := e.env.AddUser(envtest.User{Name: name, Groups: groups}, nil)
	if err != nil {
		return nil, err
	}
	return u.Config(), nil
}

// Main is a TestMain for suites that share one control plane: it starts it into *env, runs setup (namespaces,
// priority classes...), runs the tests, stops the control plane and exits with the tests' code. Errors from
// controllers are logged to stderr; the rest of their logging is dropped to keep test output readable.
func Main(m *testing.M, env **Env, setup func(*Env) error) {
	ctrl.SetLogger(zap.New(zap.WriteTo(os.Stderr), zap.Level(zapcore.ErrorLevel)))
	e, err := Start()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	*env = e
	if setup != nil {
		if err := setup(e); err != nil {
			fmt.Fprintln(os.Stderr, "test setup:", err)
			_ = e.Stop()
			os.Exit(1)
		}
	}
	code := m.Run()
	if err := e.Stop(); err != nil {
		fmt.Fprintln(os.Stderr, "stopping the control plane:", err)
	}
	os.Exit(code)
}

// Lazy is one control plane for a package, started by the first test that asks for it (Get), so that the package's
// tests that need none run without one. Its TestMain calls LazyMain.
type Lazy struct {
	once sync.Once
	env  *Env
	err  error
}

// Get starts the control plane the first time and returns it; a start failure fails every test that asks.
func (l *Lazy) Get(t testing.TB) *Env {
	t.Helper()
	l.once.Do(func() { l.env, l.err = Start() })
	if l.err != nil {
		t.Fatal(l.err)
	}
	return l.env
}

// LazyMain is the TestMain of a package with a Lazy control plane: it runs the tests, stops the control plane if
// one was started, and exits with the tests' code.
func LazyMain(m *testing.M, l *Lazy) {
	code := m.Run()
	if l.env != nil {
		_ = l.env.Stop()
	}
	os.Exit(code)
}
