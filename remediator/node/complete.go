package node

import (
	"fmt"
	"path/filepath"
	"slices"
	"strings"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
	"github.com/cnimedic/cnimedic/remediator/runtimecfg"
)

// Complete is the one read of the node per run: it detects the layout (Detect reads containerd's configuration
// once, drop-ins merged) and fills in what the flags left empty from it. A value the flags give is used as given;
// where it contradicts the node it is recorded in Contradictions and in the layout's Reason. s.Units are the
// units the flags name (UnitList; empty for the layout's).
func Complete(s Settings) Settings {
	d := Detect(s.Root)
	l := d.Layout
	var contra []string
	say := func(format string, a ...any) { contra = append(contra, fmt.Sprintf(format, a...)) }
	containerd := d.Runtime != nil

	rt := d.Runtime
	if s.ContainerdConfig != "" {
		if containerd && l.RuntimeConfig != "" && filepath.Clean(s.ContainerdConfig) != l.RuntimeConfig {
			say("--containerd-config is %s, but the node's %s layout runs containerd with %s", s.ContainerdConfig, l.Kind, l.RuntimeConfig)
		}
		if !containerd || filepath.Clean(s.ContainerdConfig) != l.RuntimeConfig {
			c := runtimecfg.Read(s.Root, s.ContainerdConfig)
			rt = &c
		}
	} else if containerd {
		s.ContainerdConfig = l.RuntimeConfig
	} else {
		s.ContainerdConfig = runtimecfg.DefaultPath
	}
	if rt == nil {
		c := runtimecfg.Read(s.Root, s.ContainerdConfig)
		rt = &c
	}
	s.Runtime = rt

	if s.CRIEndpoint == "" {
		s.CRIEndpoint = l.CRISocket
		if s.CRIEndpoint == "" {
			s.CRIEndpoint = KubeadmSocket
		}
	} else if l.CRISocket != "" && filepath.Clean(s.CRIEndpoint) != l.CRISocket && exists(s.Root, l.CRISocket) {
		say("--cri-socket is %s, but the node's %s layout's runtime listens on %s", s.CRIEndpoint, l.Kind, l.CRISocket)
	}

	// The CNI dirs: the flags', else the ones the runtime reads.
	conf, bins := l.ConfDir, l.BinDirs
	if containerd && rt != d.Runtime {
		conf, bins = rt.Settings.ConfDir, rt.Settings.BinDirs
	}
	if conf == "" {
		conf = rt.Settings.ConfDir
	}
	if len(bins) == 0 {
		bins = rt.Settings.BinDirs
	}
	if s.ConfDir == "" {
		s.ConfDir = conf
	} else if conf != "" && filepath.Clean(s.ConfDir) != conf {
		say("--conf-dir is %s, but the runtime reads its CNI configuration from %s", s.ConfDir, conf)
	}
	if len(s.BinDirs) == 0 {
		s.BinDirs = slices.Clone(bins)
	} else if len(bins) > 0 && !slices.Equal(cleanAll(s.BinDirs), bins) {
		say("--bin-dir is %s, but the runtime looks for CNI plugins in %s", strings.Join(s.BinDirs, ","), strings.Join(bins, ","))
	}

	// The units: the flags', else the layout's, else kubeadm's.
	flagUnits := s.Units
	s.UnitsContradict = false
	switch {
	case len(flagUnits) > 0:
		if len(l.Units) > 0 && !slices.Equal(flagUnits, l.Units) {
			say("the units given are %s, but on this node (%s) %s", strings.Join(flagUnits, ", "), l.Kind, unitWords(l))
			s.UnitsContradict = true
		}
	case len(l.Units) > 0:
		s.Units = slices.Clone(l.Units)
	default:
		s.Units = []string{KubeletUnit, RuntimeUnit}
	}

	s.Contradictions = contra
	for _, c := range contra {
		l.Reason = joinReason(l.Reason, c)
	}
	s.Layout = &l
	l.StandardConfDir, l.StandardBinDirs = s.StandardCNIDirs()
	return s
}

// UnitList is the units the flags name, kubelet's first, each once (k3s and RKE2 name one unit for both), with
// systemd's ".service" completed; empty names are left out.
func UnitList(kubelet, runtime string) []string {
	var out []string
	for _, u := range []string{kubelet, runtime} {
		if u == "" {
			continue
		}
		if filepath.Ext(u) == "" {
			u += ".service"
		}
		if !slices.Contains(out, u) {
			out = append(out, u)
		}
	}
	return out
}

func unitWords(l v1alpha1.NodeLayout) string {
	if len(l.Units) == 1 {
		return l.Units[0] + " runs both kubelet and the runtime"
	}
	return "kubelet and the runtime run as " + strings.Join(l.Units, " and ")
}

func cleanAll(ps []string) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = filepath.Clean(p)
	}
	return out
}
