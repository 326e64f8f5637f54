package ociimage

import (
	"archive/tar"
	"bytes"
	"debug/elf"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Machines are the architectures a multi-arch index may hold, with the ELF machine of their binaries.
var Machines = map[string]elf.Machine{
	"amd64": elf.EM_X86_64,
	"arm64": elf.EM_AARCH64,
}

// ParsePlatforms reads a comma-separated list of linux/ARCH platforms (as the release's -platforms flag takes it).
// flagName names the flag in the error, which is one line.
func ParsePlatforms(flagName, list string) ([]v1.Platform, error) {
	var out []v1.Platform
	seen := map[string]bool{}
	for _, p := range strings.Split(list, ",") {
		p = strings.TrimSpace(p)
		os, arch, ok := strings.Cut(p, "/")
		switch {
		case !ok || os != "linux":
			return nil, fmt.Errorf("-%s: %q is not linux/ARCH", flagName, p)
		case Machines[arch] == elf.EM_NONE:
			return nil, fmt.Errorf("-%s: unknown architecture %q in %q (want %s)", flagName, arch, p, strings.Join(archNames(), " or "))
		case seen[arch]:
			return nil, fmt.Errorf("-%s: %s given twice", flagName, p)
		}
		seen[arch] = true
		out = append(out, v1.Platform{OS: os, Architecture: arch})
	}
	return out, nil
}

func archNames() []string {
	var n []string
	for a := range Machines {
		n = append(n, a)
	}
	sort.Strings(n)
	return n
}

// BuildFor makes the image of spec for linux/arch, in OCI media types (for an OCI index).
func BuildFor(spec Spec, arch string) (v1.Image, error) {
	if Machines[arch] == elf.EM_NONE {
		return nil, fmt.Errorf("ociimage %s: unknown architecture %q (want %s)", spec.Ref, arch, strings.Join(archNames(), " or "))
	}
	return build(spec, arch, true)
}

// Platformed is one platform's image of an index.
type Platformed struct {
	Platform v1.Platform
	Image    v1.Image
}

// NewIndex is the OCI image index of the images, in the order given, each described by its media type, digest,
// size and platform only. (go-containerregistry's mutate.AppendManifests also writes an artifactType, which tools
// that do not know the field drop when they copy the index, changing its digest: skopeo 1.9 does.)
func NewIndex(images []Platformed) (v1.ImageIndex, error) {
	if len(images) == 0 {
		return nil, errors.New("ociimage: an index needs at least one image")
	}
	idx := &index{images: map[v1.Hash]v1.Image{}}
	idx.manifest = v1.IndexManifest{SchemaVersion: 2, MediaType: types.OCIImageIndex}
	for _, im := range images {
		mt, err := im.Image.MediaType()
		if err != nil {
			return nil, err
		}
		d, err := im.Image.Digest()
		if err != nil {
			return nil, err
		}
		size, err := im.Image.Size()
		if err != nil {
			return nil, err
		}
		p := im.Platform
		idx.manifest.Manifests = append(idx.manifest.Manifests, v1.Descriptor{MediaType: mt, Digest: d, Size: size, Platform: &p})
		idx.images[d] = im.Image
	}
	raw, err := json.Marshal(idx.manifest)
	if err != nil {
		return nil, err
	}
	idx.raw = raw
	return idx, nil
}

// index is an image index of images held in memory, serialized once.
type index struct {
	manifest v1.IndexManifest
	raw      []byte
	images   map[v1.Hash]v1.Image
}

func (i *index) MediaType() (types.MediaType, error) { return i.manifest.MediaType, nil }
func (i *index) Digest() (v1.Hash, error)            { return partial.Digest(i) }
func (i *index) Size() (int64, error)                { return partial.Size(i) }
func (i *index) IndexManifest() (*v1.IndexManifest, error) {
	return i.manifest.DeepCopy(), nil
}
func (i *index) RawManifest() ([]byte, error) { return i.raw, nil }
func (i *index) Image(h v1.Hash) (v1.Image, error) {
	if img, ok := i.images[h]; ok {
		return img, nil
	}
	return nil, fmt.Errorf("ociimage: the index holds no image %s", h)
}
func (i *index) ImageIndex(h v1.Hash) (v1.ImageIndex, error) {
	return nil, fmt.Errorf("ociimage: the index holds no index %s", h)
}

// RefNameAnnotation names an image in an OCI layout's index.json (skopeo's oci:DIR:NAME, ctr import's name).
const RefNameAnnotation = "org.opencontainers.image.ref.name"

// WriteLayout writes idx as an OCI image layout in dir (replacing whatever dir held), its index.json pointing at
// idx under the name refName, and returns idx's digest.
func WriteLayout(dir, refName string, idx v1.ImageIndex) (v1.Hash, error) {
	if err := os.RemoveAll(dir); err != nil {
		return v1.Hash{}, err
	}
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		return v1.Hash{}, fmt.Errorf("ociimage: layout %s: %w", dir, err)
	}
	if err := p.AppendIndex(idx, layout.WithAnnotations(map[string]string{RefNameAnnotation: refName})); err != nil {
		return v1.Hash{}, fmt.Errorf("ociimage: layout %s: %w", dir, err)
	}
	return idx.Digest()
}

