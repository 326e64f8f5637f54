// Package ociimage builds container images from local files, with no registry and no Docker engine, and writes
// them as docker-archive tarballs that `ctr -n k8s.io images import` accepts. The lab and the end-to-end suite use
// it for every image a node runs: the pause (sandbox) image, the workload and canary images, the executor and the
// manager, each made of a few static Go binaries in one layer.
//
// The images are reproducible: every entry of the layer has a fixed modification time and owner, entries are
// written in a fixed order, and the config carries no creation time, so the same inputs give the same image digest.
// That lets a caller skip rewriting (and a node skip re-importing) an image whose inputs did not change.
package ociimage

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// epoch is the modification time of every layer entry: a fixed time keeps digests reproducible. (The Unix epoch
// itself is avoided because some tar readers treat a zero mtime as "unset".)
var epoch = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)

// File is one regular file of the image's single layer. Exactly one of Data and Source is set.
type File struct {
	// Path is the absolute path inside the image.
	Path string
	// Data is the file's content, or Source a host file to read it from.
	Data   []byte
	Source string
	// Mode is the permission bits; 0644 when zero.
	Mode fs.FileMode
	// UID and GID own the file (root when zero).
	UID, GID int
}

// Spec describes an image.
type Spec struct {
	// Ref is the image's name and tag, e.g. cnimedic.local/pause:dev.
	Ref string
	// Files make up the image's only layer. Their parent directories are added (0755, root).
	Files []File
	// Dirs are extra empty directories, e.g. /tmp (mode 01777 for /tmp, 0755 for the others).
	Dirs []string
	// Entrypoint, Cmd, User, Env, WorkingDir and Labels go into the image config as their OCI namesakes.
	Entrypoint []string
	Cmd        []string
	User       string
	Env        []string
	WorkingDir string
	Labels     map[string]string
}

func (s *Spec) validate() error {
	var errs []error
	if _, err := name.ParseReference(s.Ref, name.StrictValidation); err != nil {
		errs = append(errs, fmt.Errorf("image reference %q: %w", s.Ref, err))
	}
	seen := map[string]bool{}
	for _, f := range s.Files {
		p := path.Clean(f.Path)
		if !path.IsAbs(f.Path) || p == "/" {
			errs = append(errs, fmt.Errorf("file %q: want an absolute path below /", f.Path))
		}
		if (f.Data == nil) == (f.Source == "") {
			errs = append(errs, fmt.Errorf("file %q: set exactly one of Data and Source", f.Path))
		}
		if seen[p] {
			errs = append(errs, fmt.Errorf("file %q appears twice", f.Path))
		}
		seen[p] = true
	}
	for _, d := range s.Dirs {
		if !path.IsAbs(d) || path.Clean(d) == "/" {
			errs = append(errs, fmt.Errorf("dir %q: want an absolute path below /", d))
		}
	}
	return errors.Join(errs...)
}

// Build makes the image: one layer with the spec's files, and a config for linux on this machine's architecture
// (the lab's nodes run on this machine's kernel), in Docker's media types (what the lab's archives have always had).
func Build(spec Spec) (v1.Image, error) {
	return build(spec, runtime.GOARCH, false)
}

func build(spec Spec, arch string, oci bool) (v1.Image, error) {
	if err := spec.validate(); err != nil {
		return nil, fmt.Errorf("ociimage %s: %w", spec.Ref, err)
	}
	layerTar, err := layerTar(spec)
	if err != nil {
		return nil, fmt.Errorf("ociimage %s: %w", spec.Ref, err)
	}
	// BestSpeed: the executor's layer is ~75 MB of binaries; the default level triples the build time for a few
	// percent of size that never leaves this machine.
	opts := []tarball.LayerOption{tarball.WithCompressionLevel(gzip.BestSpeed)}
	base := empty.Image
	if oci {
		opts = append(opts, tarball.WithMediaType(types.OCILayer))
		base = mutate.MediaType(mutate.ConfigMediaType(base, types.OCIConfigJSON), types.OCIManifestSchema1)
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	}, opts...)
	if err != nil {
		return nil, err
	}
	img, err := mutate.Append(base, mutate.Addendum{
		Layer:   layer,
		History: v1.History{CreatedBy: "cnimedic hack/ociimage", Created: v1.Time{Time: epoch}},
	})
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS = "linux"
	cf.Architecture = arch
	cf.Created = v1.Time{Time: epoch}
	cf.Config = v1.Config{
		Entrypoint: spec.Entrypoint,
		Cmd:        spec.Cmd,
		User:       spec.User,
		Env:        spec.Env,
		WorkingDir: spec.WorkingDir,
		Labels:     spec.Labels,
	}
	return mutate.ConfigFile(img, cf)
}

