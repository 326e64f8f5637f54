//go:build bench

package bench

import (
	"bufio"
	"encoding/json"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"
)

// AuditEvent is what the benchmarks read of an audit event (audit.k8s.io/v1, metadata level).
type AuditEvent struct {
	Stage      string `json:"stage"`
	Verb       string `json:"verb"`
	RequestURI string `json:"requestURI"`
	User       struct {
		Username string `json:"username"`
	} `json:"user"`
	ObjectRef *struct {
		Resource    string `json:"resource"`
		Namespace   string `json:"namespace"`
		Name        string `json:"name"`
		Subresource string `json:"subresource"`
		APIGroup    string `json:"apiGroup"`
	} `json:"objectRef"`
	Received time.Time `json:"requestReceivedTimestamp"`
	Status   *struct {
		Code int `json:"code"`
	} `json:"responseStatus"`
}

// Resource is "group/resource[/subresource]" ("core" for the core group).
func (e AuditEvent) Resource() string {
	if e.ObjectRef == nil {
		return ""
	}
	g := e.ObjectRef.APIGroup
	if g == "" {
		g = "core"
	}
	r := g + "/" + e.ObjectRef.Resource
	if e.ObjectRef.Subresource != "" {
		r += "/" + e.ObjectRef.Subresource
	}
	return r
}

// IsWrite reports whether the request changes something.
func (e AuditEvent) IsWrite() bool {
	switch e.Verb {
	case "create", "update", "patch", "delete", "deletecollection", "apply":
		return true
	}
	return false
}

// ReadAudit reads the manager's requests received in [from, to) from the audit log, once each (the stage where
// the request completed, or started for watches).
func ReadAudit(path string, from, to time.Time) ([]AuditEvent, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []AuditEvent
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 256*1024), 16*1024*1024)
	for sc.Scan() {
		var e AuditEvent
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			continue
		}
		if e.User.Username != ManagerUser || e.Received.Before(from) || !e.Received.Before(to) {
			continue
		}
		if e.Stage == "ResponseComplete" || (e.Stage == "ResponseStarted" && e.Verb == "watch") || e.Stage == "Panic" {
			if e.Verb == "watch" && e.Stage == "ResponseComplete" {
				continue // counted when it started
			}
			out = append(out, e)
		}
	}
	return out, sc.Err()
}

// CountBy counts events by a key.
func CountBy(evs []AuditEvent, key func(AuditEvent) string) map[string]int {
	out := map[string]int{}
	for _, e := range evs {
		if k := key(e); k != "" {
			out[k]++
		}
	}
	return out
}

// FormatCounts prints counts as "k ×n, ..." sorted by key.
func FormatCounts(m map[string]int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, k+" ×"+strconv.Itoa(m[k]))
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}

// PodReads describes each distinct list or watch of pods the manager made: scope and selectors, without the
// resource version and timeouts. A cache of every pod would show as a cluster-wide list/watch without selector.
func PodReads(evs []AuditEvent) map[string]int {
	out := map[string]int{}
	for _, e := range evs {
		if e.ObjectRef == nil || e.ObjectRef.Resource != "pods" || e.ObjectRef.Subresource != "" || (e.Verb != "list" && e.Verb != "watch") {
			continue
		}
		u, err := url.Parse(e.RequestURI)
		if err != nil {
			continue
		}
		q := u.Query()
		scope := "all namespaces"
		if e.ObjectRef.Namespace != "" {
			scope = "namespace " + e.ObjectRef.Namespace
		}
		sel := []string{}
		if v := q.Get("labelSelector"); v != "" {
			sel = append(sel, "labelSelector="+v)
		}
		if v := q.Get("fieldSelector"); v != "" {
			// spec.nodeName=<node>: one node at a time; the node's name is not part of the shape.
			if strings.HasPrefix(v, "spec.nodeName=") {
				v = "spec.nodeName=<node>"
			}
			sel = append(sel, "fieldSelector="+v)
		}
		if len(sel) == 0 {
			sel = append(sel, "NO SELECTOR")
		}
		out[e.Verb+" "+scope+" "+strings.Join(sel, " ")]++
	}
	return out
}
