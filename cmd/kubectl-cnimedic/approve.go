package main

import (
	"context"
	"errors"
	"fmt"
	"sort"

	"github.com/spf13/cobra"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
)

// approve and reject set the annotations the design makes the approval contract (cnimedic.io/approve: "true",
// cnimedic.io/reject: "<reason>"), exactly as `kubectl annotate` would, so that the admission policy that limits
// who may approve applies to the plugin and to kubectl alike. They refuse what the controller would ignore: an
// annotation on a remediation that has ended, or a rejection of one already approved.

const approveExample = `  # Approve one pending repair
  kubectl cnimedic approve nr-w1-cni-version-incompatible

  # Approve every repair waiting for approval (see them first with --dry-run)
  kubectl cnimedic approve --all-pending --dry-run
  kubectl cnimedic approve --all-pending`

func newApproveCommand(c *cluster) *cobra.Command {
	var (
		allPending bool
		dryRun     bool
		output     string
	)
	cmd := &cobra.Command{
		Use:     "approve NAME... | --all-pending",
		Short:   "Approve pending repairs (sets cnimedic.io/approve to the digest of the plan they show now)",
		Example: approveExample,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output, outputText, outputName); err != nil {
				return err
			}
			if allPending == (len(args) > 0) {
				return errors.New("name the NodeRemediations to approve, or give --all-pending (not both)")
			}
			cl, err := c.client()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			names := args
			if allPending {
				if names, err = pendingNames(ctx, cl); err != nil {
					return err
				}
				if len(names) == 0 {
					fmt.Fprintln(c.streams.ErrOut, "No NodeRemediation awaits approval.")
					return nil
				}
			}
			var errs []error
			for _, name := range names {
				// The approval binds what the approver could see (kubectl cnimedic describe): the digest of the
				// plan as it is now. If the manager decides anything else before it acts, this approves nothing.
				value, err := approvalValue(ctx, cl, name)
				if err != nil {
					errs = append(errs, err)
					continue
				}
				if err := annotate(ctx, cl, name, v1alpha1.AnnotationApprove, value, dryRun); err != nil {
					errs = append(errs, err)
					continue
				}
				report(c, output, name, "approved", dryRun)
			}
			return errors.Join(errs...)
		},
	}
	cmd.Flags().BoolVar(&allPending, "all-pending", false, "approve every NodeRemediation in phase AwaitingApproval")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "send the change as a server-side dry run: checked by the API server and its admission, not stored")
	cmd.Flags().StringVarP(&output, "output", "o", outputText, "output format: name (default: a sentence per object)")
	return cmd
}

// approvalValue is the remediation's current digest, or "true" when the manager has recorded none.
func approvalValue(ctx context.Context, cl client.Client, name string) (string, error) {
	nr := &v1alpha1.NodeRemediation{}
	if err := cl.Get(ctx, client.ObjectKey{Name: name}, nr); err != nil {
		return "", fmt.Errorf("reading NodeRemediation %s: %w", name, err)
	}
	if nr.Status.Digest == "" {
		return "true", nil
	}
	return nr.Status.Digest, nil
}

const rejectExample = `  # Reject a pending repair, saying why (the reason is kept in the remediation's status and events)
  kubectl cnimedic reject nr-w1-ipam-exhausted --reason "node is being replaced"`

func newRejectCommand(c *cluster) *cobra.Command {
	var (
		reason string
		dryRun bool
		output string
	)
	cmd := &cobra.Command{
		Use:     "reject NAME --reason TEXT",
		Short:   "Reject a pending repair (sets cnimedic.io/reject=<reason>)",
		Example: rejectExample,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output, outputText, outputName); err != nil {
				return err
			}
			if reason == "" {
				return errors.New("--reason is required: it is recorded as the rejection's reason")
			}
			cl, err := c.client()
			if err != nil {
				return err
			}
			if err := annotate(cmd.Context(), cl, args[0], v1alpha1.AnnotationReject, reason, dryRun); err != nil {
				return err
			}
			report(c, output, args[0], "rejected", dryRun)
			return nil
		},
	}
	cmd.Flags().StringVar(&reason, "reason", "", "why the repair is rejected (required)")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "send the change as a server-side dry run: checked by the API server and its admission, not stored")
	cmd.Flags().StringVarP(&output, "output", "o", outputText, "output format: name (default: a sentence per object)")
	return cmd
}

