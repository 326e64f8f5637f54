package signature

import (
	"errors"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
)

// escape quotes the message once more, the way each layer (runtime error, kubelet's KillPodSandboxError, a
// JSON log line) does.
func escape(s string) string {
	return strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s)
}

func TestMatchIgnoresQuoteEscapingAndLineBreaks(t *testing.T) {
	base := `failed to setup network for sandbox "5ed545ae2a2539ff8124a18c7454c83cba7ea3ff6a185cbe3cbeae70f204cd05": ` +
		`plugin type="bridge" name="lab" failed (add): incompatible CNI versions; config is "1.1.0", plugin supports ["0.1.0" "0.2.0" "0.3.0" "0.3.1" "0.4.0" "1.0.0"]`
	want := map[string]string{
		v1alpha1.ParamConfigVersion:     "1.1.0",
		v1alpha1.ParamSupportedVersions: "0.1.0,0.2.0,0.3.0,0.3.1,0.4.0,1.0.0",
		v1alpha1.ParamPluginType:        "bridge",
		v1alpha1.ParamNetwork:           "lab",
		v1alpha1.ParamSandboxID:         "5ed545ae2a2539ff8124a18c7454c83cba7ea3ff6a185cbe3cbeae70f204cd05",
	}
	variants := map[string]string{
		"plain":         base,
		"escaped once":  `error="` + escape(base) + `"`,
		"escaped twice": `err="failed to \"KillPodSandbox\" with KillPodSandboxError: \"` + escape(escape(base)) + `\""`,
		"rpc wrapper":   "Failed to create pod sandbox: rpc error: code = Unknown desc = " + base,
		"wrapped lines": strings.Replace(strings.Replace(base, "CNI versions", "CNI\n      versions", 1), `": plugin`, "\":\r\n\tplugin", 1),
		"doubly spaced": strings.ReplaceAll(base, " ", "  "),
	}
	for name, msg := range variants {
		got, ok := Default().Match(ReasonFailedCreatePodSandBox, msg)
		if !ok || got.Signature != string(v1alpha1.SignatureCNIVersionIncompatible) {
			t.Errorf("%s: got %v %q, want cni-version-incompatible", name, ok, got.Signature)
			continue
		}
		if !maps.Equal(got.Params, want) {
			t.Errorf("%s: params %v, want %v", name, got.Params, want)
		}
	}
}

// Precedence decides what a message with several causes is: the cause the repair must address, not the
// consequence next to it. Each case is a message a runtime really composes (see the corpus for the sourced ones).
func TestMatchPrecedenceMostSpecificCauseWins(t *testing.T) {
	cases := []struct {
		name, reason, message string
		want                  v1alpha1.SignatureID
	}{
		{
			name:    "kill-pod wrapper around cni plugin not initialized",
			reason:  ReasonFailedKillPod,
			message: `error killing pod: failed to "KillPodSandbox" for "e702d8c8" with KillPodSandboxError: "rpc error: code = Unknown desc = failed to destroy network for sandbox \"c4848ed881a241dd2f8e1be6145ce5b3c8ea9fae224f28d257b2b1b60987504d\": cni plugin not initialized"`,
			want:    v1alpha1.SignatureCNINotInitialized,
		},
		{
			name:    "missing binary and the uninitialized config it causes",
			message: `[failed to find plugin "flannel" in path [/opt/cni/bin]] ... network plugin is not ready: cni config uninitialized`,
			want:    v1alpha1.SignaturePluginBinaryMissing,
		},
		{
			name:    "unparseable conflist and the not-initialized it causes",
			message: `cni config load failed: failed to load CNI config list file /etc/cni/net.d/10-flannel.conflist: error parsing configuration list: unexpected end of JSON input: invalid cni config: failed to load cni config: cni plugin not initialized`,
			want:    v1alpha1.SignatureConfigInvalid,
		},
		{
			name:    "version error on setup, stale link on the cleanup that followed",
			reason:  ReasonFailedCreatePodSandBox,
			message: `[failed to set up sandbox container "45dbad7a" network for pod "p": NetworkPlugin cni failed to set up pod "p_ns" network: incompatible CNI versions; config is "0.3.1", plugin supports ["0.4.0"], failed to clean up sandbox container "45dbad7a" network for pod "p": NetworkPlugin cni failed to teardown pod "p_ns" network: container veth name provided (eth0) already exists]`,
			want:    v1alpha1.SignatureCNIVersionIncompatible,
		},
		{
			name:    "agent unreachable explains the IP it could not allocate",
			reason:  ReasonFailedCreatePodSandBox,
			message: `plugin type="weave-net" name="weave" failed (add): unable to allocate IP address: Post "http://127.0.0.1:6784/ip/713e": dial tcp 127.0.0.1:6784: connect: connection refused`,
			want:    v1alpha1.SignatureDaemonUnavailable,
		},
		{
			name:    "missing version on teardown inside a create failure",
			reason:  ReasonFailedCreatePodSandBox,
			message: `failed to setup network for sandbox "aa": plugin type="bridge" failed (add): failed to set bridge addr: "cni0" already has an IP address different from 10.244.1.1/24, failed to clean up sandbox "aa": invalid version "": the version is empty`,
			want:    v1alpha1.SignatureCNIVersionMissing,
		},
	}
	for _, c := range cases {
		got, ok := Default().Match(c.reason, c.message)
		if !ok || got.Signature != string(c.want) {
			t.Errorf("%s: got %v %q, want %s", c.name, ok, got.Signature, c.want)
		}
	}
}

