package nodetest

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/cnimedic/cnimedic/test/repo"
)

// PauseImage is the sandbox image the test containerd uses; ImportPause builds it from a static Go binary
// (no registry is reachable here).
const PauseImage = "cnimedic.local/pause:test"

// Containerd is Debian's real containerd running as a plain process with its own root, state, socket and CNI
// dirs, inside a network namespace of the test's own (so the bridge its CNI plugins create never lands on the
// machine), with its named network namespaces under its state dir.
type Containerd struct {
	Dir     string
	Socket  string
	ConfDir string
	BinDir  string
	// NetnsDir is where it mounts pod network namespaces (netns_mounts_under_state_dir).
	NetnsDir string
	HostNS   string
	cmd      *exec.Cmd
	log      *os.File
}

// StartContainerd starts containerd in the network namespace hostNS. confDir and binDir are its CNI dirs.
// It fails the test, naming the install command, when containerd or runc is missing.
func StartContainerd(t testing.TB, dir, hostNS, confDir, binDir string) *Containerd {
	t.Helper()
	RequireRoot(t)
	for _, b := range []string{"containerd", "containerd-shim-runc-v2", "runc", "ctr"} {
		if _, err := exec.LookPath(b); err != nil {
			t.Fatalf("%s is not installed; run: hack/build-cni-plugins.sh debian", b)
		}
	}
	c := &Containerd{Dir: dir, Socket: filepath.Join(dir, "c.sock"), ConfDir: confDir, BinDir: binDir, HostNS: hostNS}
	c.NetnsDir = filepath.Join(dir, "state", "io.containerd.grpc.v1.cri", "netns")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	// restrict_oom_score_adj: the VM lacks CAP_SYS_RESOURCE (see the lab notes); native snapshotter: no overlay on
	// whatever filesystem the repository sits on.
	cfg := fmt.Sprintf(`version = 2
root = %q
state = %q
[grpc]
  address = %q
[ttrpc]
  address = %q
[plugins."io.containerd.grpc.v1.cri"]
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  sandbox_image = %q
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = %q
    conf_dir = %q
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "native"
`, filepath.Join(dir, "root"), filepath.Join(dir, "state"), c.Socket, c.Socket+".ttrpc", PauseImage, binDir, confDir)
	if err := os.WriteFile(filepath.Join(dir, "config.toml"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	log, err := os.Create(filepath.Join(dir, "containerd.log"))
	if err != nil {
		t.Fatal(err)
	}
	c.log = log
	c.cmd = exec.Command("containerd", "--config", filepath.Join(dir, "config.toml"))
	c.cmd.Stdout, c.cmd.Stderr = log, log
	// Its own process group, so that shims it starts can be told apart from the test's other processes.
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	start := func() error { return c.cmd.Start() }
	if hostNS != "" {
		err = InNetns(t, hostNS, start)
	} else {
		err = start()
	}
	if err != nil {
		t.Fatalf("starting containerd: %v", err)
	}
	t.Cleanup(func() { c.stop(t) })
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, err := os.Stat(c.Socket); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("containerd did not serve %s within 20s; see %s", c.Socket, log.Name())
		}
		time.Sleep(50 * time.Millisecond)
	}
	return c
}

// CRI returns a runtime service client on the socket.
func (c *Containerd) CRI(t testing.TB) runtimeapi.RuntimeServiceClient {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+c.Socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return runtimeapi.NewRuntimeServiceClient(conn)
}

// stop removes every sandbox (which stops their shims), then stops containerd and waits for it.
func (c *Containerd) stop(t testing.TB) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := grpc.NewClient("unix://"+c.Socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err == nil {
		rt := runtimeapi.NewRuntimeServiceClient(conn)
		if list, err := rt.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{}); err == nil {
			for _, sb := range list.GetItems() {
				_, _ = rt.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: sb.GetId()})
				if _, err := rt.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: sb.GetId()}); err != nil {
					t.Logf("removing sandbox %s: %v", sb.GetId(), err)
				}
			}
		}
		_ = conn.Close()
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = c.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		_ = c.cmd.Process.Kill()
		<-done
	}
	_ = c.log.Close()
	// Mounts containerd may leave under its dirs (namespaces, rootfs) go before the directory is removed.
	unmountUnder(c.Dir)
}

