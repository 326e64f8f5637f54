// Package cri is a small client of the container runtime over its socket: the CRI runtime service (is the network
// ready, which pod sandboxes exist and which network namespace each uses) and containerd's own version service.
// crictl is not available on our machines, and the executor needs only these few calls.
package cri

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// DefaultEndpoint is containerd's socket, which serves both CRI and containerd's API.
const DefaultEndpoint = "/run/containerd/containerd.sock"

// callTimeout bounds each call: a wedged runtime must not wedge the diagnosis.
const callTimeout = 10 * time.Second

// Client talks to one runtime socket.
type Client struct {
	conn *grpc.ClientConn
	rt   runtimeapi.RuntimeServiceClient
}

// Dial connects to the socket at a path in this process's view. gRPC connects lazily: errors of an absent
// runtime show up at the first call.
func Dial(socket string) (*Client, error) {
	abs, err := filepath.Abs(socket)
	if err != nil {
		return nil, err
	}
	conn, err := grpc.NewClient("unix://"+abs, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, fmt.Errorf("connecting to %s: %w", socket, err)
	}
	return &Client{conn: conn, rt: runtimeapi.NewRuntimeServiceClient(conn)}, nil
}

// Close closes the connection.
func (c *Client) Close() error { return c.conn.Close() }

// Status is the runtime's own view of its readiness.
type Status struct {
	RuntimeReady bool `json:"runtimeReady"`
	NetworkReady bool `json:"networkReady"`
	// NetworkReason and NetworkMessage explain a network that is not ready, such as NetworkPluginNotReady and
	// "Network plugin returns error: cni plugin not initialized".
	NetworkReason  string `json:"networkReason,omitempty"`
	NetworkMessage string `json:"networkMessage,omitempty"`
}

// Status asks the runtime for its conditions.
func (c *Client) Status(ctx context.Context) (Status, error) {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	resp, err := c.rt.Status(ctx, &runtimeapi.StatusRequest{})
	if err != nil {
		return Status{}, fmt.Errorf("CRI Status: %w", err)
	}
	var s Status
	for _, cond := range resp.GetStatus().GetConditions() {
		switch cond.GetType() {
		case runtimeapi.RuntimeReady:
			s.RuntimeReady = cond.GetStatus()
		case runtimeapi.NetworkReady:
			s.NetworkReady = cond.GetStatus()
			s.NetworkReason = cond.GetReason()
			s.NetworkMessage = cond.GetMessage()
		}
	}
	return s, nil
}

// Version is the runtime's name and version as CRI reports them.
func (c *Client) Version(ctx context.Context) (name, version string, err error) {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	resp, err := c.rt.Version(ctx, &runtimeapi.VersionRequest{})
	if err != nil {
		return "", "", fmt.Errorf("CRI Version: %w", err)
	}
	return resp.GetRuntimeName(), resp.GetRuntimeVersion(), nil
}

// Sandbox is one pod sandbox the runtime knows, in any state. A sandbox that is NotReady still owns its network
// (its teardown may have failed), so it counts as live for every reclaim decision.
type Sandbox struct {
	ID        string `json:"id"`
	Name      string `json:"name"`
	Namespace string `json:"namespace"`
	State     string `json:"state"`
	// NetNS is the host path of the sandbox's network namespace, when the runtime tells it.
	NetNS string `json:"netns,omitempty"`
}

// Sandboxes lists every pod sandbox with its network namespace.
func (c *Client) Sandboxes(ctx context.Context) ([]Sandbox, error) {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	resp, err := c.rt.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{})
	if err != nil {
		return nil, fmt.Errorf("CRI ListPodSandbox: %w", err)
	}
	out := make([]Sandbox, 0, len(resp.GetItems()))
	for _, it := range resp.GetItems() {
		sb := Sandbox{
			ID:        it.GetId(),
			Name:      it.GetMetadata().GetName(),
			Namespace: it.GetMetadata().GetNamespace(),
			State:     strings.TrimPrefix(it.GetState().String(), "SANDBOX_"),
		}
		st, err := c.rt.PodSandboxStatus(ctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: it.GetId(), Verbose: true})
		if err != nil {
			return nil, fmt.Errorf("CRI PodSandboxStatus %s: %w", it.GetId(), err)
		}
		sb.NetNS = netnsFromInfo(st.GetInfo())
		out = append(out, sb)
	}
	return out, nil
}

// netnsFromInfo digs the network namespace path out of containerd's verbose sandbox info. containerd 1.6/1.7 put
// it in "netNamespacePath"; 2.x in the sandbox metadata's NetNSPath; both also in the OCI spec's namespaces.
func netnsFromInfo(info map[string]string) string {
	raw, ok := info["info"]
	if !ok {
		return ""
	}
	var v struct {
		NetNamespacePath string `json:"netNamespacePath"`
		Metadata         struct {
			NetNSPath string `json:"NetNSPath"`
		} `json:"sandboxMetadata"`
		RuntimeSpec struct {
			Linux struct {
				Namespaces []struct {
					Type string `json:"type"`
					Path string `json:"path"`
				} `json:"namespaces"`
			} `json:"linux"`
		} `json:"runtimeSpec"`
	}
	if json.Unmarshal([]byte(raw), &v) != nil {
		return ""
	}
	if v.NetNamespacePath != "" {
		return v.NetNamespacePath
	}
	if v.Metadata.NetNSPath != "" {
		return v.Metadata.NetNSPath
	}
	for _, ns := range v.RuntimeSpec.Linux.Namespaces {
		if ns.Type == "network" && ns.Path != "" {
			return ns.Path
		}
	}
	return ""
}

// ContainerdVersion asks containerd's own client for its version, over the same connection: containerd serves
// both its API and CRI on one socket.
func (c *Client) ContainerdVersion(ctx context.Context) (version, revision string, err error) {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	ctr, err := containerd.NewWithConn(c.conn)
	if err != nil {
		return "", "", fmt.Errorf("containerd client: %w", err)
	}
	v, err := ctr.Version(ctx)
	if err != nil {
		return "", "", fmt.Errorf("containerd Version: %w", err)
	}
	return v.Version, v.Revision, nil
}
