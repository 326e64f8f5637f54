//go:build bench

package bench

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
)

// Objects of realistic size, as a kubelet and a Deployment make them: a node's status carries ~30 images, its
// conditions, capacity, addresses and system info (about 9 KB of JSON); a pod has an init container and two
// containers with probes, environment, mounts and a projected token volume, and a Running status (about 6 KB).

// ImagesPerNode is how many images a node's status lists.
const ImagesPerNode = 30

func digest(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

var imageRepos = []string{
	"registry.k8s.io/kube-proxy", "registry.k8s.io/pause", "registry.k8s.io/coredns/coredns", "docker.io/calico/node",
	"docker.io/calico/cni", "quay.io/prometheus/node-exporter", "docker.io/library/nginx", "docker.io/library/redis",
	"quay.io/jetstack/cert-manager-controller", "registry.k8s.io/ingress-nginx/controller", "docker.io/bitnami/postgresql",
	"ghcr.io/fluxcd/source-controller", "docker.io/grafana/grafana", "docker.io/library/busybox", "quay.io/cilium/cilium",
	"registry.k8s.io/metrics-server/metrics-server", "docker.io/fluent/fluent-bit", "gcr.io/distroless/static",
	"docker.io/library/python", "docker.io/library/golang", "docker.io/envoyproxy/envoy", "quay.io/argoproj/argocd",
	"docker.io/bitnami/kafka", "docker.io/library/memcached", "registry.k8s.io/csi-secrets-store/driver",
	"docker.io/istio/proxyv2", "docker.io/jaegertracing/jaeger-agent", "docker.io/library/alpine",
	"registry.k8s.io/sig-storage/csi-node-driver-registrar", "docker.io/openpolicyagent/gatekeeper",
}

// NewNode is a node as a kubelet registers and reports it, Ready since readySince.
func NewNode(name string, i int, labels map[string]string, readySince time.Time) *corev1.Node {
	zone := []string{"a", "b", "c"}[i%3]
	l := map[string]string{
		"beta.kubernetes.io/arch": "amd64", "beta.kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
		"kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "node.kubernetes.io/instance-type": "m5.2xlarge",
		"topology.kubernetes.io/region": "eu-west-1", "topology.kubernetes.io/zone": "eu-west-1" + zone,
		"failure-domain.beta.kubernetes.io/region": "eu-west-1", "failure-domain.beta.kubernetes.io/zone": "eu-west-1" + zone,
		"node.kubernetes.io/pool": fmt.Sprintf("pool-%d", i%8),
	}
	for k, v := range labels {
		l[k] = v
	}
	ip := fmt.Sprintf("10.%d.%d.%d", 1+i/65536, (i/256)%256, i%256)
	now := metav1.Now()
	since := metav1.NewTime(readySince)
	images := make([]corev1.ContainerImage, 0, ImagesPerNode)
	for j := 0; j < ImagesPerNode; j++ {
		repo := imageRepos[(i+j)%len(imageRepos)]
		tag := fmt.Sprintf("v1.%d.%d", (i+j)%30, j%7)
		images = append(images, corev1.ContainerImage{
			Names:     []string{repo + "@sha256:" + digest(repo+tag), repo + ":" + tag},
			SizeBytes: int64(5_000_000 + (i*7919+j*104729)%300_000_000),
		})
	}
	q := resource.MustParse
	capacity := corev1.ResourceList{
		corev1.ResourceCPU: q("8"), corev1.ResourceMemory: q("32386804Ki"), corev1.ResourcePods: q("110"),
		corev1.ResourceEphemeralStorage: q("104845292Ki"), "hugepages-1Gi": q("0"), "hugepages-2Mi": q("0"),
		"attachable-volumes-aws-ebs": q("25"),
	}
	alloc := corev1.ResourceList{
		corev1.ResourceCPU: q("7910m"), corev1.ResourceMemory: q("31369972Ki"), corev1.ResourcePods: q("110"),
		corev1.ResourceEphemeralStorage: q("95551679124"), "hugepages-1Gi": q("0"), "hugepages-2Mi": q("0"),
		"attachable-volumes-aws-ebs": q("25"),
	}
	cond := func(t corev1.NodeConditionType, s corev1.ConditionStatus, reason, msg string) corev1.NodeCondition {
		return corev1.NodeCondition{Type: t, Status: s, Reason: reason, Message: msg, LastHeartbeatTime: now, LastTransitionTime: since}
	}
	return &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: l, Annotations: map[string]string{
			"node.alpha.kubernetes.io/ttl":                           "0",
			"volumes.kubernetes.io/controller-managed-attach-detach": "true",
			"csi.volume.kubernetes.io/nodeid":                        fmt.Sprintf(`{"ebs.csi.aws.com":"i-%017x"}`, i),
			"projectcalico.org/IPv4Address":                          ip + "/20",
		}},
		Spec: corev1.NodeSpec{
			PodCIDR: fmt.Sprintf("100.%d.%d.0/24", 64+i/256%64, i%256), PodCIDRs: []string{fmt.Sprintf("100.%d.%d.0/24", 64+i/256%64, i%256)},
			ProviderID: fmt.Sprintf("aws:///eu-west-1%s/i-%017x", zone, i),
		},
		Status: corev1.NodeStatus{
			Capacity: capacity, Allocatable: alloc,
			Conditions: []corev1.NodeCondition{
				cond(corev1.NodeMemoryPressure, corev1.ConditionFalse, "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
				cond(corev1.NodeDiskPressure, corev1.ConditionFalse, "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
				cond(corev1.NodePIDPressure, corev1.ConditionFalse, "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
				cond(corev1.NodeReady, corev1.ConditionTrue, "KubeletReady", "kubelet is posting ready status"),
			},
			Addresses: []corev1.NodeAddress{
				{Type: corev1.NodeInternalIP, Address: ip}, {Type: corev1.NodeHostName, Address: name},
				{Type: corev1.NodeInternalDNS, Address: "ip-" + ip + ".eu-west-1.compute.internal"},
			},
			DaemonEndpoints: corev1.NodeDaemonEndpoints{KubeletEndpoint: corev1.DaemonEndpoint{Port: 10250}},
			NodeInfo: corev1.NodeSystemInfo{
				MachineID: digest(name)[:32], SystemUUID: digest("uuid" + name)[:32], BootID: digest("boot" + name)[:32],
				KernelVersion: "6.1.0-27-cloud-amd64", OSImage: "Debian GNU/Linux 12 (bookworm)",
				ContainerRuntimeVersion: "containerd://1.7.24", KubeletVersion: "v1.37.2", KubeProxyVersion: "v1.37.2",
				OperatingSystem: "linux", Architecture: "amd64",
			},
			Images: images,
		},
	}
}

// NewPod is a Deployment's pod on the node: an init container and two containers. Its status is set separately
// (the API server drops a pod's status on create): RunningStatus.
func NewPod(ns, name, node string, i int) *corev1.Pod {
	app := fmt.Sprintf("svc-%d", i%97)
	hash := digest(app)[:10]
	env := []corev1.EnvVar{
		{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: "metadata.name"}}},
		{Name: "POD_NAMESPACE", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: "metadata.namespace"}}},
		{Name: "NODE_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: "spec.nodeName"}}},
		{Name: "LOG_LEVEL", Value: "info"}, {Name: "HTTP_PORT", Value: "8080"}, {Name: "METRICS_PORT", Value: "9090"},
		{Name: "OTEL_EXPORTER_OTLP_ENDPOINT", Value: "http://otel-collector.observability.svc:4317"},
		{Name: "DATABASE_URL", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
			LocalObjectReference: corev1.LocalObjectReference{Name: app + "-db"}, Key: "url"}}},
	}
	mounts := []corev1.VolumeMount{
		{Name: "config", MountPath: "/etc/app", ReadOnly: true}, {Name: "cache", MountPath: "/var/cache/app"},
		{Name: "kube-api-access", MountPath: "/var/run/secrets/kubernetes.io/serviceaccount", ReadOnly: true},
	}
	q := resource.MustParse
	probe := func(path string, port int32) *corev1.Probe {
		return &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: path, Port: intstr.FromInt32(port), Scheme: corev1.URISchemeHTTP}},
			InitialDelaySeconds: 5, TimeoutSeconds: 1, PeriodSeconds: 10, SuccessThreshold: 1, FailureThreshold: 3}
	}
	sec := &corev1.SecurityContext{AllowPrivilegeEscalation: ptr.To(false), ReadOnlyRootFilesystem: ptr.To(true),
		RunAsNonRoot: ptr.To(true), Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}}}
	container := func(cname, image string, port int32, portName string) corev1.Container {
		return corev1.Container{
			Name: cname, Image: image, ImagePullPolicy: corev1.PullIfNotPresent,
			Args: []string{"--config=/etc/app/config.yaml", fmt.Sprintf("--listen=:%d", port)},
			Ports: []corev1.ContainerPort{{Name: portName, ContainerPort: port, Protocol: corev1.ProtocolTCP},
				{Name: portName + "-metrics", ContainerPort: port + 1010, Protocol: corev1.ProtocolTCP}},
			Env: env, VolumeMounts: mounts, SecurityContext: sec,
			Resources: corev1.ResourceRequirements{
				Requests: corev1.ResourceList{corev1.ResourceCPU: q("100m"), corev1.ResourceMemory: q("128Mi")},
				Limits:   corev1.ResourceList{corev1.ResourceMemory: q("256Mi")},
			},
			LivenessProbe: probe("/healthz", port), ReadinessProbe: probe("/readyz", port),
			TerminationMessagePath: "/dev/termination-log", TerminationMessagePolicy: corev1.TerminationMessageReadFile,
		}
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name: name, Namespace: ns,
			Labels: map[string]string{"app.kubernetes.io/name": app, "app.kubernetes.io/part-of": "shop",
				"pod-template-hash": hash, "tier": []string{"web", "api", "worker"}[i%3]},
			Annotations: map[string]string{"prometheus.io/scrape": "true", "prometheus.io/port": "9090",
				"kubectl.kubernetes.io/restartedAt": "2026-01-12T09:30:00Z"},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: app + "-" + hash,
				UID: types.UID(digest(ns + app)[:32]), Controller: ptr.To(true), BlockOwnerDeletion: ptr.To(true)}},
		},
		Spec: corev1.PodSpec{
			NodeName: node, ServiceAccountName: "default", AutomountServiceAccountToken: ptr.To(false),
			InitContainers: []corev1.Container{{Name: "migrate", Image: "docker.io/library/busybox:1.36",
				Command: []string{"sh", "-c", "until nslookup db; do sleep 2; done"}, VolumeMounts: mounts[:1],
				TerminationMessagePath: "/dev/termination-log", TerminationMessagePolicy: corev1.TerminationMessageReadFile,
				ImagePullPolicy: corev1.PullIfNotPresent}},
			Containers: []corev1.Container{
				container("app", fmt.Sprintf("registry.example.com/shop/%s:1.%d.3", app, i%40), 8080, "http"),
				container("envoy", "docker.io/envoyproxy/envoy:v1.31.2", 15001, "proxy"),
			},
			Volumes: []corev1.Volume{
				{Name: "config", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
					LocalObjectReference: corev1.LocalObjectReference{Name: app + "-config"}, DefaultMode: ptr.To(int32(420))}}},
				{Name: "cache", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{SizeLimit: ptr.To(q("1Gi"))}}},
				{Name: "kube-api-access", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
					DefaultMode: ptr.To(int32(420)),
					Sources: []corev1.VolumeProjection{
						{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{ExpirationSeconds: ptr.To(int64(3607)), Path: "token"}},
						{ConfigMap: &corev1.ConfigMapProjection{LocalObjectReference: corev1.LocalObjectReference{Name: "kube-root-ca.crt"},
							Items: []corev1.KeyToPath{{Key: "ca.crt", Path: "ca.crt"}}}},
						{DownwardAPI: &corev1.DownwardAPIProjection{Items: []corev1.DownwardAPIVolumeFile{{Path: "namespace",
							FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: "metadata.namespace"}}}}},
					}}}},
			},
			Tolerations: []corev1.Toleration{
				{Key: "node.kubernetes.io/not-ready", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute, TolerationSeconds: ptr.To(int64(300))},
				{Key: "node.kubernetes.io/unreachable", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute, TolerationSeconds: ptr.To(int64(300))},
			},
			SecurityContext:               &corev1.PodSecurityContext{RunAsUser: ptr.To(int64(10001)), FSGroup: ptr.To(int64(10001)), SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault}},
			TerminationGracePeriodSeconds: ptr.To(int64(30)),
		},
	}
}

