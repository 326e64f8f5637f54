//go:build bench

package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/cnimedic/cnimedic/test/repo"
)

// Noise creates unrelated Warning events through the API, as a busy cluster's kubelets post them: spread over
// many nodes and namespaces, with the reasons and messages of everyday trouble (probes, back-offs, mounts, image
// pulls). A fraction carries a reason the detection watches (FailedCreatePodSandBox, FailedKillPod) with a message
// that is not a CNI failure (the non-matching messages of the signature corpus): those reach the manager and go
// through the matcher, the rest never leave the API server.
type Noise struct {
	Kube kubernetes.Interface
	// Rate is the target, in events per second.
	Rate float64
	// Nodes are the kubelets the events come from.
	Nodes []string
	// Watched is the fraction of events with a watched reason (0..1).
	Watched float64
	// Workers is how many creates are in flight at most (default Workers).
	Workers int

	sent, failed atomic.Int64
	mu           sync.Mutex
	started      time.Time
	stopped      time.Time
}

type noiseMessage struct{ reason, message string }

var everyday = []noiseMessage{
	{"BackOff", "Back-off restarting failed container app in pod %[1]s_%[2]s(%[3]s)"},
	{"Unhealthy", `Readiness probe failed: Get "http://100.64.%[4]d.7:8080/readyz": dial tcp 100.64.%[4]d.7:8080: connect: connection refused`},
	{"Unhealthy", `Liveness probe failed: HTTP probe failed with statuscode: 503`},
	{"FailedMount", `MountVolume.SetUp failed for volume "config" : configmap "svc-%[4]d-config" not found`},
	{"Failed", `Failed to pull image "registry.example.com/shop/svc-%[4]d:1.4.2": rpc error: code = NotFound desc = failed to pull and unpack image "registry.example.com/shop/svc-%[4]d:1.4.2": failed to resolve reference "registry.example.com/shop/svc-%[4]d:1.4.2": registry.example.com/shop/svc-%[4]d:1.4.2: not found`},
	{"Failed", "Error: ImagePullBackOff"},
	{"DNSConfigForming", "Nameserver limits were exceeded, some nameservers have been omitted, the applied nameserver line is: 10.96.0.10 10.0.0.2 1.1.1.1"},
	{"FailedPreStopHook", `PreStopHook failed: command 'sh -c sleep 5 && nginx -s quit' exited with 137`},
	{"ProbeWarning", `Readiness probe warning: Probe terminated redirects`},
	{"Evicted", "The node was low on resource: ephemeral-storage. Threshold quantity: 10Gi, available: 9875412Ki."},
}

// watchedNoise are the corpus's real messages with a watched reason that are no CNI failure.
func watchedNoise() ([]noiseMessage, error) {
	f, err := os.Open(filepath.Join(repo.Root(), "internal", "signature", "testdata", "corpus.jsonl"))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []noiseMessage
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64*1024), 1024*1024)
	for sc.Scan() {
		var l struct{ Signature, Kind, Reason, Message string }
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			return nil, err
		}
		if l.Signature == "" && l.Kind == "" && (l.Reason == "FailedCreatePodSandBox" || l.Reason == "FailedKillPod") {
			out = append(out, noiseMessage{l.Reason, l.Message})
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no non-matching sandbox messages in the corpus")
	}
	return out, sc.Err()
}

// Run creates events until ctx ends. Tokens come at Rate; a token no worker is free to take is dropped, so the
// rate reached (Reached) is what the API server could absorb.
func (n *Noise) Run(ctx context.Context) error {
	watched, err := watchedNoise()
	if err != nil {
		return err
	}
	workers := n.Workers
	if workers == 0 {
		workers = Workers
	}
	tokens := make(chan struct{}, workers)
	var wg sync.WaitGroup
	var seq atomic.Int64
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), uint64(time.Now().UnixNano())))
			for {
				select {
				case <-ctx.Done():
					return
				case <-tokens:
				}
				i := int(seq.Add(1))
				node := n.Nodes[rng.IntN(len(n.Nodes))]
				ns := PodNamespace(i)
				pod := fmt.Sprintf("svc-%d-%s", i%97, digest(fmt.Sprint(i))[:5])
				var m noiseMessage
				if rng.Float64() < n.Watched {
					m = watched[rng.IntN(len(watched))]
				} else {
					m = everyday[rng.IntN(len(everyday))]
					m.message = fmt.Sprintf(m.message, ns, pod, digest(pod)[:8], i%250)
				}
				now := metav1.Now()
				ev := &corev1.Event{
					ObjectMeta:     metav1.ObjectMeta{Name: fmt.Sprintf("%s.%x", pod, time.Now().UnixNano()), Namespace: ns},
					InvolvedObject: corev1.ObjectReference{Kind: "Pod", Namespace: ns, Name: pod, APIVersion: "v1", FieldPath: "spec.containers{app}"},
					Reason:         m.reason, Message: m.message, Type: corev1.EventTypeWarning, Count: 1,
					Source:         corev1.EventSource{Component: "kubelet", Host: node},
					FirstTimestamp: now, LastTimestamp: now, ReportingController: "kubelet", ReportingInstance: node,
				}
				if _, err := n.Kube.CoreV1().Events(ns).Create(ctx, ev, metav1.CreateOptions{}); err != nil {
					if ctx.Err() == nil {
						n.failed.Add(1)
					}
					continue
				}
				n.sent.Add(1)
			}
		}()
	}
	n.mu.Lock()
	n.started = time.Now()
	n.mu.Unlock()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	credit := 0.0
	last := time.Now()
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case now := <-tick.C:
			credit += n.Rate * now.Sub(last).Seconds()
			last = now
			for ; credit >= 1; credit-- {
				select {
				case tokens <- struct{}{}:
				default: // every worker is busy: the API server is not keeping up
				}
			}
		}
	}
	wg.Wait()
	n.mu.Lock()
	n.stopped = time.Now()
	n.mu.Unlock()
	return nil
}

// Counter is a snapshot of what the noise created.
type Counter struct {
	At     time.Time
	Sent   int64
	Failed int64
}

// Count is what the noise created so far.
func (n *Noise) Count() Counter {
	return Counter{At: time.Now(), Sent: n.sent.Load(), Failed: n.failed.Load()}
}

// RateBetween is the rate reached between two snapshots, in events per second.
func RateBetween(a, b Counter) float64 {
	d := b.At.Sub(a.At).Seconds()
	if d <= 0 {
		return 0
	}
	return float64(b.Sent-a.Sent) / d
}
