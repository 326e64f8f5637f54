// Command manager runs cnimedic's controllers: policy status, detection and the remediation workflow.
package main

import (
	"crypto/tls"
	"flag"
	"fmt"
	"os"
	"runtime/debug"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/metrics/filters"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
	detectionctrl "github.com/cnimedic/cnimedic/controllers/detection"
	externalctrl "github.com/cnimedic/cnimedic/controllers/external"
	policyctrl "github.com/cnimedic/cnimedic/controllers/policy"
	remediationctrl "github.com/cnimedic/cnimedic/controllers/remediation"
	"github.com/cnimedic/cnimedic/internal/events"
	"github.com/cnimedic/cnimedic/internal/nodelease"
)

var scheme = runtime.NewScheme()

func init() {
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(v1alpha1.AddToScheme(scheme))
}

// options are the manager's flags.
type options struct {
	metricsAddr            string
	metricsSecure          bool
	probeAddr              string
	leaderElect            bool
	leaderElectionNS       string
	namespace              string
	executorImage          string
	allowedExecutorImages  string
	canaryImage            string
	executorServiceAccount string
	leaseNamespace         string
	enableHTTP2            bool
}

func main() {
	// The live heap is mostly the informer caches, which change slowly and allocate little: collecting at 1.25× the
	// live heap instead of Go's default 2× costs a fraction of a percent of a core and keeps the manager under 100 MiB
	// on a 5,000-node cluster (make bench, bench/footprint_test.go). GOGC in the environment still decides when set.
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(25)
	}
	var o options
	flag.StringVar(&o.metricsAddr, "metrics-bind-address", ":8443", "Address of the metrics endpoint (\"0\" disables it).")
	flag.BoolVar(&o.metricsSecure, "metrics-secure", true, "Serve metrics over HTTPS with Kubernetes authentication and authorization (TokenReview and SubjectAccessReview).")
	flag.StringVar(&o.probeAddr, "health-probe-bind-address", ":8081", "Address of the /healthz and /readyz probes.")
	flag.BoolVar(&o.leaderElect, "leader-elect", true, "Elect a leader so that only one replica acts; keep it on when running more than one replica.")
	flag.StringVar(&o.leaderElectionNS, "leader-election-namespace", "", "Namespace of the leader election lease (default: the manager's namespace).")
	flag.StringVar(&o.namespace, "namespace", os.Getenv("POD_NAMESPACE"), "Namespace where executor and canary pods run (default: $POD_NAMESPACE).")
	flag.StringVar(&o.executorImage, "executor-image", "", "Image of the node-side executor (the remediator and the bundled CNI plugins), unless a policy names one.")
	flag.StringVar(&o.allowedExecutorImages, "allowed-executor-images", "", "Comma-separated executor images a policy may name in spec.executor.image besides --executor-image; a policy naming any other image repairs nothing.")
	flag.StringVar(&o.canaryImage, "canary-image", "", "Image of the verification canary pod, unless a policy names one.")
	flag.StringVar(&o.executorServiceAccount, "executor-service-account", "cnimedic-executor", "ServiceAccount of executor pods (bound to no role; its token is never mounted).")
	flag.StringVar(&o.leaseNamespace, "node-lease-namespace", nodelease.DefaultNamespace, "Namespace of the nodes' maintenance leases, shared with the medik8s operators (their LEASE_NAMESPACE); cnimedic holds a node's lease while it repairs it and leaves alone a node whose lease another tool holds. Empty: take and read no leases.")
	flag.BoolVar(&o.enableHTTP2, "enable-http2", false, "Serve HTTP/2 on the metrics endpoint (off: CVE-2023-44487 and CVE-2023-39325).")
	zapOpts := zap.Options{Development: false}
	zapOpts.BindFlags(flag.CommandLine)
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "Usage: %s [flags]\n\ncnimedic's manager: finds nodes whose pod sandboxes fail because of CNI or container-runtime problems and repairs them.\n\nFlags:\n", os.Args[0])
		flag.PrintDefaults()
	}
	flag.Parse()
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&zapOpts)))
	log := ctrl.Log.WithName("setup")

	if err := run(o); err != nil {
		log.Error(err, "manager stopped")
		os.Exit(1)
	}
}