// StuckStatus is the status kubelet reports for a pod whose sandbox it cannot create (the CNI ADD fails): Pending,
// PodReadyToStartContainers False since the first attempt, the containers waiting in ContainerCreating. Detection
// counts a pod's failure events only once this status, which only the node (or a holder of pods/status) can write,
// confirms them.
func StuckStatus(pod *corev1.Pod, since time.Time) corev1.PodStatus {
	at := metav1.NewTime(since)
	cond := func(t corev1.PodConditionType, s corev1.ConditionStatus, reason string) corev1.PodCondition {
		return corev1.PodCondition{Type: t, Status: s, Reason: reason, LastTransitionTime: at}
	}
	st := corev1.PodStatus{
		Phase: corev1.PodPending, HostIP: "10.0.0.1", HostIPs: []corev1.HostIP{{IP: "10.0.0.1"}}, StartTime: &at,
		QOSClass: corev1.PodQOSBurstable,
		Conditions: []corev1.PodCondition{cond("PodReadyToStartContainers", corev1.ConditionFalse, ""),
			cond(corev1.PodInitialized, corev1.ConditionFalse, "ContainersNotInitialized"),
			cond(corev1.PodReady, corev1.ConditionFalse, "ContainersNotReady"),
			cond(corev1.ContainersReady, corev1.ConditionFalse, "ContainersNotReady"), cond(corev1.PodScheduled, corev1.ConditionTrue, "")},
	}
	waiting := func(c corev1.Container, reason string) corev1.ContainerStatus {
		return corev1.ContainerStatus{Name: c.Name, Image: c.Image,
			State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: reason}}}
	}
	for _, c := range pod.Spec.InitContainers {
		st.InitContainerStatuses = append(st.InitContainerStatuses, waiting(c, "PodInitializing"))
	}
	for _, c := range pod.Spec.Containers {
		st.ContainerStatuses = append(st.ContainerStatuses, waiting(c, "PodInitializing"))
	}
	return st
}

