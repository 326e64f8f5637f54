package remediation

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
)

// TestConcurrencyNeverExceedsMaxConcurrent tries to break the first safety rule: many remediations under two
// policies are approved in the same instant, executors finish at random moments, and the manager is restarted at
// random moments. A watch on the API server sees every state the remediations pass through, in order; in none of
// them may more nodes be held than the admitting policy's maxConcurrent allows.
//
// CNIMEDIC_RACE_RUNS sets how many randomized runs (default 3); each prints its seed so a failure can be replayed
// with CNIMEDIC_RACE_SEED.
func TestConcurrencyNeverExceedsMaxConcurrent(t *testing.T) {
	runs := 3
	if v, err := strconv.Atoi(os.Getenv("CNIMEDIC_RACE_RUNS")); err == nil && v > 0 {
		runs = v
	}
	for i := range runs {
		seed := uint64(time.Now().UnixNano()) + uint64(i)
		if v, err := strconv.ParseUint(os.Getenv("CNIMEDIC_RACE_SEED"), 10, 64); err == nil {
			seed = v
		}
		t.Run(fmt.Sprintf("seed-%d", seed), func(t *testing.T) { raceRun(t, i, seed) })
	}
}

func raceRun(t *testing.T, run int, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	h := newHarness(t, fmt.Sprintf("race%d", run))
	const perPool = 6
	limits := map[string]int{"a": 2, "b": 3}
	policyOf := map[string]string{}
	pols := map[string]*v1alpha1.RemediationPolicy{}
	for pool, limit := range limits {
		pols[pool] = h.policy("p"+pool, func(s *v1alpha1.RemediationPolicySpec) {
			s.NodeSelector = &metav1.LabelSelector{MatchLabels: map[string]string{"test": h.prefix, "pool": pool}}
			s.MaxConcurrent = ptr.To(intstr.FromInt32(int32(limit)))
			s.Verification.Canary = ptr.To(rng.IntN(2) == 0)
		})
	}
	var mu sync.Mutex
	delay := map[string]time.Duration{}
	h.runKubelet(kubelet{
		outcome: func(pod *corev1.Pod) *v1alpha1.ExecutorResult {
			mu.Lock()
			defer mu.Unlock()
			d, ok := delay[pod.Name]
			if !ok {
				d = time.Duration(rng.IntN(400)) * time.Millisecond
				delay[pod.Name] = d
			}
			if time.Since(pod.CreationTimestamp.Time) < d {
				return nil
			}
			if rng.IntN(6) == 0 {
				return &v1alpha1.ExecutorResult{Outcome: v1alpha1.OutcomeRolledBack, Message: "random failure"}
			}
			return succeeded(pod)
		},
	})

	// Watch every state change before anything is created.
	wc, err := client.NewWithWatch(env.Config, client.Options{Scheme: env.Client.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w, err := wc.Watch(ctx, &v1alpha1.NodeRemediationList{})
	if err != nil {
		t.Fatal(err)
	}
	violations := make(chan string, 100)
	watchDone := make(chan struct{})
	go func() {
		defer close(watchDone)
		held := map[string]bool{}
		for ev := range w.ResultChan() {
			nr, ok := ev.Object.(*v1alpha1.NodeRemediation)
			if !ok || len(nr.Name) < len(h.prefix) || nr.Name[:len(h.prefix)] != h.prefix {
				continue
			}
			was := held[nr.Name]
			held[nr.Name] = ev.Type != watch.Deleted && nr.Status.Phase.HoldsNode()
			if held[nr.Name] && !was {
				limit := limits[policyOf[nr.Spec.PolicyName]]
				if n := countTrue(held); n > limit {
					violations <- fmt.Sprintf("%s entered %s with %d nodes held; its policy allows %d", nr.Name, nr.Status.Phase, n, limit)
				}
			}
		}
	}()

	var names []string
	for pool := range limits {
		policyOf[pols[pool].Name] = pool
		for i := range perPool {
			h.node(fmt.Sprintf("%s%d", pool, i), func(n *corev1.Node) { n.Labels["pool"] = pool })
			names = append(names, h.name(fmt.Sprintf("nr-%s%d", pool, i)))
		}
	}
	// Create them all at once.
	var wg sync.WaitGroup
	for pool := range limits {
		for i := range perPool {
			wg.Add(1)
			go func() {
				defer wg.Done()
				h.remediation(fmt.Sprintf("nr-%s%d", pool, i), h.name(fmt.Sprintf("%s%d", pool, i)), pols[pool], v1alpha1.SignatureCNIVersionIncompatible)
			}()
		}
	}
	wg.Wait()

	// Restart the manager at random moments while they run.
	for range 1 + rng.IntN(3) {
		time.Sleep(time.Duration(200+rng.IntN(800)) * time.Millisecond)
		h.restart()
	}
	deadline := time.Now().Add(60 * time.Second)
	for _, name := range names {
		for {
			nr := h.get(name)
			if nr.Status.Phase.IsTerminal() {
				if nr.Status.Phase != v1alpha1.PhaseSucceeded && nr.Status.Phase != v1alpha1.PhaseRolledBack {
					t.Errorf("%s ended %s: %s", name, nr.Status.Phase, nr.Status.Message)
				}
				if n := len(h.executorPods(name)); n != 1 {
					t.Errorf("%s ran %d executor pods, want 1", name, n)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s still %s", name, nr.Status.Phase)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	cancel()
	<-watchDone
	close(violations)
	for v := range violations {
		t.Error(v)
	}
}

func countTrue(m map[string]bool) int {
	n := 0
	for _, v := range m {
		if v {
			n++
		}
	}
	return n
}
