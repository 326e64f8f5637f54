package classify

import (
	"fmt"
	"io"
	"os"

	"sigs.k8s.io/yaml"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
	"github.com/cnimedic/cnimedic/internal/signature"
)

// Output formats.
const (
	OutputTable = "table"
	OutputJSONL = "jsonl"
)

// Options configure Run.
type Options struct {
	// Output is OutputTable or OutputJSONL.
	Output string
	// Policy, when set, supplies the enabled signatures, the custom signatures and the allowed actions, as the
	// detection controller would use them. Unset: every built-in signature and the default allowed actions.
	Policy *v1alpha1.RemediationPolicySpec
	// AllowedActions, when set, replaces the policy's (or the default) allowed actions.
	AllowedActions []v1alpha1.RepairAction
}

// Run reads messages from in, classifies them and writes the result to out. Problems with the policy's custom
// signatures are warnings on errOut (the controller reports them on the policy's SignaturesValid condition and
// goes on with the valid ones); unreadable input is an error.
func Run(in io.Reader, out, errOut io.Writer, o Options) error {
	if o.Output == "" {
		o.Output = OutputTable
	}
	if o.Output != OutputTable && o.Output != OutputJSONL {
		return fmt.Errorf("unknown output format %q: use %s or %s", o.Output, OutputTable, OutputJSONL)
	}
	for _, a := range o.AllowedActions {
		if !signature.IsValidAction(a) {
			return fmt.Errorf("unknown action %q", a)
		}
	}

	set, allowed := signature.Default(), signature.DefaultAllowedActions
	if o.Policy != nil {
		var errs []error
		set, errs = signature.CompilePolicy(o.Policy)
		for _, err := range errs {
			fmt.Fprintf(errOut, "warning: %v\n", err)
		}
		if len(o.Policy.AllowedActions) > 0 {
			allowed = o.Policy.AllowedActions
		}
	}
	if len(o.AllowedActions) > 0 {
		allowed = o.AllowedActions
	}

	recs, _, err := Read(in)
	if err != nil {
		return fmt.Errorf("reading input: %w", err)
	}
	cs := Classify(set, allowed, recs)
	if o.Output == OutputJSONL {
		return WriteJSONL(out, cs)
	}
	return WriteTable(out, cs)
}

// LoadPolicy reads a RemediationPolicy manifest (YAML or JSON), as it would be applied to the cluster.
func LoadPolicy(path string) (*v1alpha1.RemediationPolicySpec, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var p v1alpha1.RemediationPolicy
	if err := yaml.UnmarshalStrict(raw, &p); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if p.Kind != "RemediationPolicy" {
		return nil, fmt.Errorf("%s: kind is %q, want RemediationPolicy", path, p.Kind)
	}
	return &p.Spec, nil
}
