// Package hostrun runs a plan on the host side, outside the executor pod, so that the stop → repair → start
// sequence survives the pod's own death and the kubelet and containerd restarts it causes.
//
// The executor pod (Launcher.Apply):
//  1. places a sha256-verified copy of its own remediator binary on the host (/var/lib/cnimedic/bin), and the
//     plugin bundle next to it when the plan may install plugins;
//  2. writes the plan and the run's settings into the remediation's journal directory;
//  3. arms a guard: a transient timer that, if everything else has died, runs the recovery and, through Wants=,
//     starts containerd and kubelet even if the binary cannot run at all;
//  4. starts the run as a transient service over the host's D-Bus ("remediator host-run"), whose ExecStopPost
//     ("remediator host-recover") rolls back and starts the units whenever the run ends without a result
//     (SIGKILL, OOM, RuntimeMaxSec);
//  5. follows the unit and the journal until the result is there.
//
// A second executor pod with the same remediation id follows the run that is still going, or reports the stored
// result: it never starts a second run.
package hostrun

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/cnimedic/cnimedic/remediator/host"
	"github.com/cnimedic/cnimedic/remediator/plugins"
)

// DefaultStateDir is the host directory the remediator keeps its state in: bin/ (staged binaries), bundle/
// (staged plugin bundles) and journal/ (one directory per remediation).
const DefaultStateDir = "/var/lib/cnimedic"

// JournalBase is the journal directory under a state dir.
func JournalBase(stateDir string) string { return filepath.Join(stateDir, "journal") }

// StageBinary copies the executable at local path src to <stateDir>/bin/remediator-<sha256 prefix> on the host
// and checks that the copy on the host has the same sha256 as the source (and as want, when given). It returns the
// host path of the copy. An existing copy with the right sum is reused; one with a wrong sum is replaced.
func StageBinary(root host.Root, stateDir, src, want string) (string, error) {
	data, err := os.ReadFile(src)
	if err != nil {
		return "", fmt.Errorf("read the remediator binary: %w", err)
	}
	sum := sha256.Sum256(data)
	have := hex.EncodeToString(sum[:])
	if want != "" && want != have {
		return "", fmt.Errorf("the remediator binary %s has sha256 %s, expected %s", src, have, want)
	}
	hostPath := filepath.Join(stateDir, "bin", "remediator-"+have[:16])
	local := root.Path(hostPath)
	if err := os.MkdirAll(filepath.Dir(local), 0o755); err != nil {
		return "", err
	}
	if ok, err := fileHasSum(local, have); err != nil {
		return "", err
	} else if !ok {
		if err := host.WriteAtomic(local, bytes.NewReader(data), host.WriteOptions{Mode: 0o755, Owner: &host.Owner{}}); err != nil {
			return "", fmt.Errorf("stage the remediator binary: %w", err)
		}
		ok, err := fileHasSum(local, have)
		if err != nil {
			return "", err
		}
		if !ok {
			return "", fmt.Errorf("the staged binary %s does not have sha256 %s", hostPath, have)
		}
	}
	return hostPath, nil
}

func fileHasSum(name, want string) (bool, error) {
	f, err := os.Open(name)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	defer func() { _ = f.Close() }()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return false, err
	}
	return hex.EncodeToString(h.Sum(nil)) == want, nil
}

// StageBundle copies a plugin bundle (its SHA256SUMS manifest and every file it lists) from the local directory
// src to <stateDir>/bundle/<manifest sha256 prefix>/ on the host, checking each file against the manifest, and
// returns the host directory. The manifest is written last: a staged bundle with its manifest is complete.
func StageBundle(root host.Root, stateDir, src string) (string, error) {
	b, err := plugins.LoadBundle(src)
	if err != nil {
		return "", err
	}
	manifest, err := os.ReadFile(filepath.Join(src, plugins.ManifestName))
	if err != nil {
		return "", err
	}
	msum := sha256.Sum256(manifest)
	hostDir := filepath.Join(stateDir, "bundle", hex.EncodeToString(msum[:])[:16])
	localDir := root.Path(hostDir)
	if old, err := os.ReadFile(filepath.Join(localDir, plugins.ManifestName)); err == nil && bytes.Equal(old, manifest) {
		// Complete already; every file is checked again against the manifest when it is installed.
		return hostDir, nil
	}
	if err := os.MkdirAll(localDir, 0o755); err != nil {
		return "", err
	}
	for name, want := range b.Sums {
		data, err := os.ReadFile(filepath.Join(src, name))
		if err != nil {
			return "", fmt.Errorf("bundle: %w", err)
		}
		got := sha256.Sum256(data)
		if hex.EncodeToString(got[:]) != want {
			return "", fmt.Errorf("bundle: %s does not match its manifest", name)
		}
		if err := host.WriteAtomic(filepath.Join(localDir, name), bytes.NewReader(data), host.WriteOptions{Mode: 0o755}); err != nil {
			return "", err
		}
	}
	if err := host.WriteFileAtomic(filepath.Join(localDir, plugins.ManifestName), manifest, 0o644); err != nil {
		return "", err
	}
	return hostDir, nil
}
