package signature

import (
	"slices"
	"strings"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
)

// Event reasons under which kubelet reports sandbox network failures.
const (
	// ReasonFailedCreatePodSandBox: RunPodSandbox failed, including the teardown of the half-created sandbox.
	ReasonFailedCreatePodSandBox = "FailedCreatePodSandBox"
	// ReasonFailedKillPod: StopPodSandbox / KillPodSandbox failed, typically tearing the network down.
	ReasonFailedKillPod = "FailedKillPod"
	// ReasonFailedSync: older kubelets report sandbox errors as "Error syncing pod"; newer ones use it for
	// "error determining status".
	ReasonFailedSync = "FailedSync"
	// ReasonNetworkNotReady: kubelet refuses to start a pod while the runtime reports NetworkReady=false.
	ReasonNetworkNotReady = "NetworkNotReady"
)

// sandboxReasons are the reasons whose messages carry CNI setup and teardown errors.
var sandboxReasons = []string{ReasonFailedCreatePodSandBox, ReasonFailedKillPod, ReasonFailedSync}

// Seed runbooks and notes the signatures automate (in ../shared of the project workspace).
const (
	runbookK8sCNIErrors  = "seeds/000_877e60d477e25cbc.txt, seeds/001_1406949ca61c3746.txt (Kubernetes: Troubleshooting CNI plugin-related errors)"
	runbookCalicoInit    = "seeds/002_692d39a521320493.txt (Calico: CNI plugin not initialized, containerd CRI CNI settings)"
	runbookCNIHandbook   = "seeds/003_5b43b45e9d0cba60.txt (CNI network plugin troubleshooting handbook)"
	runbookFlannelNoIP   = "seeds/004_b95793f7ed0d8d5e.txt (Flannel: no IP addresses available, stale netns, restart kubelet)"
	runbookMeasuredNotes = "notes/real-cluster-here.md (messages measured on the lab)"
)

// Pattern is one regular expression of a signature. It is matched against the normalised message: quotes
// unescaped (\" and \\\" become ") and every run of whitespace folded into one space. Named groups become
// parameters.
type Pattern struct {
	// Regexp is a Go (RE2) regular expression.
	Regexp string
	// Implies sets parameters the text does not spell out but the pattern implies (a missing
	// /run/flannel/subnet.env implies pluginType=flannel). Extracted values win over implied ones.
	Implies map[string]string
}

// Extractor picks an optional parameter out of a message a pattern has matched: a value that helps the repair but
// whose absence must not prevent the match (a sandbox id, the plugin type). The value is the text that follows one
// of After, up to the first byte that Stop lists or, with Only, the first byte that Only does not list. Plain
// substring search keeps extraction far cheaper than running more regular expressions over a long message.
type Extractor struct {
	// Param is the parameter key.
	Param string
	// After are the literal texts the value follows (matched against the normalised message).
	After []string
	// Stop lists the bytes that end the value; the end of the message ends it too.
	Stop string
	// Only, when set, lists the only bytes the value may contain: it ends at the first other byte.
	Only string
	// MinLen drops shorter values (a sandbox id shortened to nothing useful).
	MinLen int
	// All collects every occurrence (comma-separated, first-seen order, no repeats) instead of the first, and
	// then replaces what the pattern captured.
	All bool
}