// ReadLayout returns the image index an OCI layout written by WriteLayout names, and its name.
func ReadLayout(dir string) (v1.ImageIndex, string, error) {
	root, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		return nil, "", fmt.Errorf("ociimage: layout %s: %w", dir, err)
	}
	m, err := root.IndexManifest()
	if err != nil {
		return nil, "", fmt.Errorf("ociimage: layout %s: %w", dir, err)
	}
	if len(m.Manifests) != 1 || !m.Manifests[0].MediaType.IsIndex() {
		return nil, "", fmt.Errorf("ociimage: layout %s: index.json should name exactly one image index, has %d entries", dir, len(m.Manifests))
	}
	idx, err := root.ImageIndex(m.Manifests[0].Digest)
	if err != nil {
		return nil, "", fmt.Errorf("ociimage: layout %s: %w", dir, err)
	}
	return idx, m.Manifests[0].Annotations[RefNameAnnotation], nil
}

// IndexReport is what CheckIndex found: per platform ("linux/arm64"), the binaries it checked.
type IndexReport map[string][]string

// CheckIndex verifies that idx holds exactly the platforms want (in that order), that each manifest's config is of
// the platform its descriptor names, and that every binary in the image's layers (every regular file that is an
// ELF or executable) is an ELF of that platform's machine. An image with no binary at all fails too.
func CheckIndex(idx v1.ImageIndex, want []v1.Platform) (IndexReport, error) {
	m, err := idx.IndexManifest()
	if err != nil {
		return nil, err
	}
	var got, exp []string
	for _, d := range m.Manifests {
		if d.Platform == nil {
			got = append(got, "(no platform)")
			continue
		}
		got = append(got, d.Platform.OS+"/"+d.Platform.Architecture)
	}
	for _, p := range want {
		exp = append(exp, p.OS+"/"+p.Architecture)
	}
	if strings.Join(got, ",") != strings.Join(exp, ",") {
		return nil, fmt.Errorf("the index holds platforms [%s], want [%s]", strings.Join(got, " "), strings.Join(exp, " "))
	}
	report := IndexReport{}
	var errs []error
	for _, d := range m.Manifests {
		plat := d.Platform.OS + "/" + d.Platform.Architecture
		if d.ArtifactType != "" || len(d.Annotations) != 0 || len(d.URLs) != 0 || d.Data != nil {
			// Fields a copying tool may not know and drop, changing the index's digest (NewIndex writes none).
			errs = append(errs, fmt.Errorf("%s: the index's descriptor carries more than media type, digest, size and platform", plat))
		}
		img, err := idx.Image(d.Digest)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", plat, err)
		}
		cf, err := img.ConfigFile()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", plat, err)
		}
		if cf.OS != d.Platform.OS || cf.Architecture != d.Platform.Architecture {
			errs = append(errs, fmt.Errorf("%s: the image's config says %s/%s", plat, cf.OS, cf.Architecture))
		}
		machine, ok := Machines[d.Platform.Architecture]
		if !ok {
			errs = append(errs, fmt.Errorf("%s: unknown architecture", plat))
			continue
		}
		bins, err := checkBinaries(img, machine)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", plat, err))
		}
		if len(bins) == 0 && err == nil {
			errs = append(errs, fmt.Errorf("%s: the image holds no binary", plat))
		}
		report[plat] = bins
	}
	return report, errors.Join(errs...)
}

func checkBinaries(img v1.Image, machine elf.Machine) ([]string, error) {
	layers, err := img.Layers()
	if err != nil {
		return nil, err
	}
	var bins []string
	var errs []error
	for _, l := range layers {
		rc, err := l.Uncompressed()
		if err != nil {
			return nil, err
		}
		tr := tar.NewReader(rc)
		for {
			hdr, err := tr.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				rc.Close()
				return nil, err
			}
			if hdr.Typeflag != tar.TypeReg {
				continue
			}
			data, err := io.ReadAll(tr)
			if err != nil {
				rc.Close()
				return nil, err
			}
			isELF := bytes.HasPrefix(data, []byte(elf.ELFMAG))
			if !isELF && hdr.Mode&0o111 == 0 {
				continue
			}
			if !isELF {
				errs = append(errs, fmt.Errorf("/%s is executable but not an ELF binary", hdr.Name))
				continue
			}
			f, err := elf.NewFile(bytes.NewReader(data))
			if err != nil {
				errs = append(errs, fmt.Errorf("/%s: %w", hdr.Name, err))
				continue
			}
			if f.Machine != machine {
				errs = append(errs, fmt.Errorf("/%s is an ELF for %s, want %s", hdr.Name, f.Machine, machine))
			}
			bins = append(bins, "/"+hdr.Name)
		}
		rc.Close()
	}
	return bins, errors.Join(errs...)
}
