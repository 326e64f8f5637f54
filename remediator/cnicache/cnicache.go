// Package cnicache reads libcni's cache of network results: one file per sandbox, network and interface under
// /var/lib/cni/results, written by the runtime after each ADD and read back before each CHECK and DEL. The cache
// outlives what it describes: a sandbox that vanished without a DEL leaves its file behind, and a file written under
// one CNI version blocks the sandbox's teardown once the network's configuration moves to a version the runtime's
// libcni cannot convert it to ("failed to get network "lab" cached result: failed to convert cached result to
// config version "1.1.0": no converter for CNI result version 1.0.0 to 1.1.0", measured on containerd 1.6.20).
package cnicache

import (
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"sort"

	"github.com/cnimedic/cnimedic/remediator/host"
)

// DefaultDir is where libcni keeps cached results (its default cache dir, /var/lib/cni, plus "results"); containerd
// and CRI-O use the default.
const DefaultDir = "/var/lib/cni/results"

// Entry is one cached result.
type Entry struct {
	// Path is the file's host path.
	Path        string `json:"path"`
	ContainerID string `json:"containerId"`
	Network     string `json:"networkName"`
	IfName      string `json:"ifName"`
	// ResultVersion is the CNI version of the cached result.
	ResultVersion string `json:"resultVersion"`
}

// file is the part of libcni's cache format (kind cniCacheV1) that says whose result it is and in which version.
type file struct {
	Kind        string `json:"kind"`
	ContainerID string `json:"containerId"`
	IfName      string `json:"ifName"`
	NetworkName string `json:"networkName"`
	Result      struct {
		CNIVersion string `json:"cniVersion"`
	} `json:"result"`
}

// Read lists the cached results in dir (a host path), by file name. Files that are not libcni's cniCacheV1 format
// are left out: what is not understood is never touched. A missing dir is an empty cache.
func Read(root host.Root, dir string) ([]Entry, error) {
	if dir == "" {
		dir = DefaultDir
	}
	ents, err := os.ReadDir(root.Path(dir))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []Entry
	for _, e := range ents {
		if !e.Type().IsRegular() {
			continue
		}
		hostPath := filepath.Join(dir, e.Name())
		data, err := host.ReadFile(root.Path(hostPath), host.MaxCNICacheEntry)
		if err != nil {
			continue
		}
		var f file
		if json.Unmarshal(data, &f) != nil || f.Kind != "cniCacheV1" || f.ContainerID == "" || f.NetworkName == "" {
			continue
		}
		out = append(out, Entry{Path: hostPath, ContainerID: f.ContainerID, Network: f.NetworkName, IfName: f.IfName, ResultVersion: f.Result.CNIVersion})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out, nil
}