// Definition is one built-in failure signature.
type Definition struct {
	// ID is the signature's contract id.
	ID v1alpha1.SignatureID
	// Title says in a line what failed.
	Title string
	// Description explains the failure and why the action repairs it.
	Description string
	// Runbooks are the seed runbooks (and notes) whose manual repair the action automates.
	Runbooks []string
	// Reasons are the event reasons whose messages may carry this failure.
	Reasons []string
	// NodeCondition is set when the node's Ready condition message is evidence on its own.
	NodeCondition bool
	// Patterns are tried in order; any one of them matching is the signature. Each starts with literal text:
	// Go's regexp then finds candidate positions with a substring search instead of trying every offset.
	Patterns []Pattern
	// Extract run after a pattern matched, before the common extractors (plugin type, network, sandbox id), for
	// optional parameters the pattern does not capture.
	Extract []Extractor
	// Params lists the parameter keys the signature may carry.
	Params []string
	// Action is the default repair (the design's table).
	Action v1alpha1.RepairAction
	// Alternative, when set, is taken instead of Action when the policy allows it.
	Alternative v1alpha1.RepairAction
	// ActionNote says when the action differs from Action, for the reference documentation.
	ActionNote string
	// Family is set for a signature that names a kind of failure rather than its cause (cni-unclassified): its
	// action is Diagnose, and the node's diagnosis names the cause that is repaired, or escalated.
	Family bool

	// decide refines Action from the parameters; nil keeps Action.
	decide func(params map[string]string) v1alpha1.RepairAction
}

const hexDigits = "0123456789abcdef"

// commonExtractors run for every built-in match: who failed, in which network, for which sandbox.
var commonExtractors = []Extractor{
	{Param: v1alpha1.ParamPluginType, After: []string{`plugin type="`}, Stop: `"`},
	// containerd names the network after the type: plugin type="flannel" name="cbr0".
	{Param: v1alpha1.ParamNetwork, After: []string{`" name="`}, Stop: `"`},
	{Param: v1alpha1.ParamNetwork, After: []string{`to network "`, `to CNI network "`}, Stop: `"`},
	// Ids cut short by the source stay usable as a prefix; shorter than 12 they name nothing reliably.
	{Param: v1alpha1.ParamSandboxID, After: []string{`sandbox "`, `sandbox container "`}, Only: hexDigits, MinLen: 12},
}

