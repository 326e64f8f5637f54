package step

import (
	"fmt"
	"strings"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
)

// ValidName checks a name a step joins onto a directory (a conflist in the conf dir, a plugin in a bin dir, a
// network under the IPAM data dir) or hands to the kernel (a link): a single path component, so that it can only
// ever name an entry of that directory. Empty, "." and "..", a "/", whitespace and control characters are refused.
func ValidName(name string) error {
	switch name {
	case "":
		return fmt.Errorf("empty name")
	case ".", "..":
		return fmt.Errorf("%q names a directory, not an entry of one", name)
	}
	if strings.ContainsRune(name, '/') {
		return fmt.Errorf("%q has a \"/\"; want a single file name", name)
	}
	for _, r := range name {
		if r <= ' ' || r == 0x7f {
			return fmt.Errorf("%q has whitespace or a control character", name)
		}
	}
	return nil
}

// ValidateNames checks the names of a plan step's fields (Unit, ConfList, Plugins, Network, Link) with ValidName. Empty
// optional fields are left alone: each means "the default" to its step. The error names the field.
func ValidateNames(s v1alpha1.PlanStep) error {
	check := func(field, v string) error {
		if err := ValidName(v); err != nil {
			return fmt.Errorf("%s: %w", field, err)
		}
		return nil
	}
	for _, f := range []struct{ field, v string }{{"unit", s.Unit}, {"confList", s.ConfList}, {"network", s.Network}, {"link", s.Link}} {
		if f.v == "" {
			continue
		}
		if err := check(f.field, f.v); err != nil {
			return err
		}
	}
	for i, p := range s.Plugins {
		if err := check(fmt.Sprintf("plugins[%d]", i), p); err != nil {
			return err
		}
	}
	return nil
}

// ValidatePlanNames runs ValidateNames on every step, the error naming the step by its 1-based index and type.
func ValidatePlanNames(plan v1alpha1.Plan) error {
	for i, s := range plan.Steps {
		if err := ValidateNames(s); err != nil {
			return fmt.Errorf("step %d (%s): %w", i+1, s.Type, err)
		}
	}
	return nil
}
