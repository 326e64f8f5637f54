package deploytest

import (
	"encoding/json"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/prometheus/model/labels"
	promql "github.com/prometheus/prometheus/promql/parser"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/cnimedic/cnimedic/test/manifests"
	"github.com/cnimedic/cnimedic/test/repo"
)

// exportedMetrics finds every metric the manager's code defines: the prometheus.*Opts literals with a Namespace
// and Name in the non-test Go files under controllers/ and internal/, with the label names of their *Vec
// constructor. Histograms and summaries also export _bucket/_sum/_count series. Reading the source rather than a
// registry: a *Vec without observations exports nothing until first used, so a registry would miss it.
func exportedMetrics(t *testing.T) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	fset := token.NewFileSet()
	for _, dir := range []string{"controllers", "internal"} {
		err := filepath.WalkDir(filepath.Join(repo.Root(), dir), func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
				return err
			}
			f, err := parser.ParseFile(fset, path, nil, 0)
			if err != nil {
				return err
			}
			ast.Inspect(f, func(n ast.Node) bool {
				call, ok := n.(*ast.CallExpr)
				if !ok || len(call.Args) == 0 {
					return true
				}
				fn, ok := call.Fun.(*ast.SelectorExpr)
				if !ok || !strings.HasPrefix(fn.Sel.Name, "New") {
					return true
				}
				opts, ok := call.Args[0].(*ast.CompositeLit)
				if !ok {
					return true
				}
				sel, ok := opts.Type.(*ast.SelectorExpr)
				if !ok || !strings.HasSuffix(sel.Sel.Name, "Opts") {
					return true
				}
				fields := map[string]string{}
				for _, e := range opts.Elts {
					kv, ok := e.(*ast.KeyValueExpr)
					if !ok {
						continue
					}
					key, _ := kv.Key.(*ast.Ident)
					if lit, ok := kv.Value.(*ast.BasicLit); ok && key != nil && lit.Kind == token.STRING {
						fields[key.Name], _ = strconv.Unquote(lit.Value)
					}
				}
				if fields["Name"] == "" {
					return true
				}
				name := fields["Name"]
				for _, prefix := range []string{fields["Subsystem"], fields["Namespace"]} {
					if prefix != "" {
						name = prefix + "_" + name
					}
				}
				var lbls []string
				if len(call.Args) > 1 {
					if list, ok := call.Args[1].(*ast.CompositeLit); ok {
						for _, e := range list.Elts {
							if lit, ok := e.(*ast.BasicLit); ok {
								l, _ := strconv.Unquote(lit.Value)
								lbls = append(lbls, l)
							}
						}
					}
				}
				switch sel.Sel.Name {
				case "HistogramOpts":
					out[name+"_bucket"] = append(slices.Clone(lbls), "le")
					out[name+"_sum"], out[name+"_count"] = lbls, lbls
				case "SummaryOpts":
					out[name] = append(slices.Clone(lbls), "quantile")
					out[name+"_sum"], out[name+"_count"] = lbls, lbls
				default:
					out[name] = lbls
				}
				return true
			})
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// checkExpr parses one PromQL expression and checks that each series it selects is one the code exports, and
// each label it matches on is one of that metric's labels.
func checkExpr(t *testing.T, where, expr string, metrics map[string][]string) []string {
	t.Helper()
	parsed, err := promql.NewParser(promql.Options{}).ParseExpr(expr)
	if err != nil {
		t.Errorf("%s: %q does not parse: %v", where, expr, err)
		return nil
	}
	var used []string
	promql.Inspect(parsed, func(n promql.Node, _ []promql.Node) error {
		vs, ok := n.(*promql.VectorSelector)
		if !ok {
			return nil
		}
		name := vs.Name
		for _, m := range vs.LabelMatchers {
			if m.Name == labels.MetricName && m.Type == labels.MatchEqual {
				name = m.Value
			}
		}
		used = append(used, name)
		known, ok := metrics[name]
		if !ok {
			t.Errorf("%s: %q uses %s, which the code does not export", where, expr, name)
			return nil
		}
		for _, m := range vs.LabelMatchers {
			if m.Name != labels.MetricName && !slices.Contains(known, m.Name) {
				t.Errorf("%s: %q matches on label %s, which %s does not have (it has %v)", where, expr, m.Name, name, known)
			}
		}
		return nil
	})
	return used
}

// rule is one rule of a PrometheusRule.
type rule struct {
	Alert       string            `json:"alert"`
	Record      string            `json:"record"`
	Expr        string            `json:"expr"`
	For         string            `json:"for"`
	Labels      map[string]string `json:"labels"`
	Annotations map[string]string `json:"annotations"`
}

type prometheusRule struct {
	Spec struct {
		Groups []struct {
			Name  string `json:"name"`
			Rules []rule `json:"rules"`
		} `json:"groups"`
	} `json:"spec"`
}

// TestAlertsUseTheMetricsTheCodeExports renders config/prometheus, parses every rule's PromQL with Prometheus' own
// parser and checks the metric and label names against the code, and that the alerts the issue asks for exist
// with a severity and a summary.
func TestAlertsUseTheMetricsTheCodeExports(t *testing.T) {
	metrics := exportedMetrics(t)
	for _, must := range []string{"cnimedic_remediations_total", "cnimedic_phase_duration_seconds_bucket", "cnimedic_nodes_in_flight",
		"cnimedic_pending_approval_age_seconds", "cnimedic_storm_active"} {
		if _, ok := metrics[must]; !ok {
			t.Fatalf("the source scan found no %s (found %v): the scan is broken", must, metrics)
		}
	}
	rendered, err := manifests.Render(filepath.Join(repo.Root(), "config", "prometheus"))
	if err != nil {
		t.Fatal(err)
	}
	objs, err := Objects(rendered)
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[string]bool{}
	var alerts []string
	for _, o := range objs {
		kinds[o.GetKind()] = true
		if o.GetKind() != "PrometheusRule" {
			continue
		}
		var pr prometheusRule
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, &pr); err != nil {
			t.Fatal(err)
		}
		for _, g := range pr.Spec.Groups {
			for _, r := range g.Rules {
				checkExpr(t, g.Name+"/"+r.Alert+r.Record, r.Expr, metrics)
				if r.Alert == "" {
					continue
				}
				alerts = append(alerts, r.Alert)
				if r.Labels["severity"] == "" || r.Annotations["summary"] == "" || r.Annotations["description"] == "" {
					t.Errorf("alert %s needs a severity label and summary and description annotations", r.Alert)
				}
			}
		}
	}
	for _, kind := range []string{"Service", "ServiceMonitor", "PrometheusRule"} {
		if !kinds[kind] {
			t.Errorf("config/prometheus renders no %s", kind)
		}
	}
	for _, want := range []string{"CnimedicRepairFailed", "CnimedicNodeEscalated", "CnimedicStormActive", "CnimedicApprovalPendingTooLong", "CnimedicExecutorStuck"} {
		if !slices.Contains(alerts, want) {
			t.Errorf("no alert %s (have %v)", want, alerts)
		}
	}
}

