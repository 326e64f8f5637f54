package main

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/cli-runtime/pkg/printers"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
	"github.com/cnimedic/cnimedic/internal/termsafe"
)

// Description is the story of one repair; -o json|yaml prints it as is.
type Description struct {
	NodeRemediation v1alpha1.NodeRemediation `json:"nodeRemediation"`
	// Waiting is what the repair waits for, while it is open.
	Waiting *Wait `json:"waiting,omitempty"`
	// Events are the events regarding the NodeRemediation, oldest first: what
	// `kubectl events --for noderemediation/NAME` shows.
	Events []corev1.Event `json:"events"`
}

const describeExample = `  # The story of one repair: evidence, plan, the executor's result and conflist diff, history, events
  kubectl cnimedic describe nr-w1-cni-version-incompatible`

func newDescribeCommand(c *cluster) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:     "describe NAME",
		Short:   "Tell the story of one repair: evidence, plan, executor result with the conflist diff, history and events",
		Example: describeExample,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output, outputText, outputJSON, outputYAML); err != nil {
				return err
			}
			d, now, err := c.describe(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if output != outputText {
				return printData(c.streams.Out, output, d)
			}
			return writeDescription(c.streams.Out, d, now)
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", outputText, "output format: json or yaml (default: text)")
	return cmd
}

func (c *cluster) describe(ctx context.Context, name string) (*Description, time.Time, error) {
	w, err := c.loadWorld(ctx)
	if err != nil {
		return nil, time.Time{}, err
	}
	var nr *v1alpha1.NodeRemediation
	for i := range w.remediations {
		if w.remediations[i].Name == name {
			nr = &w.remediations[i]
		}
	}
	if nr == nil {
		return nil, time.Time{}, fmt.Errorf("noderemediations.cnimedic.io %q not found", name)
	}
	cl, err := c.client()
	if err != nil {
		return nil, time.Time{}, err
	}
	evs, err := eventsFor(ctx, cl, nr)
	if err != nil {
		return nil, time.Time{}, err
	}
	return &Description{NodeRemediation: *nr, Waiting: w.waitOf(nr), Events: evs}, w.now, nil
}

// eventsFor lists the events regarding the remediation. Events of cluster-scoped objects are stored in the
// "default" namespace; the controller publishes through events.k8s.io/v1, and the core/v1 view of the same
// objects is what supports the involvedObject field selectors (as `kubectl events --for` uses them). The UID keeps
// out the events of an earlier remediation that had the same name.
func eventsFor(ctx context.Context, cl client.Client, nr *v1alpha1.NodeRemediation) ([]corev1.Event, error) {
	list := &corev1.EventList{}
	sel := fields.SelectorFromSet(fields.Set{
		"involvedObject.kind": "NodeRemediation",
		"involvedObject.name": nr.Name,
		"involvedObject.uid":  string(nr.UID),
	})
	if err := cl.List(ctx, list, client.InNamespace(metav1.NamespaceDefault), client.MatchingFieldsSelector{Selector: sel}); err != nil {
		return nil, fmt.Errorf("listing the events of noderemediation %s: %w", nr.Name, err)
	}
	evs := list.Items
	sort.SliceStable(evs, func(i, j int) bool { return eventTime(&evs[i]).Before(eventTime(&evs[j])) })
	return evs, nil
}

// eventTime is when an event was last seen, whichever API wrote it (kubectl events' rule).
func eventTime(e *corev1.Event) time.Time {
	switch {
	case e.Series != nil && !e.Series.LastObservedTime.IsZero():
		return e.Series.LastObservedTime.Time
	case !e.LastTimestamp.IsZero():
		return e.LastTimestamp.Time
	case !e.EventTime.IsZero():
		return e.EventTime.Time
	}
	return e.CreationTimestamp.Time
}

func eventCount(e *corev1.Event) int32 {
	switch {
	case e.Series != nil && e.Series.Count > 0:
		return e.Series.Count
	case e.Count > 0:
		return e.Count
	}
	return 1
}