// catalog holds the built-in signatures in precedence order: when a message shows several causes, the first
// definition that matches wins. The order puts the most specific cause first and the generic consequences last:
// a version error or an unparseable conflist explains a "cni plugin not initialized" next to it, a missing binary
// explains an uninitialized config, an agent that cannot reach the API server explains its own unavailability.
var catalog = []Definition{
	{
		ID:    v1alpha1.SignatureCNIVersionMissing,
		Title: "the network configuration declares no cniVersion",
		Description: "libcni refuses to tear a network down when its configuration has no cniVersion (containerd " +
			"1.6.0 to 1.6.3 carry libcni 1.0.x): pods start but never stop, and stay attached to their network " +
			"namespace. The repair adds the missing cniVersion to the conflist.",
		Runbooks: []string{runbookK8sCNIErrors, runbookMeasuredNotes},
		Reasons:  sandboxReasons,
		Patterns: []Pattern{
			{Regexp: `invalid version "": the version is empty`},
			// libcni's validation (kubelet 1.16+, podman) of a configuration without cniVersion.
			{Regexp: `does not support config version ""`},
			// kubelet's "Error validating CNI config" line dumps the config struct: {name cniVersion disableCheck
			// [plugins] [bytes]}. With the version empty, the name is followed directly by the boolean.
			{Regexp: `Error validating CNI config &\{\S+ (?:false|true) \[`},
		},
		Params: []string{v1alpha1.ParamSandboxID, v1alpha1.ParamPluginType, v1alpha1.ParamNetwork},
		Action: v1alpha1.ActionSetCNIVersion,
	},
	{
		ID:    v1alpha1.SignatureCNIVersionIncompatible,
		Title: "the conflist's cniVersion is newer than a plugin supports",
		Description: "A plugin of the chain answers the CNI VERSION command with a list that does not contain the " +
			"conflist's cniVersion (for example containerd 1.6 writes 1.0.0 while the node still has 0.x plugins). " +
			"The repair sets the conflist's cniVersion to the highest version every plugin supports, or upgrades " +
			"the reference plugins when the policy says so.",
		Runbooks: []string{runbookK8sCNIErrors, runbookMeasuredNotes},
		Reasons:  sandboxReasons,
		Patterns: []Pattern{
			// The tail is optional because sources truncate long messages.
			{Regexp: `incompatible CNI versions(?:; config is "(?P<configVersion>[^"]*)"(?:, plugin supports \[(?P<supportedVersions>[^\]]*)\]?)?)?`},
			// libcni's validation: "plugin bridge does not support config version "1.0.0"".
			{Regexp: `does not support config version "(?P<configVersion>[^"]+)"`},
		},
		Params: []string{v1alpha1.ParamConfigVersion, v1alpha1.ParamSupportedVersions, v1alpha1.ParamPluginType, v1alpha1.ParamNetwork, v1alpha1.ParamSandboxID},
		Action: v1alpha1.ActionSetCNIVersion,
	},
	{
		ID:    v1alpha1.SignatureConfigInvalid,
		Title: "a CNI configuration file does not parse",
		Description: "The runtime cannot load a file of its CNI configuration directory (truncated JSON, a conflist " +
			"without plugins, a plugin without type). The repair restores the file's last good backup or rewrites " +
			"it from the policy, never overwriting an unparseable file without keeping a copy.",
		Runbooks: []string{runbookCalicoInit, runbookK8sCNIErrors},
		Reasons:  sandboxReasons,
		Patterns: []Pattern{
			{Regexp: `error parsing configuration(?: list)?:`},
			{Regexp: `invalid cni config`},
		},
		Extract: []Extractor{
			{Param: v1alpha1.ParamConfigFile, After: []string{"CNI config file ", "CNI config list file "}, Stop: ` :"`},
		},
		Params: []string{v1alpha1.ParamConfigFile},
		Action: v1alpha1.ActionRestoreConfig,
	},
	{
		ID:    v1alpha1.SignaturePluginBinaryMissing,
		Title: "a plugin binary the configuration names is not in the plugin path",
		Description: "The runtime cannot find the executable of a plugin the conflist chains. A containernetworking " +
			"reference plugin (bridge, portmap, host-local...) is installed from the bundle the executor image " +
			"ships; a vendor plugin (flannel, calico, cilium...) is installed by its DaemonSet, so cnimedic " +
			"escalates with the DaemonSet's state instead of guessing a binary.",
		Runbooks: []string{runbookFlannelNoIP, runbookMeasuredNotes},
		Reasons:  sandboxReasons,
		Patterns: []Pattern{
			{Regexp: `failed to find plugin "(?P<plugin>[^"]*)"(?: in path \[(?P<path>[^\]]*))?`},
		},
		Extract: []Extractor{
			{Param: v1alpha1.ParamPlugin, After: []string{`failed to find plugin "`}, Stop: `"`, All: true},
		},
		Params:     []string{v1alpha1.ParamPlugin, v1alpha1.ParamPath, v1alpha1.ParamPluginType, v1alpha1.ParamNetwork, v1alpha1.ParamSandboxID},
		Action:     v1alpha1.ActionInstallReferencePlugins,
		ActionNote: "Escalate when a missing plugin is not a containernetworking reference plugin",
		decide: func(params map[string]string) v1alpha1.RepairAction {
			plugins := strings.Split(params[v1alpha1.ParamPlugin], ",")
			for _, p := range plugins {
				if !IsReferencePlugin(p) {
					return v1alpha1.ActionEscalate
				}
			}
			return v1alpha1.ActionInstallReferencePlugins
		},
	},
	{
		ID:    v1alpha1.SignatureAPIServerAccess,
		Title: "the CNI plugin cannot reach or authenticate to the API server",
		Description: "Calico's plugin reads ClusterInformation from the API server on every ADD and DEL, Multus reads " +
			"the pod; an expired or revoked token (Unauthorized) or an unreachable service address fails every " +
			"sandbox. Deleting the node's CNI agent pod makes its DaemonSet recreate it with a fresh token and " +
			"configuration; when the policy does not allow that, cnimedic escalates.",
		Runbooks: []string{runbookCNIHandbook},
		Reasons:  sandboxReasons,
		Patterns: []Pattern{
			{Regexp: `error getting ClusterInformation`, Implies: map[string]string{v1alpha1.ParamPluginType: "calico"}},
			{Regexp: `connection is unauthorized`, Implies: map[string]string{v1alpha1.ParamPluginType: "calico"}},
			{Regexp: `crd\.projectcalico\.org/v1/clusterinformations`, Implies: map[string]string{v1alpha1.ParamPluginType: "calico"}},
			// Newer Calico plugins report the refused token alone.
			{Regexp: `plugin type="calico"(?: name="[^"]*")? failed \((?:add|delete)\): Unauthorized`, Implies: map[string]string{v1alpha1.ParamPluginType: "calico"}},
			// Multus reads the pod with the token of the kubeconfig its DaemonSet pod wrote; Multus 3 never
			// refreshes it, so a bound service-account token that expired fails every sandbox.
			{Regexp: `Multus: \[[^\]]*\]: error getting pod: Unauthorized`, Implies: map[string]string{v1alpha1.ParamPluginType: "multus"}},
			{Regexp: `error waiting for pod: Unauthorized`, Implies: map[string]string{v1alpha1.ParamPluginType: "multus"}},
			// A plugin's own request to the API server, as the runtime wraps it ("... network: Get
			// https://[10.233.0.1]:443/api/v1/namespaces/default: dial tcp 10.233.0.1:443: i/o timeout"); an
			// agent's list of namespaces failing in its own log is not a sandbox and has no "network: " before it.
			{Regexp: `network: Get "?https://\S+/api/v1/namespaces/\S+ dial tcp `},
		},
		Extract: []Extractor{
			{Param: v1alpha1.ParamAddress, After: []string{"dial tcp "}, Only: "0123456789abcdefABCDEF.:[]", MinLen: 3},
		},
		Params: []string{v1alpha1.ParamPluginType, v1alpha1.ParamAddress, v1alpha1.ParamSandboxID},
		Action: v1alpha1.ActionRestartCNIAgentPod,
	},
	{
		ID:    v1alpha1.SignatureDaemonUnavailable,
		Title: "the node's CNI agent is not running or not ready",
		Description: "The plugin binary works but the vendor's node agent it depends on is absent: flannel has not " +
			"written /run/flannel/subnet.env, calico/node has not written /var/lib/calico/nodename, the cilium, " +
			"antrea, multus, weave, kube-ovn, openshift-sdn or aws-node agent does not answer on its socket; on " +
			"Windows nodes, the Host Networking Service (HNS) refuses the pod's endpoint or network, or the HNS " +
			"network the win-bridge or win-overlay plugin looks up does not exist. The cause lives in the DaemonSet " +
			"or the Windows host, not in the Linux node files cnimedic repairs, so cnimedic escalates with the " +
			"DaemonSet's state, or restarts the node's agent pod when the policy allows it.",
		Runbooks: []string{runbookCNIHandbook, runbookFlannelNoIP},
		Reasons:  sandboxReasons,
		Patterns: []Pattern{
			// The plugin cannot open the file flanneld writes; a mention of the file alone (flanneld's own log, a
			// question about it) is not a failing sandbox.
			{Regexp: `/run/flannel/subnet\.env: no such file`, Implies: map[string]string{v1alpha1.ParamPluginType: "flannel"}},
			{Regexp: `/var/lib/calico/nodename`, Implies: map[string]string{v1alpha1.ParamPluginType: "calico"}},
			{Regexp: `unable to connect to Cilium (?:daemon|agent)`, Implies: map[string]string{v1alpha1.ParamPluginType: "cilium-cni"}},
			// The plugin's own request to the agent (its readiness probe asks for /v1/healthz on the same socket,
			// and a failing probe is not a failing sandbox).
			{Regexp: `cilium\.sock/v1/config`, Implies: map[string]string{v1alpha1.ParamPluginType: "cilium-cni"}},
			{Regexp: `/var/run/antrea/cni\.sock`, Implies: map[string]string{v1alpha1.ParamPluginType: "antrea"}},
			{Regexp: `/run/multus/multus\.sock`, Implies: map[string]string{v1alpha1.ParamPluginType: "multus-shim"}},
			// weave-net's IPAM endpoint; the agent's readiness probe asks 127.0.0.1:6784/status.
			{Regexp: `127\.0\.0\.1:6784/ip/`, Implies: map[string]string{v1alpha1.ParamPluginType: "weave-net"}},
			{Regexp: `127\.0\.0\.1:50051`, Implies: map[string]string{v1alpha1.ParamPluginType: "aws-cni"}},
			{Regexp: `/run/openvswitch/kube-ovn-daemon\.sock`, Implies: map[string]string{v1alpha1.ParamPluginType: "kube-ovn"}},
			// openshift-sdn's node agent; its DaemonSet is not among those the detection knows, so no plugin type.
			{Regexp: `/var/run/openshift-sdn/cni-server\.sock`},
			// Windows: the Host Networking Service refuses the endpoint or network, or the network the win-bridge and
			// win-overlay plugins look up (flanneld creates it) does not exist; the plugins spell the call
			// GETHNSNewtorkByName. No Linux node repair applies.
			{Regexp: `hnsCall [Ff]ailed in Win32`},
			{Regexp: `HNS failed with error`},
			{Regexp: `failed to find HNSEndpoint`},
			{Regexp: `error while GETHNSNewtorkByName`},
		},
		Params:      []string{v1alpha1.ParamPluginType, v1alpha1.ParamNetwork, v1alpha1.ParamSandboxID},
		Action:      v1alpha1.ActionEscalate,
		Alternative: v1alpha1.ActionRestartCNIAgentPod,
	},
	{
		ID:    v1alpha1.SignatureIPAMExhausted,
		Title: "the IPAM has no address left for the pod",
		Description: "host-local keeps one lease file per address in /var/lib/cni/networks/<network>/; leases of " +
			"sandboxes that were never torn down (a runtime crash, a failed DEL) exhaust the node's range. The " +
			"repair frees the leases whose sandbox no longer exists, removes stale network namespaces and restarts " +
			"kubelet. A vendor IPAM (cilium, aws-cni, azure) that runs out is a pool or subnet problem, which " +
			"cnimedic escalates.",
		Runbooks: []string{runbookFlannelNoIP, runbookCNIHandbook, runbookMeasuredNotes},
		Reasons:  sandboxReasons,
		Patterns: []Pattern{
			{Regexp: `no IP addresses available in range set: (?P<range>[0-9a-fA-F.:/-]+)`, Implies: map[string]string{v1alpha1.ParamIPAM: "host-local"}},
			{Regexp: `no IP addresses available in network: (?P<network>[^\s",]+)`, Implies: map[string]string{v1alpha1.ParamIPAM: "host-local"}},
			{Regexp: `postIpamFailure range is full`, Implies: map[string]string{v1alpha1.ParamIPAM: "cilium"}},
			{Regexp: `failed to assign an IP address to container`, Implies: map[string]string{v1alpha1.ParamIPAM: "aws-cni"}},
			{Regexp: `Failed to allocate address: No available addresses`, Implies: map[string]string{v1alpha1.ParamIPAM: "azure-vnet-ipam"}},
			{Regexp: `not enough IPs available`, Implies: map[string]string{v1alpha1.ParamIPAM: "azure-cns"}},
		},
		Params:     []string{v1alpha1.ParamIPAM, v1alpha1.ParamRange, v1alpha1.ParamNetwork, v1alpha1.ParamPluginType, v1alpha1.ParamSandboxID},
		Action:     v1alpha1.ActionReclaimIPAM,
		ActionNote: "Escalate when the exhausted IPAM is not host-local",
		decide: func(params map[string]string) v1alpha1.RepairAction {
			if params[v1alpha1.ParamIPAM] == "host-local" {
				return v1alpha1.ActionReclaimIPAM
			}
			return v1alpha1.ActionEscalate
		},
	},
	{
		ID:    v1alpha1.SignatureStaleState,
		Title: "state left by an earlier network setup blocks the new one",
		Description: "A bridge keeps the address of an earlier pod CIDR, an interface or veth pair already exists, " +
			"a network namespace the runtime remembers is gone, a host-side veth or route of an earlier sandbox is " +
			"still there, or a cached CNI result cannot be read back after " +
			"the conflist changed. The repair removes the stale address, link, namespace or cached result and " +
			"restarts kubelet.",
		Runbooks: []string{runbookFlannelNoIP, runbookMeasuredNotes},
		Reasons:  sandboxReasons,
		Patterns: []Pattern{
			// The address is optional because sources cut the message short.
			{Regexp: `already has an IP address(?: different from (?P<address>[0-9a-fA-F.:]+/[0-9]+))?`},
			{Regexp: `failed to get network "(?P<network>[^"]+)" cached result`},
			{Regexp: `failed to Statfs "(?P<netns>[^"]+)": no such file or directory`},
			{Regexp: `container veth name provided \((?P<link>[^)]+)\) already exists`},
			{Regexp: `could not create veth pair (?P<link>[^\s:]+): file exists`},
			// A veth, route or bridge address left by an earlier sandbox collides with the new one.
			{Regexp: `failed to move veth to host netns`},
			{Regexp: `error adding host side routes for interface`},
			{Regexp: `could not add IP address to "(?P<bridge>[^"]+)": file exists`},
		},
		Extract: []Extractor{
			{Param: v1alpha1.ParamBridge, After: []string{`failed to set bridge addr: "`}, Stop: `"`},
			{Param: v1alpha1.ParamConfigVersion, After: []string{`to config version "`}, Stop: `"`},
			{Param: v1alpha1.ParamResultVersion, After: []string{"no converter for CNI result version "}, Only: "0123456789."},
		},
		Params: []string{v1alpha1.ParamBridge, v1alpha1.ParamAddress, v1alpha1.ParamNetwork, v1alpha1.ParamConfigVersion, v1alpha1.ParamResultVersion, v1alpha1.ParamNetns, v1alpha1.ParamLink, v1alpha1.ParamSandboxID},
		Action: v1alpha1.ActionCleanStaleNetwork,
	},
	{
		ID:    v1alpha1.SignatureCNINotInitialized,
		Title: "the runtime has no usable CNI configuration",
		Description: "The runtime found no network configuration it could load (empty or unreadable conf_dir, a " +
			"conf_template or bin_dir that points elsewhere, wrong file modes) and reports NetworkReady=false; " +
			"kubelet marks the node NotReady and no sandbox gets a network. The repair validates the conflists in " +
			"conf_dir, repairs containerd's CRI CNI settings and file modes, and restarts containerd.",
		Runbooks:      []string{runbookCalicoInit, runbookMeasuredNotes},
		Reasons:       append([]string{ReasonNetworkNotReady}, sandboxReasons...),
		NodeCondition: true,
		Patterns: []Pattern{
			{Regexp: `cni plugin not initialized`},
			{Regexp: `NetworkPluginNotReady`},
			// "unintialized" is how kubelet 1.5 spelled it.
			{Regexp: `cni config unini?tialized`},
			{Regexp: `network plugin is not ready`},
			// "No networks found in", "no valid networks found in".
			{Regexp: `networks found in`},
			{Regexp: `no network config found in`},
			// CRI-O: "No CNI configuration file in" (older) or "no CNI configuration file in".
			{Regexp: `No CNI configuration file in`},
			{Regexp: `no CNI configuration file in`},
			{Regexp: `no net configurations found in`},
			// ocicni (CRI-O, podman) before it learnt the "No CNI configuration file" wording.
			{Regexp: `Missing CNI default network`},
		},
		Extract: []Extractor{
			// The directory, whichever of the runtimes' wordings named it (the node condition often carries only
			// NetworkPluginNotReady plus the wording).
			{Param: v1alpha1.ParamConfDir, After: []string{"networks found in ", "network config found in ", "CNI configuration file in ", "net configurations found in "}, Stop: ` :,"`},
		},
		Params: []string{v1alpha1.ParamConfDir, v1alpha1.ParamPluginType, v1alpha1.ParamSandboxID},
		Action: v1alpha1.ActionRepairRuntimeCNIConfig,
	},
	{
		// Last: a family, not a cause. It names only what every signature above already left unnamed.
		ID:    v1alpha1.SignatureCNIUnclassified,
		Title: "a pod sandbox's network setup or teardown failed for a cause no other signature names",
		Description: "The runtime reports that a CNI plugin failed to set up or tear down a sandbox's network (or " +
			"the runtime's network is not ready) in words no other signature knows. The message does not carry " +
			"the cause, the node does: cnimedic runs the read-only diagnosis on the node, repairs the cause its " +
			"findings show (re-aiming the remediation at that signature), escalates with the findings when no node " +
			"repair fixes it, and ends without touching anything when the node shows nothing wrong.",
		Runbooks: []string{runbookCNIHandbook, runbookK8sCNIErrors},
		// Not NetworkNotReady: that event is kubelet refusing a pod while the runtime is not ready, and what the
		// runtime says of its readiness is cni-not-initialized's.
		Reasons:       sandboxReasons,
		NodeCondition: true,
		Patterns: []Pattern{
			// containerd (CRI plugin) adding and removing a sandbox's network.
			{Regexp: `failed to setup network for sandbox`},
			{Regexp: `failed to destroy network for sandbox`},
			// libcni names the plugin that failed, whatever the runtime.
			{Regexp: `plugin type="[^"]*"(?: name="[^"]*")? failed`},
			// dockershim (kubelet before 1.24): "NetworkPlugin cni failed to set up pod ... network",
			// "... failed to teardown pod ..."; some releases spell it networkPlugin.
			{Regexp: `NetworkPlugin cni failed`},
			{Regexp: `networkPlugin cni failed`},
			{Regexp: `failed to set up sandbox container "[^"]*" network`},
			{Regexp: `failed to clean up sandbox container "[^"]*" network`},
			// CRI-O and ocicni.
			{Regexp: `failed to create pod network sandbox`},
			{Regexp: `failed to destroy network for pod sandbox`},
			{Regexp: `error adding pod \S+ to CNI network`},
			{Regexp: `error removing pod \S+ from CNI network`},
			// kubelet's own CNI driver (dockershim era) logs each ADD and DEL: "Error adding network: ...",
			// "Error while adding to cni network: ...", "Error adding ns_pod/id to network type/name: ...", and
			// before 1.6 reported "Failed to setup network for pod ... using network plugins "cni": ...".
			{Regexp: `Error adding network:`},
			{Regexp: `Error deleting network:`},
			// ocicni (CRI-O) logs the same per network: "Error while adding pod to CNI network "crio": ...".
			{Regexp: `Error while (?:adding (?:pod )?to|removing (?:pod )?from) (?:cni|CNI) network`},
			{Regexp: `Error adding \S+ to network \S+: `},
			{Regexp: `Error deleting \S+ from network \S+: `},
			{Regexp: `using network plugins? "cni"`},
			// kubelet's validation of the conflist it would load; a missing cniVersion is cni-version-missing's,
			// any other reason follows the byte dump, which sources cut short.
			{Regexp: `Error validating CNI config`},
			// A configuration file the runtime could not load for a reason other than its JSON (which is
			// cni-config-invalid's): "no 'type'; perhaps this is a .conflist", a read error.
			{Regexp: `Error loading CNI config (?:list )?file`},
			// Multus and its delegates: "[ns/pod:net]: error adding container to network "x": ...",
			// "Multus: error adding pod to network "x": delegateAdd: error invoking DelegateAdd - "y": ...".
			{Regexp: `error adding (?:container|pod) to network "`},
			{Regexp: `error invoking (?:Delegate|Conflist)(?:Add|Del)`},
			{Regexp: `error in invoke Delegate (?:add|del)`},
			// A chained or delegate plugin that cannot read the result version the chain produces, and containerd
			// finding no address for eth0 in the result; the node's plugins and conflists tell which.
			{Regexp: `unsupported CNI result version`},
			// The reference meta plugins' (portmap, bandwidth, firewall, tuning) word for the same.
			{Regexp: `could not parse prevResult`},
			{Regexp: `failed to find network info for sandbox`},
			// The bridge plugin could not give its bridge the gateway address for a reason other than a stale one
			// (which is netns-or-stale-state's): "permission denied", an invalid argument.
			{Regexp: `failed to set bridge addr`},
			// host-local with no usable range; the node's IPAM configuration tells why.
			{Regexp: `no IP ranges specified`},
			// The runtime's own status, which kubelet copies into the node's Ready condition.
			{Regexp: `NetworkReady=false`},
		},
		Params: []string{v1alpha1.ParamPluginType, v1alpha1.ParamNetwork, v1alpha1.ParamSandboxID},
		Action: v1alpha1.ActionDiagnose,
		Family: true,
	},
}