func TestMatchReasons(t *testing.T) {
	notInit := "network is not ready: container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady message:Network plugin returns error: cni plugin not initialized"
	missing := `plugin type="flannel" failed (add): failed to find plugin "flannel" in path [/opt/cni/bin]`
	cases := []struct {
		reason, message string
		want            string
	}{
		{ReasonNetworkNotReady, notInit, string(v1alpha1.SignatureCNINotInitialized)},
		{ReasonFailedSync, notInit, string(v1alpha1.SignatureCNINotInitialized)},
		{"", missing, string(v1alpha1.SignaturePluginBinaryMissing)},
		{ReasonFailedKillPod, missing, string(v1alpha1.SignaturePluginBinaryMissing)},
		// NetworkNotReady is kubelet refusing to start a pod, which only the runtime's readiness explains.
		{ReasonNetworkNotReady, missing, ""},
		// An event reason that never carries a sandbox error is not evidence, whatever its message says.
		{"Pulled", missing, ""},
		{"BackOff", notInit, ""},
	}
	for _, c := range cases {
		got, ok := Default().Match(c.reason, c.message)
		if got.Signature != c.want || ok != (c.want != "") {
			t.Errorf("Match(%q, %.50q) = %v %q, want %q", c.reason, c.message, ok, got.Signature, c.want)
		}
	}
}

func TestMatchNodeCondition(t *testing.T) {
	got, ok := Default().MatchNodeCondition("container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady message:Network plugin returns error: cni plugin not initialized")
	if !ok || got.Signature != string(v1alpha1.SignatureCNINotInitialized) || got.Action != v1alpha1.ActionRepairRuntimeCNIConfig {
		t.Errorf("Ready condition: got %v %+v", ok, got)
	}
	// A node condition does not prove a sandbox-level failure: those need pod events.
	if got, ok := Default().MatchNodeCondition(`failed to find plugin "bridge" in path [/opt/cni/bin]`); ok {
		t.Errorf("a node condition matched %s", got.Signature)
	}
	if got, ok := Default().MatchNodeCondition("PLEG is not healthy: pleg was last seen active 3m7.6s ago; threshold is 3m0s"); ok {
		t.Errorf("PLEG matched %s", got.Signature)
	}
}

func TestActionDependsOnParameters(t *testing.T) {
	cases := []struct {
		message string
		want    v1alpha1.RepairAction
	}{
		{`failed to find plugin "bridge" in path [/opt/cni/bin]`, v1alpha1.ActionInstallReferencePlugins},
		{`[failed to find plugin "portmap" in path [/opt/cni/bin] failed to find plugin "bandwidth" in path [/opt/cni/bin]]`, v1alpha1.ActionInstallReferencePlugins},
		// One vendor binary among reference ones: installing the reference ones would not make the node work.
		{`[failed to find plugin "flannel" in path [/opt/cni/bin] failed to find plugin "portmap" in path [/opt/cni/bin]]`, v1alpha1.ActionEscalate},
		{`failed to find plugin "my-site-plugin" in path [/opt/cni/bin]`, v1alpha1.ActionEscalate},
		{`failed to allocate for range 0: no IP addresses available in range set: 10.42.0.1-10.42.0.254`, v1alpha1.ActionReclaimIPAM},
		{`unable to allocate IP via local cilium agent: [POST /ipam][502] postIpamFailure  range is full`, v1alpha1.ActionEscalate},
	}
	for _, c := range cases {
		got, ok := Default().Match("", c.message)
		if !ok || got.Action != c.want {
			t.Errorf("%.60q: got %v %q (%v), want %s", c.message, ok, got.Action, got.Params, c.want)
		}
	}
}

