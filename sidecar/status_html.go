package sidecar

import (
	"bytes"
	"encoding/json"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// prefersHTML reports an Accept header that lists text/html before
// application/json (a browser's), in the order given; q=0 lists nothing.
// Everything else, curl's */* included, gets JSON.
func prefersHTML(accept []string) bool {
	for _, header := range accept {
		for item := range strings.SplitSeq(header, ",") {
			mediaType, params, err := mime.ParseMediaType(strings.TrimSpace(item))
			if err != nil {
				continue
			}
			if q, err := strconv.ParseFloat(params["q"], 64); err == nil && q <= 0 {
				continue
			}
			switch mediaType {
			case "text/html":
				return true
			case "application/json":
				return false
			}
		}
	}
	return false
}

// statusTable is a generic part of the status page: a list of objects, one
// row each, or one object, one row per field. Sections the page has no
// layout of its own for (a later tier's) are shown this way.
type statusTable struct {
	Title   string
	Columns []string
	Rows    [][]string
}

// writeStatusHTML renders report as the status page, for a person: times
// as durations and instants (local and UTC+8), sizes in binary units, the
// hit ratio, each limit's free slots as a bar, trouble highlighted, and
// the last 15 minutes as small inline SVG charts. No script, no external
// asset. Every value goes through html/template, so an error message from
// WeChat cannot inject markup.
func writeStatusHTML(w http.ResponseWriter, report StatusReport, recent []interval, now time.Time) {
	data, err := pageOf(report, recent, now)
	if err != nil {
		http.Error(w, "status: "+err.Error(), http.StatusInternalServerError)
		return
	}
	var page bytes.Buffer
	if err := statusPage.Execute(&page, data); err != nil {
		http.Error(w, "status: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Write(page.Bytes())
}

// tableOf lays out value's JSON form: a list of objects as rows under the
// union of their fields, an object as field/value rows.
func tableOf(title string, value any) (statusTable, error) {
	raw, err := json.Marshal(value)
	if err != nil {
		return statusTable{}, err
	}
	t := statusTable{Title: title}
	if string(raw) == "null" {
		return t, nil
	}
	if bytes.HasPrefix(raw, []byte("[")) {
		var items []json.RawMessage
		if err := json.Unmarshal(raw, &items); err != nil {
			return statusTable{}, err
		}
		index := map[string]int{}
		var rows []map[string]string
		for _, item := range items {
			fields, err := orderedFields(item)
			if err != nil {
				return statusTable{}, err
			}
			row := map[string]string{}
			for _, f := range fields {
				if _, ok := index[f.name]; !ok {
					index[f.name] = len(t.Columns)
					t.Columns = append(t.Columns, strings.ReplaceAll(f.name, "_", " "))
				}
				row[f.name] = f.value
			}
			rows = append(rows, row)
		}
		for _, row := range rows {
			cells := make([]string, len(t.Columns))
			for name, i := range index {
				cells[i] = row[name]
			}
			t.Rows = append(t.Rows, cells)
		}
		return t, nil
	}
	if !bytes.HasPrefix(raw, []byte("{")) { // a number, a string, a bool
		t.Columns = []string{"value"}
		t.Rows = [][]string{{strings.Trim(string(raw), `"`)}}
		return t, nil
	}
	fields, err := orderedFields(raw)
	if err != nil {
		return statusTable{}, err
	}
	t.Columns = []string{"field", "value"}
	for _, f := range fields {
		t.Rows = append(t.Rows, []string{f.name, f.value})
	}
	return t, nil
}

type field struct{ name, value string }

// orderedFields lists a JSON object's fields in its own order, each value
// as text: a string as itself, anything else as its JSON.
func orderedFields(object json.RawMessage) ([]field, error) {
	dec := json.NewDecoder(bytes.NewReader(object))
	dec.UseNumber()
	if _, err := dec.Token(); err != nil { // {
		return nil, err
	}
	var fields []field
	for dec.More() {
		key, err := dec.Token()
		if err != nil {
			return nil, err
		}
		var value json.RawMessage
		if err := dec.Decode(&value); err != nil {
			return nil, err
		}
		text := string(value)
		var s string
		switch {
		case text == "null":
			text = ""
		case strings.HasPrefix(text, `"`) && json.Unmarshal(value, &s) == nil:
			text = s
		}
		fields = append(fields, field{name: key.(string), value: text})
	}
	return fields, nil
}