// TestMonitoringStaysOptIn keeps the Prometheus Operator's kinds out of the default install: applying
// config/default must work on a cluster without their CRDs.
func TestMonitoringStaysOptIn(t *testing.T) {
	rendered, err := manifests.Render(filepath.Join(repo.Root(), "config", "default"))
	if err != nil {
		t.Fatal(err)
	}
	objs, err := Objects(rendered)
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range objs {
		if strings.HasPrefix(o.GetAPIVersion(), "monitoring.coreos.com/") {
			t.Errorf("config/default renders %s %s: monitoring must stay in config/prometheus", o.GetKind(), o.GetName())
		}
	}
}

// TestDashboardQueriesUseTheMetricsTheCodeExports parses each panel query of the Grafana dashboard (Grafana's
// range variables replaced by a duration) and checks its metrics as the alerts' are checked.
func TestDashboardQueriesUseTheMetricsTheCodeExports(t *testing.T) {
	metrics := exportedMetrics(t)
	raw, err := os.ReadFile(filepath.Join(repo.Root(), "deploy", "grafana", "cnimedic.json"))
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		UID    string `json:"uid"`
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("deploy/grafana/cnimedic.json: %v", err)
	}
	if dash.UID == "" || len(dash.Panels) == 0 {
		t.Fatal("the dashboard has no uid or no panels")
	}
	grafanaVars := strings.NewReplacer("$__rate_interval", "5m", "$__range", "1d", "$__interval", "1m")
	seen := map[string]bool{}
	for _, p := range dash.Panels {
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, q := range p.Targets {
			for _, m := range checkExpr(t, "panel "+p.Title, grafanaVars.Replace(q.Expr), metrics) {
				seen[strings.TrimSuffix(m, "_bucket")] = true
			}
		}
	}
	// Every cnimedic metric is on the dashboard somewhere.
	for name := range metrics {
		base := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(name, "_bucket"), "_sum"), "_count")
		if strings.HasPrefix(name, "cnimedic_") && !seen[name] && !seen[base] {
			t.Errorf("the dashboard shows no panel for %s", name)
		}
	}
}