func TestActionFor(t *testing.T) {
	withRestart := append(slices.Clone(DefaultAllowedActions), v1alpha1.ActionRestartCNIAgentPod)
	daemon, _ := Default().Match("", `open /run/flannel/subnet.env: no such file or directory`)
	apiserver, _ := Default().Match("", `error getting ClusterInformation: connection is unauthorized: Unauthorized`)
	stale, _ := Default().Match("", `failed to set bridge addr: "cni0" already has an IP address different from 10.244.1.1/24`)
	cases := []struct {
		name    string
		r       Result
		allowed []v1alpha1.RepairAction
		want    v1alpha1.RepairAction
	}{
		{"agent down, default policy", daemon, DefaultAllowedActions, v1alpha1.ActionEscalate},
		{"agent down, restart allowed", daemon, withRestart, v1alpha1.ActionRestartCNIAgentPod},
		{"unauthorized, default policy", apiserver, DefaultAllowedActions, v1alpha1.ActionEscalate},
		{"unauthorized, restart allowed", apiserver, withRestart, v1alpha1.ActionRestartCNIAgentPod},
		{"stale bridge, default policy", stale, DefaultAllowedActions, v1alpha1.ActionCleanStaleNetwork},
		{"stale bridge, only Escalate allowed", stale, []v1alpha1.RepairAction{v1alpha1.ActionEscalate}, v1alpha1.ActionEscalate},
	}
	for _, c := range cases {
		if got := c.r.ActionFor(c.allowed); got != c.want {
			t.Errorf("%s: %s, want %s", c.name, got, c.want)
		}
	}
}

func TestCompileEnabledSignatures(t *testing.T) {
	s, errs := Compile([]v1alpha1.SignatureID{v1alpha1.SignatureCNINotInitialized}, nil)
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	if got := s.Signatures(); !slices.Equal(got, []string{string(v1alpha1.SignatureCNINotInitialized)}) {
		t.Errorf("Signatures() = %v", got)
	}
	if r, ok := s.Match("", "cni plugin not initialized"); !ok || r.Signature != string(v1alpha1.SignatureCNINotInitialized) {
		t.Errorf("enabled signature: %v %v", ok, r)
	}
	if r, ok := s.Match("", `open /run/flannel/subnet.env: no such file or directory`); ok {
		t.Errorf("disabled signature matched: %v", r)
	}
	// The cause (a missing flannel binary) is disabled: the consequence the policy does enable must not be
	// blamed, or the wrong repair would drain the node for nothing.
	if r, ok := s.Match("", `[failed to find plugin "flannel" in path [/opt/cni/bin]] network plugin is not ready: cni config uninitialized`); ok {
		t.Errorf("matched %s through a disabled cause", r.Signature)
	}

	_, errs = Compile([]v1alpha1.SignatureID{"cni-everything"}, nil)
	if len(errs) != 1 || !strings.Contains(errs[0].Error(), "cni-everything") {
		t.Errorf("unknown id: %v", errs)
	}
}