// RunningStatus is the status kubelet reports for the pod once it runs.
func RunningStatus(pod *corev1.Pod, i int) corev1.PodStatus {
	start := metav1.NewTime(time.Now().Add(-time.Duration(1+i%72) * time.Hour))
	ip := fmt.Sprintf("100.%d.%d.%d", 64+i/65536%64, i/256%256, i%256)
	cond := func(t corev1.PodConditionType) corev1.PodCondition {
		return corev1.PodCondition{Type: t, Status: corev1.ConditionTrue, LastTransitionTime: start}
	}
	st := corev1.PodStatus{
		Phase: corev1.PodRunning, HostIP: "10.0.0.1", HostIPs: []corev1.HostIP{{IP: "10.0.0.1"}},
		PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}}, StartTime: &start, QOSClass: corev1.PodQOSBurstable,
		Conditions: []corev1.PodCondition{cond("PodReadyToStartContainers"), cond(corev1.PodInitialized), cond(corev1.PodReady),
			cond(corev1.ContainersReady), cond(corev1.PodScheduled)},
	}
	for _, c := range pod.Spec.InitContainers {
		st.InitContainerStatuses = append(st.InitContainerStatuses, corev1.ContainerStatus{
			Name: c.Name, Image: c.Image, ImageID: "docker.io/library/busybox@sha256:" + digest(c.Image), Ready: true,
			ContainerID: "containerd://" + digest(pod.Name+c.Name),
			State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 0, Reason: "Completed",
				StartedAt: start, FinishedAt: start, ContainerID: "containerd://" + digest(pod.Name+c.Name)}},
		})
	}
	for _, c := range pod.Spec.Containers {
		st.ContainerStatuses = append(st.ContainerStatuses, corev1.ContainerStatus{
			Name: c.Name, Image: c.Image, ImageID: c.Image + "@sha256:" + digest(c.Image), Ready: true, Started: ptr.To(true),
			RestartCount: int32(i % 3), ContainerID: "containerd://" + digest(pod.Name+c.Name),
			State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: start}},
		})
	}
	return st
}
