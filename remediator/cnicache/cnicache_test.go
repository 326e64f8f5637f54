package cnicache

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/cnimedic/cnimedic/remediator/host"
)

// Only libcni's cniCacheV1 files are entries: what is not understood is never offered for removal.
func TestReadKeepsToWhatItUnderstands(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, DefaultDir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	files := map[string]string{
		"lab-abc-eth0":   `{"kind":"cniCacheV1","containerId":"abc","ifName":"eth0","networkName":"lab","result":{"cniVersion":"1.0.0"}}`,
		"old-format":     `{"cniVersion":"0.3.1","ips":[]}`,
		"not-json":       `garbage`,
		"no-container-x": `{"kind":"cniCacheV1","networkName":"lab","result":{"cniVersion":"1.0.0"}}`,
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	got, err := Read(host.Root(root), "")
	if err != nil {
		t.Fatal(err)
	}
	want := Entry{Path: DefaultDir + "/lab-abc-eth0", ContainerID: "abc", Network: "lab", IfName: "eth0", ResultVersion: "1.0.0"}
	if len(got) != 1 || got[0] != want {
		t.Fatalf("entries %+v, want only %+v", got, want)
	}
	if missing, err := Read(host.Root(t.TempDir()), ""); err != nil || len(missing) != 0 {
		t.Fatalf("a missing cache dir: %+v %v", missing, err)
	}
}
