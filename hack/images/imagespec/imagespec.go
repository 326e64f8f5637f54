// Package imagespec describes cnimedic's images (what each holds and runs), for the lab's single-architecture
// archives (hack/images) and the release's multi-arch indexes (hack/release) alike, so that both ship the same
// images.
package imagespec

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"

	"github.com/cnimedic/cnimedic/hack/ociimage"
	"github.com/cnimedic/cnimedic/remediator/plugins"
)

// Binary is a static Go program an image holds.
type Binary struct {
	Name string // file name in the build directory
	Pkg  string // Go package path, relative to the repository
}

// Binaries are the programs the images hold.
var Binaries = []Binary{
	{"pause", "./hack/images/pause"},
	{"labapp", "./hack/images/labapp"},
	{"remediator", "./cmd/remediator"},
	{"manager", "./cmd/manager"},
}

// NonRoot is the uid and gid of the images that run as a user (distroless' "nonroot").
const NonRoot = 65532

// Inputs are what the specs are made from.
type Inputs struct {
	// Ref names an image by its short name (pause, workload, canary, executor, manager).
	Ref func(name string) string
	// BinDir holds the Binaries, built for the images' architecture.
	BinDir string
	// Bundle is the executor's plugin bundle (BundleFiles).
	Bundle []ociimage.File
	// Title is the images' org.opencontainers.image.title label; "cnimedic lab image" when empty.
	Title string
}

// Names are the short names of every image, in the order Specs returns them.
var Names = []string{"pause", "workload", "canary", "executor", "manager"}

// Specs are the images. The executor records the remediator's sha256 in /opt/cnimedic/remediator.sha256 and in
// the label io.cnimedic.remediator.sha256.
func Specs(in Inputs) ([]ociimage.Spec, error) {
	bin := func(n string) string { return filepath.Join(in.BinDir, n) }
	remSum, err := fileSHA256(bin("remediator"))
	if err != nil {
		return nil, err
	}
	passwd := ociimage.File{Path: "/etc/passwd", Data: []byte("root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n")}
	group := ociimage.File{Path: "/etc/group", Data: []byte("root:x:0:\nnonroot:x:65532:\n")}
	title := in.Title
	if title == "" {
		title = "cnimedic lab image"
	}
	labels := func(extra map[string]string) map[string]string {
		l := map[string]string{"org.opencontainers.image.source": "github.com/cnimedic/cnimedic", "org.opencontainers.image.title": title}
		for k, v := range extra {
			l[k] = v
		}
		return l
	}
	executorFiles := append([]ociimage.File{
		{Path: "/remediator", Source: bin("remediator"), Mode: 0o755},
		{Path: "/opt/cnimedic/remediator.sha256", Data: []byte(remSum + "  remediator\n")},
		passwd, group,
	}, in.Bundle...)
	user := fmt.Sprintf("%d:%d", NonRoot, NonRoot)
	return []ociimage.Spec{
		{Ref: in.Ref("pause"), Files: []ociimage.File{{Path: "/pause", Source: bin("pause"), Mode: 0o755}}, Entrypoint: []string{"/pause"},
			User: "65535:65535", Labels: labels(nil)},
		{Ref: in.Ref("workload"), Files: []ociimage.File{{Path: "/labapp", Source: bin("labapp"), Mode: 0o755}, passwd, group},
			Entrypoint: []string{"/labapp"}, User: user, Labels: labels(nil)},
		{Ref: in.Ref("canary"), Files: []ociimage.File{{Path: "/labapp", Source: bin("labapp"), Mode: 0o755}, passwd, group},
			Entrypoint: []string{"/labapp"}, User: user, Labels: labels(nil)},
		// Root: the executor talks to systemd and writes the remediator's state dir on the node. The pod spec
		// (controllers/remediation) sets the user and capabilities explicitly; this is only the image's default.
		{Ref: in.Ref("executor"), Files: executorFiles, Entrypoint: []string{"/remediator"}, Dirs: []string{"/tmp"},
			Labels: labels(map[string]string{"io.cnimedic.remediator.sha256": remSum})},
		{Ref: in.Ref("manager"), Files: []ociimage.File{{Path: "/manager", Source: bin("manager"), Mode: 0o755}, passwd, group},
			Entrypoint: []string{"/manager"}, User: user, Dirs: []string{"/tmp"}, Labels: labels(nil)},
	}, nil
}

// BundleFiles are the bundle's plugins and manifest under /opt/cnimedic/cni-bundle, each checked against the
// bundle's SHA256SUMS before it goes into the image.
func BundleFiles(dir string) ([]ociimage.File, error) {
	b, err := plugins.LoadBundle(dir)
	if err != nil {
		return nil, fmt.Errorf("%w: run `make cni-plugins` (hack/build-cni-plugins.sh bundle)", err)
	}
	var files []ociimage.File
	for _, n := range b.Names() {
		data, err := b.Verified(n)
		if err != nil {
			return nil, fmt.Errorf("%w: rebuild it with `make cni-plugins`", err)
		}
		files = append(files, ociimage.File{Path: "/opt/cnimedic/cni-bundle/" + n, Data: data, Mode: 0o755})
	}
	manifest, err := os.ReadFile(filepath.Join(dir, plugins.ManifestName))
	if err != nil {
		return nil, err
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("the plugin bundle %s is empty", dir)
	}
	return append(files, ociimage.File{Path: "/opt/cnimedic/cni-bundle/" + plugins.ManifestName, Data: manifest}), nil
}

func fileSHA256(name string) (string, error) {
	data, err := os.ReadFile(name)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:]), nil
}
