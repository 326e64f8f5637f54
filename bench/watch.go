//go:build bench

package bench

import (
	"context"
	"fmt"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	watchtools "k8s.io/client-go/tools/watch"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Watch follows every change of a kind from now on, surviving the API server closing the watch (a loaded API server
// does): it resumes from the last version seen, so no event is lost. The channel closes when ctx ends.
func (cp *ControlPlane) Watch(ctx context.Context, list client.ObjectList, opts ...client.ListOption) (<-chan watch.Event, error) {
	cfg := rest.CopyConfig(cp.Config)
	cfg.Timeout = 0 // a watch lasts
	wc, err := client.NewWithWatch(cfg, client.Options{Scheme: cp.Client.Scheme()})
	if err != nil {
		return nil, err
	}
	if err := wc.List(ctx, list, opts...); err != nil {
		return nil, err
	}
	rv := list.GetResourceVersion()
	lw := &toolscache.ListWatch{WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
		lo := &client.ListOptions{}
		lo.ApplyOptions(opts)
		lo.Raw = &o
		return wc.Watch(ctx, list.DeepCopyObject().(client.ObjectList), lo)
	}}
	rw, err := watchtools.NewRetryWatcherWithContext(ctx, rv, lw)
	if err != nil {
		return nil, fmt.Errorf("watching %T: %w", list, err)
	}
	out := make(chan watch.Event, 1024)
	go func() {
		defer close(out)
		defer rw.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case ev, ok := <-rw.ResultChan():
				if !ok {
					return
				}
				out <- ev
			}
		}
	}()
	return out, nil
}
