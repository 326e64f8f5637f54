//go:build bench

package bench

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	schedulingv1 "k8s.io/api/scheduling/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
	"github.com/cnimedic/cnimedic/internal/nodelease"
	"github.com/cnimedic/cnimedic/test/repo"
)

// ManagerUser is the user the manager runs as, bound to the manager's real RBAC (config/rbac): the audit log tells
// its requests apart by this name.
const ManagerUser = "cnimedic-manager"

// Namespace is the manager's namespace (executor and canary pods, the leader election lease).
const Namespace = "cnimedic-system"

func init() {
	if err := v1alpha1.AddToScheme(scheme.Scheme); err != nil {
		panic(err)
	}
}

// ControlPlaneOptions configure a control plane.
type ControlPlaneOptions struct {
	// Name names the run's directory under OutDir()/run.
	Name string
	// Audit logs every request of ManagerUser (metadata level) to Dir/audit.log.
	Audit bool
	// QuotaBytes is etcd's --quota-backend-bytes (0: etcd's default of 2 GiB).
	QuotaBytes int64
	// MemoryLimit is GOMEMLIMIT for kube-apiserver and etcd (empty: none), so that their garbage collectors keep
	// them near their live heap on a machine shared with others.
	MemoryLimit string
}

// ControlPlane is a kube-apiserver and etcd (envtest, built by `make controlplane`), with cnimedic's CRDs, its
// namespace, the executor PriorityClass and the manager's RBAC installed.
type ControlPlane struct {
	env *envtest.Environment
	// Dir holds etcd's data, the certificates, the audit log and the manager's kubeconfig and log.
	Dir string
	// Config is an administrator's (system:masters) config for the load generators, with client-side rate limits off.
	Config *rest.Config
	Client client.Client
	// Kube talks protobuf: the load generators create hundreds of thousands of objects.
	Kube     kubernetes.Interface
	AuditLog string
	// ManagerKubeconfig authenticates as ManagerUser.
	ManagerKubeconfig string
	lock              *os.File
}

var (
	runningMu sync.Mutex
	running   = map[*ControlPlane]bool{}
)

// stopAll stops every control plane still running (on a signal).
func stopAll() {
	runningMu.Lock()
	defer runningMu.Unlock()
	for cp := range running {
		_ = cp.stop()
	}
}

// StartControlPlane starts the control plane.
func StartControlPlane(o ControlPlaneOptions) (*ControlPlane, error) {
	root := repo.Root()
	assets := os.Getenv("KUBEBUILDER_ASSETS")
	if assets == "" {
		assets = filepath.Join(root, "bin", "k8s")
	}
	for _, b := range []string{"kube-apiserver", "etcd"} {
		if _, err := os.Stat(filepath.Join(assets, b)); err != nil {
			return nil, fmt.Errorf("the benchmarks need %s in %s: run `make controlplane` (%v)", b, assets, err)
		}
	}
	dir := filepath.Join(OutDir(), "run", o.Name)
	// One run of a benchmark at a time: a second one would remove the first one's etcd data under it.
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return nil, err
	}
	lock, err := os.OpenFile(dir+".lock", os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		lock.Close()
		return nil, fmt.Errorf("another run of this benchmark holds %s.lock: wait for it to end", dir)
	}
	if err := os.RemoveAll(dir); err != nil {
		lock.Close()
		return nil, err
	}
	for _, d := range []string{"etcd", "certs"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return nil, err
		}
	}
	cp := &ControlPlane{Dir: dir, lock: lock}
	env := &envtest.Environment{
		BinaryAssetsDirectory:    assets,
		CRDDirectoryPaths:        []string{filepath.Join(root, "config", "crd", "bases")},
		ErrorIfCRDPathMissing:    true,
		ControlPlaneStartTimeout: 2 * time.Minute,
		ControlPlaneStopTimeout:  2 * time.Minute,
	}
	api := env.ControlPlane.GetAPIServer()
	api.CertDir = filepath.Join(dir, "certs")
	args := api.Configure()
	// The load generators are many; the defaults (400/200) would reject them before the manager sees any load.
	args.Set("max-requests-inflight", "1600")
	args.Set("max-mutating-requests-inflight", "800")
	if o.Audit {
		policy := filepath.Join(dir, "audit-policy.yaml")
		// Metadata of every request of the manager (verb, resource, query, user): its writes and its list/watch
		// selectors. Nothing of anyone else: the load generators make millions of requests.
		err := os.WriteFile(policy, []byte(`apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
  - level: Metadata
    users: [`+ManagerUser+`]
  - level: None
`), 0o644)
		if err != nil {
			return nil, err
		}
		cp.AuditLog = filepath.Join(dir, "audit.log")
		args.Set("audit-policy-file", policy)
		args.Set("audit-log-path", cp.AuditLog)
		args.Set("audit-log-maxsize", "0")
		args.Set("audit-log-format", "json")
	}
	if env.ControlPlane.Etcd == nil {
		env.ControlPlane.Etcd = &envtest.Etcd{}
	}
	env.ControlPlane.Etcd.DataDir = filepath.Join(dir, "etcd")
	if o.QuotaBytes > 0 {
		env.ControlPlane.Etcd.Configure().Set("quota-backend-bytes", strconv.FormatInt(o.QuotaBytes, 10))
	}
	if o.MemoryLimit != "" {
		// The control plane's processes inherit this process's environment when they start; this process read
		// its own GOMEMLIMIT long ago, and the manager is started with it removed.
		old, had := os.LookupEnv("GOMEMLIMIT")
		os.Setenv("GOMEMLIMIT", o.MemoryLimit)
		defer func() {
			if had {
				os.Setenv("GOMEMLIMIT", old)
			} else {
				os.Unsetenv("GOMEMLIMIT")
			}
		}()
	}
	cfg, err := env.Start()
	if err != nil {
		_ = env.Stop()
		lock.Close()
		return nil, fmt.Errorf("starting the control plane: %w", err)
	}
	cp.env = env
	runningMu.Lock()
	running[cp] = true
	runningMu.Unlock()
	cfg = rest.CopyConfig(cfg)
	cfg.QPS, cfg.Burst = -1, 0
	cfg.Timeout = time.Minute
	cfg.WarningHandler = rest.NoWarnings{}
	cp.Config = cfg
	if cp.Client, err = client.New(cfg, client.Options{Scheme: scheme.Scheme}); err != nil {
		_ = cp.Stop()
		return nil, err
	}
	pcfg := rest.CopyConfig(cfg)
	pcfg.ContentType = "application/vnd.kubernetes.protobuf"
	pcfg.AcceptContentTypes = "application/vnd.kubernetes.protobuf,application/json"
	if cp.Kube, err = kubernetes.NewForConfig(pcfg); err != nil {
		_ = cp.Stop()
		return nil, err
	}
	if err := cp.install(); err != nil {
		_ = cp.Stop()
		return nil, err
	}
	return cp, nil
}

