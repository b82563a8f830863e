package main

import (
	"bytes"
	"encoding/json"
	"html/template"
	"mime"
	"net/http"
	"strconv"
	"strings"
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

// statusTable is one part of the status page: a list of objects, one row
// each, or one object, one row per field.
type statusTable struct {
	Title   string
	Columns []string
	Rows    [][]string
}

// statusPageData is what the page shows: the JSON's own fields, in the
// JSON's order, so the page says exactly what the JSON says.
type statusPageData struct {
	Version string
	Ready   bool
	Tables  []statusTable
}

var statusPage = template.Must(template.New("status").Parse(`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>wxa-sidecar {{.Version}}</title>
<style>
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; margin-bottom: 1.5em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
.ready { color: #176b2c; } .not-ready { color: #b00020; }
</style>
</head>
<body>
<h1>wxa-sidecar {{.Version}}</h1>
<p>{{if .Ready}}<strong class="ready">ready</strong>{{else}}<strong class="not-ready">not ready</strong>{{end}}
· the same facts as JSON: <code>curl /status</code></p>
{{range .Tables}}<h2>{{.Title}}</h2>
{{if .Rows}}<table>
<tr>{{range .Columns}}<th>{{.}}</th>{{end}}</tr>
{{range .Rows}}<tr>{{range .}}<td>{{.}}</td>{{end}}</tr>
{{end}}</table>
{{else}}<p>none</p>
{{end}}{{end}}</body>
</html>
`))

// writeStatusHTML renders report as the status page. Every value goes
// through html/template, so an error message from WeChat cannot inject
// markup.
func writeStatusHTML(w http.ResponseWriter, report statusReport) {
	data := statusPageData{Version: report.Version, Ready: report.Ready}
	titles := []string{"Apps", "Rate limits and cool-downs", "Cache", "Redis", "Durable store"}
	for i, value := range []any{report.Apps, report.Limits, report.Cache, report.Redis, report.Store} {
		if titles[i] == "Redis" && report.Redis == nil {
			continue // no shared tier: the JSON omits it too
		}
		if titles[i] == "Durable store" && report.Store == nil {
			continue
		}
		table, err := tableOf(titles[i], value)
		if err != nil {
			http.Error(w, "status: "+err.Error(), http.StatusInternalServerError)
			return
		}
		data.Tables = append(data.Tables, table)
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
					t.Columns = append(t.Columns, f.name)
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
		if json.Unmarshal(value, &s) == nil {
			text = s
		}
		fields = append(fields, field{name: key.(string), value: text})
	}
	return fields, nil
}