// layerTar is the uncompressed tar of the layer: directories first (sorted, parents before children), then the
// files, sorted by path.
func layerTar(spec Spec) ([]byte, error) {
	dirs := map[string]fs.FileMode{}
	addParents := func(p string) {
		for d := path.Dir(p); d != "/" && d != "."; d = path.Dir(d) {
			if _, ok := dirs[d]; !ok {
				dirs[d] = 0o755
			}
		}
	}
	for _, d := range spec.Dirs {
		d = path.Clean(d)
		mode := fs.FileMode(0o755)
		if d == "/tmp" {
			mode = 0o1777
		}
		dirs[d] = mode
		addParents(d)
	}
	files := append([]File(nil), spec.Files...)
	for _, f := range files {
		addParents(path.Clean(f.Path))
	}
	sort.Slice(files, func(i, j int) bool { return path.Clean(files[i].Path) < path.Clean(files[j].Path) })
	dirNames := make([]string, 0, len(dirs))
	for d := range dirs {
		dirNames = append(dirNames, d)
	}
	sort.Strings(dirNames) // a parent sorts before its children

	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, d := range dirNames {
		mode := dirs[d]
		hdr := &tar.Header{
			Typeflag: tar.TypeDir,
			Name:     strings.TrimPrefix(d, "/") + "/",
			Mode:     int64(mode.Perm()) | tarSticky(mode),
			ModTime:  epoch,
			Format:   tar.FormatPAX,
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, err
		}
	}
	for _, f := range files {
		data := f.Data
		if f.Source != "" {
			var err error
			if data, err = os.ReadFile(f.Source); err != nil {
				return nil, err
			}
		}
		mode := f.Mode.Perm()
		if mode == 0 {
			mode = 0o644
		}
		hdr := &tar.Header{
			Typeflag: tar.TypeReg,
			Name:     strings.TrimPrefix(path.Clean(f.Path), "/"),
			Mode:     int64(mode),
			Size:     int64(len(data)),
			Uid:      f.UID,
			Gid:      f.GID,
			ModTime:  epoch,
			Format:   tar.FormatPAX,
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, err
		}
		if _, err := tw.Write(data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func tarSticky(m fs.FileMode) int64 {
	if m&fs.ModeSticky != 0 || m&0o1000 != 0 {
		return 0o1000
	}
	return 0
}

// WriteArchive writes img as a docker-archive tarball (manifest.json with RepoTags, the format `docker save`
// writes and `ctr images import` reads) tagged ref. The file is written under a temporary name and renamed into
// place, so a node never imports half an archive.
func WriteArchive(file, ref string, img v1.Image) error {
	tag, err := name.NewTag(ref, name.StrictValidation)
	if err != nil {
		return fmt.Errorf("ociimage: tag %q: %w", ref, err)
	}
	if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(file), "."+filepath.Base(file)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // after a successful rename this removes nothing
	if err := tarball.Write(tag, img, tmp); err != nil {
		tmp.Close()
		return fmt.Errorf("ociimage: write %s: %w", file, err)
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), file)
}

// ArchiveDigest returns the digest of the image in a docker-archive written by WriteArchive (its only image), or
// an error when the file is missing or not such an archive.
func ArchiveDigest(file string) (v1.Hash, error) {
	img, err := tarball.ImageFromPath(file, nil)
	if err != nil {
		return v1.Hash{}, err
	}
	return img.Digest()
}

// IndexFile is the name of the index hack/images writes next to the archives it builds.
const IndexFile = "images.json"

// Index lists the archives of a directory of images, for the lab to import into its nodes.
type Index struct {
	Images []IndexEntry `json:"images"`
}

// IndexEntry is one image archive.
type IndexEntry struct {
	// Name is the short name (pause, canary, ...), Ref the full reference the archive is tagged with.
	Name string `json:"name"`
	Ref  string `json:"ref"`
	// File is the archive's file name, relative to the index.
	File string `json:"file"`
	// Digest is the image's manifest digest.
	Digest string `json:"digest"`
}