// install creates what the manager needs: its namespace, the executor PriorityClass, its RBAC bound to ManagerUser,
// and a kubeconfig for that user.
func (cp *ControlPlane) install() error {
	ctx := context.Background()
	objs := []client.Object{
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: Namespace}},
		&schedulingv1.PriorityClass{ObjectMeta: metav1.ObjectMeta{Name: "cnimedic-executor"}, Value: 1000000000},
		&rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "bench-manager"},
			RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "cnimedic-manager"},
			Subjects: []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: ManagerUser}}},
		&rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "bench-leader-election", Namespace: Namespace},
			RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "cnimedic-leader-election"},
			Subjects: []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: ManagerUser}}},
		&rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "bench-manager-pods", Namespace: Namespace},
			RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "cnimedic-manager-pods"},
			Subjects: []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: ManagerUser}}},
	}
	// The manager's roles exactly as deployed: a missing permission shows here as it would in a cluster.
	for _, f := range []string{"role.yaml", "leader_election_role.yaml", "pods_role.yaml", "node_leases_role.yaml"} {
		raw, err := os.ReadFile(filepath.Join(repo.Root(), "config", "rbac", f))
		if err != nil {
			return err
		}
		dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(raw), 4096)
		for {
			var u map[string]any
			if err := dec.Decode(&u); err == io.EOF {
				break
			} else if err != nil {
				return fmt.Errorf("%s: %w", f, err)
			}
			if u == nil {
				continue
			}
			obj, _, err := scheme.Codecs.UniversalDeserializer().Decode(mustJSON(u), nil, nil)
			if err != nil {
				return fmt.Errorf("%s: %w", f, err)
			}
			objs = append(objs, obj.(client.Object))
		}
	}
	objs = append(objs, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "bench-manager-node-leases", Namespace: nodelease.DefaultNamespace},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "cnimedic-manager-node-leases"},
		Subjects: []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: ManagerUser}}})
	for _, o := range objs {
		if err := cp.Client.Create(ctx, o); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("creating %T %s: %w", o, o.GetName(), err)
		}
	}
	user, err := cp.env.AddUser(envtest.User{Name: ManagerUser}, nil)
	if err != nil {
		return err
	}
	kc, err := user.KubeConfig()
	if err != nil {
		return err
	}
	cp.ManagerKubeconfig = filepath.Join(cp.Dir, "manager.kubeconfig")
	return os.WriteFile(cp.ManagerKubeconfig, kc, 0o600)
}

// Stop stops the control plane and removes etcd's data (it may be gigabytes).
func (cp *ControlPlane) Stop() error {
	runningMu.Lock()
	delete(running, cp)
	runningMu.Unlock()
	return cp.stop()
}

func (cp *ControlPlane) stop() error {
	var err error
	if cp.env != nil {
		err = cp.env.Stop()
	}
	if os.Getenv("BENCH_KEEP") == "" {
		_ = os.RemoveAll(filepath.Join(cp.Dir, "etcd"))
	}
	if cp.lock != nil {
		cp.lock.Close()
		cp.lock = nil
	}
	return err
}

// PIDs finds the control plane's processes (children of this process) by name.
func (cp *ControlPlane) PIDs() (apiserver, etcd int) {
	self := os.Getpid()
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		st, err := readStat(pid)
		if err != nil || st.ppid != self {
			continue
		}
		switch {
		case strings.HasPrefix(st.comm, "kube-apiserver"):
			apiserver = pid
		case st.comm == "etcd":
			etcd = pid
		}
	}
	return apiserver, etcd
}
