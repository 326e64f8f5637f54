// Package classify is `kubectl cnimedic classify` without the command line: it reads messages in the forms people
// have at hand (a saved `kubectl get events -o json`, JSON Lines, plain log lines), names each one's failure
// signature with the detection controller's own matcher, and says per node what cnimedic would do. It needs no
// cluster.
package classify

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
)

// Format is the input form Read detected.
type Format string

const (
	// FormatJSON is a stream of JSON values: an EventList (`kubectl get events -o json`), a JSON array, or JSON
	// Lines; each object is an Event or a record with at least reason and message.
	FormatJSON Format = "json"
	// FormatText is one message per line.
	FormatText Format = "text"
)

// Record is one message to classify.
type Record struct {
	// Reason is the event reason; empty when unknown (plain text), which lets every signature try.
	Reason  string
	Message string
	// NodeCondition is set for a node's Ready condition message rather than an event message.
	NodeCondition bool
	// Node is the node the evidence is about, when the input says.
	Node string
	// Pod is "namespace/name" when the event is about a pod.
	Pod string
	// Count is how many times the event occurred (at least 1).
	Count int
}

// maxRecordSize bounds one JSON value or text line; events are far smaller, a whole EventList is not.
const maxRecordSize = 64 << 20

// Read reads every record of r, detecting the format from its first non-blank byte: '{' or '[' is JSON, anything
// else is text.
func Read(r io.Reader) ([]Record, Format, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	for {
		b, err := br.Peek(1)
		if err == io.EOF {
			return nil, FormatText, nil
		}
		if err != nil {
			return nil, "", err
		}
		switch b[0] {
		case ' ', '\t', '\r', '\n':
			_, _ = br.ReadByte()
			continue
		case '{', '[':
			recs, err := readJSON(br)
			return recs, FormatJSON, err
		default:
			recs, err := readText(br)
			return recs, FormatText, err
		}
	}
}

func readText(r io.Reader) ([]Record, error) {
	var recs []Record
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), maxRecordSize)
	for sc.Scan() {
		line := strings.TrimRight(sc.Text(), "\r")
		if strings.TrimSpace(line) == "" {
			continue
		}
		recs = append(recs, Record{Message: line, Count: 1})
	}
	return recs, sc.Err()
}

// object is the union of the fields this command reads from an Event (core/v1 and events.k8s.io/v1), a List of
// them, or a JSON Lines record.
type object struct {
	Kind  string            `json:"kind"`
	Items []json.RawMessage `json:"items"`

	Reason string `json:"reason"`
	// Message is core/v1's text, Note events.k8s.io/v1's.
	Message *string `json:"message"`
	Note    *string `json:"note"`

	InvolvedObject   objectRef   `json:"involvedObject"`
	Regarding        objectRef   `json:"regarding"`
	Source           eventSource `json:"source"`
	DeprecatedSource struct {
		Host string `json:"host"`
	} `json:"deprecatedSource"`
	ReportingComponent  string `json:"reportingComponent"`
	ReportingController string `json:"reportingController"`
	ReportingInstance   string `json:"reportingInstance"`

	Count           int `json:"count"`
	DeprecatedCount int `json:"deprecatedCount"`
	Series          *struct {
		Count int `json:"count"`
	} `json:"series"`

	// Node lets a JSON Lines record name its node.
	Node string `json:"node"`
}

// eventSource is core/v1 Event.source. JSON Lines records may use "source" for something else (the signature
// corpus gives each message's origin there), so a value that is not an object is ignored.
type eventSource struct {
	Component string `json:"component"`
	Host      string `json:"host"`
}

func (s *eventSource) UnmarshalJSON(b []byte) error {
	if !bytes.HasPrefix(bytes.TrimSpace(b), []byte("{")) {
		return nil
	}
	type plain eventSource
	return json.Unmarshal(b, (*plain)(s))
}

type objectRef struct {
	Kind      string `json:"kind"`
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
}

// nodeConditionKind marks a JSON Lines record as a node's Ready condition message (the signature corpus uses it).
const nodeConditionKind = "node-condition"

func readJSON(r io.Reader) ([]Record, error) {
	dec := json.NewDecoder(r)
	var recs []Record
	for n := 1; ; n++ {
		var raw json.RawMessage
		if err := dec.Decode(&raw); errors.Is(err, io.EOF) {
			return recs, nil
		} else if err != nil {
			return nil, fmt.Errorf("JSON value %d: %w", n, err)
		}
		var values []json.RawMessage
		if bytes.HasPrefix(bytes.TrimSpace(raw), []byte("[")) {
			if err := json.Unmarshal(raw, &values); err != nil {
				return nil, fmt.Errorf("JSON value %d: %w", n, err)
			}
		} else {
			values = []json.RawMessage{raw}
		}
		for _, v := range values {
			got, err := records(v)
			if err != nil {
				return nil, fmt.Errorf("JSON value %d: %w", n, err)
			}
			recs = append(recs, got...)
		}
	}
}

// records turns one JSON value into records: the items of a list, or the object itself.
func records(raw json.RawMessage) ([]Record, error) {
	var o object
	if err := json.Unmarshal(raw, &o); err != nil {
		return nil, fmt.Errorf("want a JSON object: %w", err)
	}
	if o.Items != nil {
		var out []Record
		for i, item := range o.Items {
			got, err := records(item)
			if err != nil {
				return nil, fmt.Errorf("item %d: %w", i, err)
			}
			out = append(out, got...)
		}
		return out, nil
	}
	rec := Record{Reason: o.Reason, NodeCondition: o.Kind == nodeConditionKind, Node: o.node(), Pod: o.pod(), Count: o.count()}
	switch {
	case o.Message != nil:
		rec.Message = *o.Message
	case o.Note != nil:
		rec.Message = *o.Note
	default:
		// A JSON log line (containerd's, aws-cni's) has neither: classify its whole text, as for a text line.
		rec.Message = string(bytes.TrimSpace(raw))
	}
	return []Record{rec}, nil
}

// node is the node an event is about: a Node event's object, else the kubelet that reported it.
func (o *object) node() string {
	for _, ref := range []objectRef{o.InvolvedObject, o.Regarding} {
		if ref.Kind == "Node" && ref.Name != "" {
			return ref.Name
		}
	}
	switch {
	case o.Source.Host != "":
		return o.Source.Host
	case o.DeprecatedSource.Host != "":
		return o.DeprecatedSource.Host
	case o.ReportingInstance != "" && (o.ReportingComponent == "kubelet" || o.ReportingController == "kubelet"):
		// Only kubelet reports as its node; other controllers' instances are pods or hosts of their own.
		return o.ReportingInstance
	}
	return o.Node
}

func (o *object) pod() string {
	for _, ref := range []objectRef{o.InvolvedObject, o.Regarding} {
		if ref.Kind == "Pod" && ref.Name != "" {
			return ref.Namespace + "/" + ref.Name
		}
	}
	return ""
}

func (o *object) count() int {
	c := max(o.Count, o.DeprecatedCount)
	if o.Series != nil {
		c = max(c, o.Series.Count)
	}
	return max(c, 1)
}