func writeDescription(out io.Writer, d *Description, now time.Time) error {
	// Messages come from events, conditions and results anyone with write access to them chose.
	out = termsafe.NewWriter(out)
	nr := &d.NodeRemediation
	p := &prefixWriter{w: out}
	p.kv(0, "Name", nr.Name)
	p.kv(0, "Node", nr.Spec.NodeName)
	p.kv(0, "Signature", nr.Spec.Signature)
	p.kv(0, "Policy", nr.Spec.PolicyName)
	p.kv(0, "Action", orNone(string(nr.Status.Action)))
	if nr.Status.Digest != "" {
		// What an approval binds: `kubectl cnimedic approve` approves this digest only.
		p.kv(0, "Digest", nr.Status.Digest)
	}
	p.kv(0, "Phase", fmt.Sprintf("%s (%s)", displayPhase(nr.Status.Phase), orNone(nr.Status.Reason)))
	if nr.Status.Message != "" {
		p.kv(0, "Message", nr.Status.Message)
	}
	p.kv(0, "Created", fmt.Sprintf("%s (%s ago)", nr.CreationTimestamp.UTC().Format(time.RFC3339), age(now, nr.CreationTimestamp.Time)))
	if st := nr.Status.StartTime; st != nil {
		p.kv(0, "Started", st.UTC().Format(time.RFC3339))
	}
	if ct := nr.Status.CompletionTime; ct != nil {
		took := ""
		if st := nr.Status.StartTime; st != nil {
			took = fmt.Sprintf(" (took %s)", ct.Sub(st.Time).Round(time.Second))
		}
		p.kv(0, "Completed", ct.UTC().Format(time.RFC3339)+took)
	}
	if d.Waiting != nil {
		if d.Waiting.Kind == WaitApproval {
			// The approver reads what will change first: the command comes after the plan and its preview.
			p.kv(0, "Waiting for", fmt.Sprintf("%s: read the plan and its preview on the node below, then approve or reject", d.Waiting.Kind))
		} else {
			p.kv(0, "Waiting for", fmt.Sprintf("%s: %s", d.Waiting.Kind, d.Waiting.Detail))
		}
	}
	if a := nr.Status.Approval; a != nil {
		line := fmt.Sprintf("%s by %s at %s (policy mode %s)", a.Decision, a.Source, a.Time.UTC().Format(time.RFC3339), a.Mode)
		if a.Reason != "" {
			line += ": " + a.Reason
		}
		p.kv(0, "Approval", line)
	} else {
		for _, key := range []string{v1alpha1.AnnotationApprove, v1alpha1.AnnotationReject} {
			if v, ok := nr.Annotations[key]; ok {
				p.kv(0, "Approval", fmt.Sprintf("%s=%q set, not yet acted on", key, v))
			}
		}
	}
	if nr.Status.Cordoned {
		p.kv(0, "Cordoned", "yes, by cnimedic")
	}

	ev := nr.Spec.Evidence
	p.line(0, "Evidence:")
	p.kv(1, "Events", fmt.Sprintf("%d from %d pods", ev.EventCount, ev.PodCount))
	if ev.FirstSeen != nil || ev.LastSeen != nil {
		p.kv(1, "Seen", fmt.Sprintf("%s to %s", timeOrUnknown(ev.FirstSeen), timeOrUnknown(ev.LastSeen)))
	}
	if ev.NodeCondition != "" {
		p.kv(1, "Node condition", ev.NodeCondition)
	}
	for _, c := range ev.Conditions {
		v := c.Type + "=" + c.Status
		if c.Reason != "" {
			v += " (" + c.Reason + ")"
		}
		if c.Since != nil {
			v += " since " + timeOrUnknown(c.Since)
		}
		if c.Message != "" {
			v += ": " + c.Message
		}
		p.kv(1, "Mapped condition", v)
	}
	if len(ev.Pods) > 0 {
		pods := make([]string, 0, len(ev.Pods))
		for _, pod := range ev.Pods {
			pods = append(pods, pod.Namespace+"/"+pod.Name)
		}
		p.kv(1, "Pods", strings.Join(pods, ", "))
	}
	if len(ev.SampleMessages) > 0 {
		p.line(1, "Messages:")
		for _, m := range ev.SampleMessages {
			p.line(2, "- "+m)
		}
	}
	if len(nr.Spec.Parameters) > 0 {
		p.line(0, "Parameters:")
		keys := make([]string, 0, len(nr.Spec.Parameters))
		for k := range nr.Spec.Parameters {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			p.kv(1, k, nr.Spec.Parameters[k])
		}
	}

	if d := nr.Status.Diagnosis; d != nil {
		p.line(0, "Diagnosis:")
		p.kv(1, "Time", d.Time.UTC().Format(time.RFC3339))
		if d.Confirmed != "" {
			p.kv(1, "Confirmed", d.Confirmed)
		} else {
			p.kv(1, "Confirmed", "<nothing> (the node does not show the failure)")
		}
		if l := d.Layout; l != nil {
			p.kv(1, "Layout", describeLayout(l))
		}
		for _, f := range d.Findings {
			line := string(f.Severity) + ": " + f.Summary
			if f.Signature != "" {
				line = string(f.Severity) + " (" + string(f.Signature) + "): " + f.Summary
			}
			p.line(1, line)
		}
	}

	p.line(0, "Plan:")
	if nr.Status.Plan == nil || len(nr.Status.Plan.Steps) == 0 {
		p.line(1, "<none> (no node action)")
	} else {
		for i, s := range nr.Status.Plan.Steps {
			p.line(1, fmt.Sprintf("%d. %s", i+1, planStep(s)))
		}
	}

	writePreview(p, nr)
	if d.Waiting != nil && d.Waiting.Kind == WaitApproval {
		p.kv(0, "Approve", d.Waiting.Detail)
	}

	writeExecutor(p, nr)

	if len(nr.Status.Conditions) > 0 {
		p.line(0, "Conditions:")
		tw := printers.GetNewTabWriter(indent(out, 1))
		fmt.Fprintln(tw, "TYPE\tSTATUS\tREASON\tSINCE\tMESSAGE")
		for _, cnd := range nr.Status.Conditions {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", cnd.Type, cnd.Status, cnd.Reason, cnd.LastTransitionTime.UTC().Format(time.RFC3339), cnd.Message)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}

	p.line(0, "History:")
	if len(nr.Status.History) == 0 {
		p.line(1, "<none>")
	} else {
		tw := printers.GetNewTabWriter(indent(out, 1))
		fmt.Fprintln(tw, "TIME\tPHASE\tDURATION\tREASON\tMESSAGE")
		for i, h := range nr.Status.History {
			var spent string
			switch {
			case i+1 < len(nr.Status.History):
				spent = nr.Status.History[i+1].Time.Sub(h.Time.Time).Round(time.Second).String()
			case h.Phase.IsTerminal():
				spent = "-"
			default:
				spent = age(now, h.Time.Time) + " so far"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", h.Time.UTC().Format(time.RFC3339), h.Phase, spent, h.Reason, h.Message)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}

	p.line(0, "Events:")
	if len(d.Events) == 0 {
		p.line(1, "<none> (events expire, by default after an hour)")
		return nil
	}
	tw := printers.GetNewTabWriter(indent(out, 1))
	fmt.Fprintln(tw, "LAST SEEN\tTYPE\tREASON\tCOUNT\tMESSAGE")
	for i := range d.Events {
		e := &d.Events[i]
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\n", age(now, eventTime(e)), e.Type, e.Reason, eventCount(e), e.Message)
	}
	return tw.Flush()
}

func writeExecutor(p *prefixWriter, nr *v1alpha1.NodeRemediation) {
	st := nr.Status
	if st.ExecutorPod == "" && st.Result == nil && len(st.Steps) == 0 {
		return
	}
	p.line(0, "Executor:")
	if st.ExecutorPod != "" {
		p.kv(1, "Pod", fmt.Sprintf("%s (attempt %d)", st.ExecutorPod, st.Attempt))
	}
	if d := st.Drain; d != nil && (d.Message != "" || d.BlockedBy != "") {
		p.kv(1, "Drain", strings.TrimSpace(d.Message+" "+d.BlockedBy))
	}
	res := st.Result
	if res != nil {
		p.kv(1, "Outcome", string(res.Outcome))
		if res.Message != "" {
			p.kv(1, "Message", res.Message)
		}
	}
	steps := st.Steps
	if len(steps) == 0 && res != nil {
		steps = res.Steps
	}
	if len(steps) > 0 {
		p.line(1, "Steps:")
		tw := printers.GetNewTabWriter(indent(p.w, 2))
		fmt.Fprintln(tw, "STEP\tOUTCOME\tSTARTED\tTOOK\tMESSAGE")
		for _, s := range steps {
			started, took := "-", "-"
			if s.Started != nil {
				started = s.Started.UTC().Format(time.RFC3339)
				if s.Finished != nil {
					took = s.Finished.Sub(s.Started.Time).Round(time.Millisecond).String()
				}
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", s.Type, s.Outcome, started, took, s.Message)
		}
		_ = tw.Flush()
	}
	if res != nil && len(res.Changes) > 0 {
		p.line(1, "Changes:")
		for _, ch := range res.Changes {
			backup := "no backup: the file did not exist"
			if ch.Backup != "" {
				backup = "backup " + ch.Backup
			}
			p.line(2, fmt.Sprintf("%s (%s)", ch.Path, backup))
			for _, l := range strings.Split(strings.TrimRight(ch.Diff, "\n"), "\n") {
				if l != "" {
					p.line(3, l)
				}
			}
		}
	}
}

// writePreview shows what the plan would change on the node, as the read-only preview there resolved it: the diff
// of each file. A preview of another plan than the one recorded is never shown as this plan's. The diffs are the
// node's file content: like every other text here they go through termsafe (writeDescription's writer).
func writePreview(p *prefixWriter, nr *v1alpha1.NodeRemediation) {
	st := &nr.Status
	if st.Plan == nil || len(st.Plan.Steps) == 0 {
		return
	}
	pv := st.CurrentPreview()
	switch {
	case pv == nil && st.Preview != nil:
		p.kv(0, "Preview", fmt.Sprintf("<none for this plan>: the preview of %s was of plan %s; the plan above is %s",
			st.Preview.Time.UTC().Format(time.RFC3339), shortDigest(st.Preview.PlanDigest), shortDigest(v1alpha1.PlanDigest(*st.Plan))))
		return
	case pv == nil:
		if st.Phase == v1alpha1.PhaseAwaitingApproval {
			p.kv(0, "Preview", "<not yet>: the read-only preview of the plan on the node has not reported")
		}
		return
	case pv.Unavailable != "":
		p.kv(0, "Preview", "unavailable: "+pv.Unavailable)
		return
	}
	p.line(0, "Preview:")
	p.kv(1, "Time", pv.Time.UTC().Format(time.RFC3339)+" (on the node; nothing was changed)")
	p.kv(1, "Plan digest", pv.PlanDigest)
	if pv.Message != "" {
		p.kv(1, "Message", pv.Message)
	}
	for _, f := range pv.Failures {
		p.line(1, "WOULD FAIL: "+f)
	}
	if len(pv.Files) == 0 {
		p.line(1, "<no file would change>")
	}
	cut := false
	for _, f := range pv.Files {
		head := f.Path
		if f.Why != "" {
			head += ": " + f.Why
		}
		p.line(1, head)
		for _, l := range strings.Split(strings.TrimRight(f.Diff, "\n"), "\n") {
			p.line(2, l)
		}
		if f.Truncated {
			p.line(2, "(diff cut to fit the status)")
			cut = true
		}
	}
	if pv.Truncated && !cut {
		p.line(1, "(files or failures left out to fit the status)")
	}
	if pv.Truncated {
		p.line(1, fmt.Sprintf("The whole preview is in the preview pod's log while the remediation is open: kubectl logs -n <cnimedic's namespace> -l %s=%s,%s=preview",
			v1alpha1.LabelRemediation, nr.Name, v1alpha1.LabelComponent))
	}
}

// shortDigest is a digest's first 12 hex digits, as the manager's messages give it.
func shortDigest(d string) string {
	if h, ok := strings.CutPrefix(d, "sha256:"); ok && len(h) > 12 {
		return h[:12]
	}
	return d
}

// planStep renders one typed step with the fields its type uses.
func planStep(s v1alpha1.PlanStep) string {
	if args := s.Args(); len(args) > 0 {
		return string(s.Type) + " " + strings.Join(args, " ")
	}
	return string(s.Type)
}

func orNone(s string) string {
	if s == "" {
		return "<none>"
	}
	return s
}

// describeLayout is the node's layout as the diagnosis found it, on one line: what runs it, where its runtime's
// socket, config and CNI dirs are, and why cnimedic does not serve it when it does not.
func describeLayout(l *v1alpha1.NodeLayout) string {
	parts := []string{string(l.Kind)}
	if l.Role != "" {
		parts[0] += " (" + l.Role + ")"
	}
	if len(l.Units) > 0 {
		parts = append(parts, "units "+strings.Join(l.Units, ", "))
	}
	if l.CRISocket != "" {
		parts = append(parts, "CRI socket "+l.CRISocket)
	}
	if l.RuntimeConfig != "" {
		cfg := "runtime config " + l.RuntimeConfig
		if l.RuntimeConfigTemplate != "" {
			cfg += " (generated from " + l.RuntimeConfigTemplate + ")"
		}
		if len(l.RuntimeConfigImports) > 0 {
			cfg += " with drop-ins " + strings.Join(l.RuntimeConfigImports, ", ")
		}
		parts = append(parts, cfg)
	}
	if l.ConfDir != "" {
		parts = append(parts, "conf dir "+l.ConfDir)
	}
	if len(l.BinDirs) > 0 {
		parts = append(parts, "bin dirs "+strings.Join(l.BinDirs, ", "))
	}
	if !l.Servable {
		why := l.Reason
		if why == "" {
			why = "no reason given"
		}
		parts = append(parts, "not repaired by cnimedic: "+why)
	}
	return strings.Join(parts, "; ")
}

func timeOrUnknown(t *metav1.Time) string {
	if t == nil {
		return "<unknown>"
	}
	return t.UTC().Format(time.RFC3339)
}

// prefixWriter writes kubectl-describe-style indented lines.
type prefixWriter struct{ w io.Writer }

func (p *prefixWriter) line(level int, s string) {
	// One line: a newline or carriage return in text from the cluster or a node (a file name, a message) is shown,
	// so that it cannot print a line of its own, such as a forged approve command.
	fmt.Fprintf(p.w, "%s%s\n", strings.Repeat("  ", level), oneLine.Replace(s))
}

var oneLine = strings.NewReplacer("\n", `\n`, "\r", `\r`)

// kv aligns the values of one section in a column, as kubectl describe does.
func (p *prefixWriter) kv(level int, k, v string) {
	p.line(level, fmt.Sprintf("%-*s %s", 16-2*level, k+":", v))
}

// indent returns a writer that indents every line by level steps, for tables inside a section.
func indent(w io.Writer, level int) io.Writer {
	return &indentWriter{w: w, prefix: strings.Repeat("  ", level), atStart: true}
}

type indentWriter struct {
	w       io.Writer
	prefix  string
	atStart bool
}

func (iw *indentWriter) Write(b []byte) (int, error) {
	var sb strings.Builder
	for _, c := range string(b) {
		if iw.atStart {
			sb.WriteString(iw.prefix)
			iw.atStart = false
		}
		sb.WriteRune(c)
		if c == '\n' {
			iw.atStart = true
		}
	}
	if _, err := io.WriteString(iw.w, sb.String()); err != nil {
		return 0, err
	}
	return len(b), nil
}