func TestCustomSignatures(t *testing.T) {
	custom := []v1alpha1.CustomSignature{
		{Name: "broken", Pattern: `(unclosed`, Action: v1alpha1.ActionDiagnose},
		{Name: "site-ipam", Pattern: `site-ipam: pool (?P<pool>[a-z0-9-]+) is empty`, Action: v1alpha1.ActionEscalate},
		{Name: "calico-unauthorized-diagnose", Reasons: []string{ReasonFailedCreatePodSandBox}, Pattern: `connection is unauthorized`, Action: v1alpha1.ActionDiagnose},
		{Name: "bad-action", Pattern: `x`, Action: "Reboot"},
		{Name: string(v1alpha1.SignatureIPAMExhausted), Pattern: `x`, Action: v1alpha1.ActionDiagnose},
		{Name: "site-ipam", Pattern: `y`, Action: v1alpha1.ActionDiagnose},
		{Name: "", Pattern: `z`, Action: v1alpha1.ActionDiagnose},
	}
	s, errs := Compile(nil, custom)

	wantErrs := map[string]string{"broken": "pattern", "bad-action": "action", string(v1alpha1.SignatureIPAMExhausted): "name", "site-ipam": "name", "": "name"}
	if len(errs) != len(wantErrs) {
		t.Fatalf("errors: %v", errs)
	}
	for _, err := range errs {
		var cse *CustomSignatureError
		if !errors.As(err, &cse) {
			t.Fatalf("%v is not a *CustomSignatureError", err)
		}
		if wantErrs[cse.Name] != cse.Field || !strings.Contains(err.Error(), `"`+cse.Name+`"`) {
			t.Errorf("error %q: field %q, want %q, and the message must name the signature", err, cse.Field, wantErrs[cse.Name])
		}
	}

	// Named groups become parameters; the default reasons apply when none are given.
	r, ok := s.Match(ReasonFailedCreatePodSandBox, `plugin type="site" failed (add): site-ipam: pool rack-7 is empty`)
	if !ok || r.Signature != "site-ipam" || !r.Custom || r.Params["pool"] != "rack-7" || r.Action != v1alpha1.ActionEscalate {
		t.Errorf("site-ipam: %v %+v", ok, r)
	}
	if r, ok := s.Match(ReasonFailedSync, `site-ipam: pool rack-7 is empty`); ok {
		t.Errorf("FailedSync is not among the default custom reasons, matched %v", r)
	}

	// A custom signature comes before the built-ins, but only under its own reasons.
	unauthorized := `plugin type="calico" failed (add): error getting ClusterInformation: connection is unauthorized: Unauthorized`
	if r, _ := s.Match(ReasonFailedCreatePodSandBox, unauthorized); r.Signature != "calico-unauthorized-diagnose" || r.Action != v1alpha1.ActionDiagnose {
		t.Errorf("custom precedence: got %+v", r)
	}
	if r, _ := s.Match(ReasonFailedKillPod, unauthorized); r.Signature != string(v1alpha1.SignatureAPIServerAccess) {
		t.Errorf("outside its reasons the custom signature must not match: got %+v", r)
	}
	// A custom signature's reasons join the ones the detection controller must watch.
	reasons := s.Reasons()
	slices.Sort(reasons)
	want := []string{ReasonFailedCreatePodSandBox, ReasonFailedKillPod, ReasonFailedSync, ReasonNetworkNotReady}
	if !slices.Equal(reasons, want) {
		t.Errorf("Reasons() = %v, want %v", reasons, want)
	}
	if r, _ := Compile(nil, []v1alpha1.CustomSignature{{Name: "evicted", Reasons: []string{"Evicted"}, Pattern: "low on resource", Action: v1alpha1.ActionDiagnose}}); !slices.Contains(r.Reasons(), "Evicted") {
		t.Errorf("a custom reason is missing from %v", r.Reasons())
	}
	// The broken signature did not take the built-ins down with it.
	if r, ok := s.Match("", "cni plugin not initialized"); !ok || r.Signature != string(v1alpha1.SignatureCNINotInitialized) {
		t.Errorf("built-ins after a bad custom signature: %v %+v", ok, r)
	}
}

// A custom pattern with no literal text cannot be prefiltered; it must still be tried on every message.
func TestCustomSignatureWithoutLiteralIsAlwaysTried(t *testing.T) {
	s, errs := Compile(nil, []v1alpha1.CustomSignature{{Name: "anything-long", Pattern: `^.{300,}$`, Action: v1alpha1.ActionDiagnose}})
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	if r, ok := s.Match(ReasonFailedCreatePodSandBox, strings.Repeat("q", 300)); !ok || r.Signature != "anything-long" {
		t.Errorf("got %v %+v", ok, r)
	}
	if r, ok := s.Match(ReasonFailedCreatePodSandBox, "short"); ok {
		t.Errorf("matched %+v", r)
	}
}

// The detection controller shares one Set between its workers: matching must not write to it. Run with -race to
// make this test prove it.
func TestSetIsSafeForConcurrentUse(t *testing.T) {
	lines := loadCorpus(t)
	s, _ := Compile(nil, fuzzCustom)
	want := make([]Result, len(lines))
	for i, l := range lines {
		want[i], _ = l.classify(s)
	}
	errs := make(chan error, 4)
	for w := 0; w < 4; w++ {
		go func() {
			for i, l := range lines {
				if got, _ := l.classify(s); !sameResult(got, want[i]) {
					errs <- errors.New(l.where())
					return
				}
			}
			errs <- nil
		}()
	}
	for w := 0; w < 4; w++ {
		if err := <-errs; err != nil {
			t.Errorf("concurrent result differs: %v", err)
		}
	}
}