func run(o options) error {
	var tlsOpts []func(*tls.Config)
	if !o.enableHTTP2 {
		tlsOpts = append(tlsOpts, func(c *tls.Config) { c.NextProtos = []string{"http/1.1"} })
	}
	metricsOpts := metricsserver.Options{BindAddress: o.metricsAddr, SecureServing: o.metricsSecure, TLSOpts: tlsOpts}
	if o.metricsSecure {
		metricsOpts.FilterProvider = filters.WithAuthenticationAndAuthorization
	}

	mgr, err := ctrl.NewManager(ctrl.GetConfigOrDie(), ctrl.Options{
		Scheme:                        scheme,
		Metrics:                       metricsOpts,
		HealthProbeBindAddress:        o.probeAddr,
		LeaderElection:                o.leaderElect,
		LeaderElectionID:              "manager.cnimedic.io",
		LeaderElectionNamespace:       o.leaderElectionNS,
		LeaderElectionReleaseOnCancel: true,
		Cache:                         cacheOptions(o.namespace),
		Client:                        client.Options{Cache: &client.CacheOptions{Unstructured: false}},
	})
	if err != nil {
		return fmt.Errorf("creating the manager: %w", err)
	}

	if err := (&policyctrl.Reconciler{Client: mgr.GetClient(), Clock: clock.RealClock{}}).SetupWithManager(mgr); err != nil {
		return fmt.Errorf("setting up the policy controller: %w", err)
	}
	kube, err := kubernetes.NewForConfig(mgr.GetConfig())
	if err != nil {
		return err
	}
	if o.namespace == "" {
		return fmt.Errorf("--namespace (or $POD_NAMESPACE) is required: executor and canary pods run there")
	}
	leases, err := leaseManager(mgr, o.leaseNamespace)
	if err != nil {
		return err
	}
	workflow := &remediationctrl.Reconciler{
		Client:    mgr.GetClient(),
		APIReader: mgr.GetAPIReader(),
		Kube:      kube,
		Clock:     clock.RealClock{},
		Events:    events.NewRecorder(mgr.GetEventRecorder("cnimedic"), clock.RealClock{}),
		Config: remediationctrl.Config{
			Namespace:              o.namespace,
			ExecutorImage:          o.executorImage,
			AllowedExecutorImages:  splitList(o.allowedExecutorImages),
			CanaryImage:            o.canaryImage,
			ExecutorServiceAccount: o.executorServiceAccount,
		},
		Leases: leases,
	}
	if err := workflow.SetupWithManager(mgr); err != nil {
		return fmt.Errorf("setting up the remediation controller: %w", err)
	}
	detector := &detectionctrl.Reconciler{
		Client:    mgr.GetClient(),
		APIReader: mgr.GetAPIReader(),
		Kube:      kube,
		Clock:     clock.RealClock{},
		Events:    events.NewRecorder(mgr.GetEventRecorder("cnimedic"), clock.RealClock{}),
	}
	if err := detector.SetupWithManager(mgr); err != nil {
		return fmt.Errorf("setting up the detection controller: %w", err)
	}
	// NHC's and Cluster API's requests (CNIRemediation) become NodeRemediations that an approver approves.
	if err := (&externalctrl.Reconciler{Client: mgr.GetClient(), APIReader: mgr.GetAPIReader()}).SetupWithManager(mgr); err != nil {
		return fmt.Errorf("setting up the external remediation controller: %w", err)
	}

	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		return err
	}
	if err := mgr.AddReadyzCheck("readyz", healthz.Ping); err != nil {
		return err
	}
	ctrl.Log.WithName("setup").Info("starting manager", "leaderElection", o.leaderElect, "namespace", o.namespace)
	return mgr.Start(ctrl.SetupSignalHandler())
}

// cacheOptions keeps the informer caches small. Nodes are stripped to what cnimedic reads (stripNode) and every
// object's managed fields are dropped before they are stored: on large clusters they are most of the bytes. Pods
// are cached only when cnimedic made them (executor and canary pods, in its namespace): every other pod is read
// on demand, for one node at a time, so the manager never holds a copy of every pod in the cluster.
func cacheOptions(namespace string) cache.Options {
	own, err := labels.Parse(v1alpha1.LabelRemediation)
	if err != nil {
		panic(err)
	}
	return cache.Options{
		DefaultTransform: cache.TransformStripManagedFields(),
		ByObject: map[client.Object]cache.ByObject{
			&corev1.Node{}: {Transform: stripNode},
			&corev1.Pod{}:  {Label: own, Namespaces: map[string]cache.Config{namespace: {}}},
		},
	}
}

// stripNode keeps what cnimedic reads of a node: its name, labels (policy selectors, control-plane roles),
// annotations (who cordoned it), spec (unschedulable) and conditions (Ready). The rest of its status — images,
// capacity, addresses, system info, volumes — is most of a node's bytes and is never read. Nodes are only ever
// patched from these copies (a merge patch of what changed), never updated whole, so nothing stripped here can be
// written back. Annotations stay whole: a merge patch that empties a copy's annotations would clear the node's.
func stripNode(obj any) (any, error) {
	n, ok := obj.(*corev1.Node)
	if !ok {
		return obj, nil
	}
	return &corev1.Node{
		TypeMeta: n.TypeMeta,
		ObjectMeta: metav1.ObjectMeta{
			Name: n.Name, UID: n.UID, ResourceVersion: n.ResourceVersion, Generation: n.Generation,
			CreationTimestamp: n.CreationTimestamp, DeletionTimestamp: n.DeletionTimestamp,
			Labels: n.Labels, Annotations: n.Annotations, OwnerReferences: n.OwnerReferences, Finalizers: n.Finalizers,
		},
		Spec:   n.Spec,
		Status: corev1.NodeStatus{Conditions: n.Status.Conditions, Phase: n.Status.Phase},
	}, nil
}

// splitList is a comma-separated flag's values, blanks dropped.
func splitList(s string) []string {
	var out []string
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			out = append(out, v)
		}
	}
	return out
}

// leaseManager is the nodes' lease keeper, or nil when --node-lease-namespace is empty. It reads and writes the API
// server directly: leases are read only on admission and renewal, and a cache of every Lease in the cluster (kubelet's
// heartbeats among them) would cost far more than those reads.
func leaseManager(mgr ctrl.Manager, namespace string) (*nodelease.Manager, error) {
	if namespace == "" {
		return nil, nil
	}
	c, err := client.New(mgr.GetConfig(), client.Options{Scheme: mgr.GetScheme()})
	if err != nil {
		return nil, fmt.Errorf("creating the lease client: %w", err)
	}
	return &nodelease.Manager{Client: c, Namespace: namespace, Holder: nodelease.Holder, Duration: nodeLeaseDuration}, nil
}

// nodeLeaseDuration is how long a node's lease lasts without renewal: a repair renews it on every reconcile once half
// of it is gone, and a manager that died lets other tools have the node back within this time.
const nodeLeaseDuration = 5 * time.Minute