// unmountUnder lazily unmounts every mount point below dir, deepest first.
func unmountUnder(dir string) {
	raw, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return
	}
	var points []string
	for _, line := range strings.Split(string(raw), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && strings.HasPrefix(f[4], dir+"/") {
			points = append(points, f[4])
		}
	}
	for i := len(points) - 1; i >= 0; i-- {
		_ = syscall.Unmount(points[i], syscall.MNT_DETACH)
	}
}

// ImportPause builds a static pause binary (a program that waits for SIGTERM), packs it as a one-layer OCI
// image and imports it with ctr into the k8s.io namespace, unpacked for the native snapshotter.
func (c *Containerd) ImportPause(t testing.TB) {
	t.Helper()
	bin := filepath.Join(repo.Root(), "bin", "test-pause")
	build := exec.Command("go", "build", "-o", bin, "./test/nodetest/pause")
	build.Dir = repo.Root()
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building the pause binary: %v\n%s", err, out)
	}
	pause, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	archive := filepath.Join(c.Dir, "pause.tar")
	if err := os.WriteFile(archive, ociArchive(t, pause), 0o644); err != nil {
		t.Fatal(err)
	}
	imp := exec.Command("ctr", "--address", c.Socket, "--namespace", "k8s.io", "images", "import", "--snapshotter", "native", archive)
	if out, err := imp.CombinedOutput(); err != nil {
		t.Fatalf("ctr images import: %v\n%s", err, out)
	}
}

// ociArchive is an OCI image layout tar holding one image, PauseImage, whose only layer is /pause.
func ociArchive(t testing.TB, pause []byte) []byte {
	t.Helper()
	var layer bytes.Buffer
	tw := tar.NewWriter(&layer)
	if err := tw.WriteHeader(&tar.Header{Name: "pause", Mode: 0o755, Size: int64(len(pause)), Typeflag: tar.TypeReg}); err != nil {
		t.Fatal(err)
	}
	if _, err := tw.Write(pause); err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	blobs := map[string][]byte{}
	put := func(b []byte) (string, int) {
		sum := sha256.Sum256(b)
		d := "sha256:" + hex.EncodeToString(sum[:])
		blobs[d] = b
		return d, len(b)
	}
	mustJSON := func(v any) []byte {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	layerDigest, layerSize := put(layer.Bytes())
	configDigest, configSize := put(mustJSON(map[string]any{
		"architecture": "amd64", "os": "linux",
		"config": map[string]any{"Entrypoint": []string{"/pause"}},
		"rootfs": map[string]any{"type": "layers", "diff_ids": []string{layerDigest}},
	}))
	manifestDigest, manifestSize := put(mustJSON(map[string]any{
		"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
		"config": map[string]any{"mediaType": "application/vnd.oci.image.config.v1+json", "digest": configDigest, "size": configSize},
		"layers": []any{map[string]any{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layerDigest, "size": layerSize}},
	}))
	index := mustJSON(map[string]any{
		"schemaVersion": 2,
		"manifests": []any{map[string]any{
			"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifestDigest, "size": manifestSize,
			"platform":    map[string]string{"architecture": "amd64", "os": "linux"},
			"annotations": map[string]string{"io.containerd.image.name": PauseImage, "org.opencontainers.image.ref.name": "test"},
		}},
	})
	var out bytes.Buffer
	ow := tar.NewWriter(&out)
	add := func(name string, b []byte) {
		if err := ow.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(b)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		if _, err := ow.Write(b); err != nil {
			t.Fatal(err)
		}
	}
	add("oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`))
	add("index.json", index)
	for d, b := range blobs {
		add("blobs/sha256/"+strings.TrimPrefix(d, "sha256:"), b)
	}
	if err := ow.Close(); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

// RunSandbox runs a pod sandbox through CRI and returns its id.
func (c *Containerd) RunSandbox(t testing.TB, rt runtimeapi.RuntimeServiceClient, name string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	resp, err := rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: &runtimeapi.PodSandboxConfig{
		Metadata:     &runtimeapi.PodSandboxMetadata{Name: name, Namespace: "default", Uid: name + "-uid"},
		LogDirectory: filepath.Join(c.Dir, "logs", name),
		Linux:        &runtimeapi.LinuxPodSandboxConfig{},
	}})
	if err != nil {
		t.Fatalf("RunPodSandbox %s: %v (containerd log: %s)", name, err, filepath.Join(c.Dir, "containerd.log"))
	}
	return resp.GetPodSandboxId()
}