func report(c *cluster, output, name, verb string, dryRun bool) {
	suffix := ""
	if dryRun {
		suffix = " (server dry run)"
	}
	if output == outputName {
		fmt.Fprintf(c.streams.Out, "noderemediation.cnimedic.io/%s\n", name)
		return
	}
	fmt.Fprintf(c.streams.Out, "noderemediation.cnimedic.io/%s %s%s\n", name, verb, suffix)
}

// pendingNames lists the remediations awaiting approval, by name.
func pendingNames(ctx context.Context, cl client.Client) ([]string, error) {
	list := &v1alpha1.NodeRemediationList{}
	if err := cl.List(ctx, list); err != nil {
		return nil, fmt.Errorf("listing NodeRemediations: %w", err)
	}
	var names []string
	for _, nr := range list.Items {
		if nr.Status.Phase == v1alpha1.PhaseAwaitingApproval {
			if _, rejected := nr.Annotations[v1alpha1.AnnotationReject]; !rejected {
				names = append(names, nr.Name)
			}
		}
	}
	sort.Strings(names)
	return names, nil
}

// annotate sets one of the approval annotations after checking that the controller would still act on it. The
// patch carries the resourceVersion it checked, so a remediation that moved on in between is not annotated.
func annotate(ctx context.Context, cl client.Client, name, key, value string, dryRun bool) error {
	nr := &v1alpha1.NodeRemediation{}
	if err := cl.Get(ctx, types.NamespacedName{Name: name}, nr); err != nil {
		return err
	}
	if err := decidable(nr, key); err != nil {
		return err
	}
	base := nr.DeepCopy()
	if nr.Annotations == nil {
		nr.Annotations = map[string]string{}
	}
	nr.Annotations[key] = value
	opts := []client.PatchOption{}
	if dryRun {
		opts = append(opts, client.DryRunAll)
	}
	err := cl.Patch(ctx, nr, client.MergeFromWithOptions(base, client.MergeFromWithOptimisticLock{}), opts...)
	switch {
	case apierrors.IsConflict(err):
		return fmt.Errorf("noderemediation %s changed while it was being annotated: look at it again (kubectl cnimedic describe %s)", name, name)
	case apierrors.IsForbidden(err) || apierrors.IsInvalid(err):
		// The API server's own words (RBAC, or the admission policy that limits who may approve) say it best.
		return fmt.Errorf("the API server refused to set %s on noderemediation %s: %w", key, name, err)
	}
	return err
}

// decidable says whether setting key on nr still decides something.
func decidable(nr *v1alpha1.NodeRemediation, key string) error {
	phase := nr.Status.Phase
	if phase.IsTerminal() {
		return fmt.Errorf("noderemediation %s has ended (%s: %s): there is nothing to decide", nr.Name, phase, nr.Status.Reason)
	}
	if reason, ok := nr.Annotations[v1alpha1.AnnotationReject]; ok {
		return fmt.Errorf("noderemediation %s is already rejected (%s=%q)", nr.Name, v1alpha1.AnnotationReject, reason)
	}
	switch phase {
	case "", v1alpha1.PhaseDetected, v1alpha1.PhaseAwaitingApproval:
		return nil
	}
	if key == v1alpha1.AnnotationReject && phase == v1alpha1.PhaseApproved {
		return fmt.Errorf("noderemediation %s is already approved: a rejection no longer stops it; pause its policy (spec.paused) "+
			"to keep it from starting, or delete it", nr.Name)
	}
	if key == v1alpha1.AnnotationReject {
		return fmt.Errorf("noderemediation %s is already under way (phase %s): a rejection no longer stops it", nr.Name, phase)
	}
	return fmt.Errorf("noderemediation %s is already approved (phase %s)", nr.Name, phase)
}