// FamilyOutcome says what becomes of a failure that only a family signature names.
const FamilyOutcome = "diagnosed on the node; repaired through the cause the node shows, or escalated with the findings"

// Definitions returns the built-in signatures in precedence order. The result is a copy.
func Definitions() []Definition {
	return append([]Definition(nil), catalog...)
}

// ActionFor is the signature's action for what its evidence carried: Action refined by the parameters (a vendor
// plugin escalates), or Alternative when the policy's allowed actions include it.
func (d Definition) ActionFor(params map[string]string, allowed []v1alpha1.RepairAction) v1alpha1.RepairAction {
	if d.Alternative != "" && slices.Contains(allowed, d.Alternative) {
		return d.Alternative
	}
	if d.decide != nil {
		return d.decide(params)
	}
	return d.Action
}

// Lookup returns the built-in signature with the given id.
func Lookup(id v1alpha1.SignatureID) (Definition, bool) {
	for _, d := range catalog {
		if d.ID == id {
			return d, true
		}
	}
	return Definition{}, false
}

// DefaultAllowedActions is what a RemediationPolicy allows when spec.allowedActions is left to its default (the
// kubebuilder default on the field; a test keeps the two in step). Everything but RestartCNIAgentPod.
var DefaultAllowedActions = []v1alpha1.RepairAction{
	v1alpha1.ActionSetCNIVersion,
	v1alpha1.ActionInstallReferencePlugins,
	v1alpha1.ActionRepairRuntimeCNIConfig,
	v1alpha1.ActionRestoreConfig,
	v1alpha1.ActionReclaimIPAM,
	v1alpha1.ActionCleanStaleNetwork,
	v1alpha1.ActionEscalate,
	v1alpha1.ActionDiagnose,
}

// AllActions lists every repair action the API knows.
var AllActions = []v1alpha1.RepairAction{
	v1alpha1.ActionSetCNIVersion,
	v1alpha1.ActionInstallReferencePlugins,
	v1alpha1.ActionRepairRuntimeCNIConfig,
	v1alpha1.ActionRestoreConfig,
	v1alpha1.ActionReclaimIPAM,
	v1alpha1.ActionCleanStaleNetwork,
	v1alpha1.ActionRestartCNIAgentPod,
	v1alpha1.ActionEscalate,
	v1alpha1.ActionDiagnose,
}

// IsValidAction reports whether a is one of the API's repair actions.
func IsValidAction(a v1alpha1.RepairAction) bool {
	for _, known := range AllActions {
		if a == known {
			return true
		}
	}
	return false
}
