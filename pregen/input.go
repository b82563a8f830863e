package pregen

import (
	"bufio"
	"bytes"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/wxa-sidecar/wxa-sidecar/wechat"
)

// Row is one code request read from the input.
type Row struct {
	// Line is the physical line where the record starts (a CSV header is
	// line 1).
	Line int
	// Name is the name column (CSV) or the top-level name (JSONL), which
	// the output file is named after; "" when absent.
	Name string
	// Body is the request body to send, a JSON object.
	Body []byte
	// Err is why the row cannot be sent, in WeChat's words (47001 for a
	// cell that is not what its column needs); nil for a row to validate.
	Err *wechat.Error
}

// UsageError is input the run cannot start with: an unknown or missing
// column, a header that is not one. It is exit status 2, like a bad flag.
type UsageError struct{ Msg string }

func (e *UsageError) Error() string { return e.Msg }

// columnKind is how a CSV cell becomes a JSON value.
type columnKind uint8

const (
	kindString columnKind = iota + 1
	kindNumber
	kindBool
	kindColor // "r,g,b" -> {"r":r,"g":g,"b":b}
	kindName  // the output file's name, not sent
)

// columns are each endpoint's CSV columns: WeChat's documented fields, and
// name. Anything else is refused, since a misspelt column would otherwise
// silently leave a field at its default in every code.
var columns = map[string]map[string]columnKind{
	wechat.PathUnlimited: {"scene": kindString, "page": kindString, "width": kindNumber, "env_version": kindString,
		"check_path": kindBool, "auto_color": kindBool, "is_hyaline": kindBool, "line_color": kindColor, "name": kindName},
	wechat.PathWxacode: {"path": kindString, "width": kindNumber, "env_version": kindString, "auto_color": kindBool,
		"is_hyaline": kindBool, "line_color": kindColor, "name": kindName},
	wechat.PathQRCode: {"path": kindString, "width": kindNumber, "name": kindName},
}

// requiredColumn is the field without which no row of an endpoint is valid:
// a header lacking it is a usage error, not a file of failed rows.
func requiredColumn(endpoint string) string {
	if endpoint == wechat.PathUnlimited {
		return "scene"
	}
	return "path"
}

// badCell is a row refused before validation: what WeChat answers a field
// of the wrong type with, and which cell it was.
func badCell(format string, args ...any) *wechat.Error {
	return wechat.Errorf(wechat.DataFormat, "data format error: "+fmt.Sprintf(format, args...))
}

const utf8BOM = "\xEF\xBB\xBF"

// ReadCSV reads the rows of a CSV file for endpoint (UTF-8, BOM and CRLF
// accepted): a header row naming the columns, then one request per
// record. An empty cell is an absent field; numbers become JSON numbers,
// booleans are read by strconv.ParseBool, line_color is "r,g,b". A cell
// that cannot be read so, or a record of the wrong length, makes a Row
// with Err; an unknown, repeated or missing required column is a
// *UsageError, and so is an empty file.
func ReadCSV(r io.Reader, endpoint string) ([]Row, error) {
	known, ok := columns[endpoint]
	if !ok {
		return nil, &UsageError{Msg: "unknown endpoint " + endpoint}
	}
	br := bufio.NewReader(r)
	if b, err := br.Peek(len(utf8BOM)); err == nil && string(b) == utf8BOM {
		br.Discard(len(utf8BOM))
	}
	cr := csv.NewReader(br)
	header, err := cr.Read()
	if errors.Is(err, io.EOF) {
		return nil, &UsageError{Msg: "the input is empty: want a header row naming the columns"}
	}
	if err != nil {
		return nil, &UsageError{Msg: "the header row: " + err.Error()}
	}
	kinds := make([]columnKind, len(header))
	seen := map[string]bool{}
	for i, name := range header {
		name = strings.TrimSpace(name)
		header[i] = name
		kinds[i] = known[name]
		switch {
		case kinds[i] == 0:
			return nil, &UsageError{Msg: fmt.Sprintf("unknown column %q for %s (known: %s)", name, endpoint,
				strings.Join(slices.Sorted(maps.Keys(known)), ", "))}
		case seen[name]:
			return nil, &UsageError{Msg: fmt.Sprintf("column %q appears twice", name)}
		}
		seen[name] = true
	}
	if need := requiredColumn(endpoint); !seen[need] {
		return nil, &UsageError{Msg: fmt.Sprintf("no %q column: every %s request needs one", need, endpoint)}
	}
	var rows []Row
	for {
		record, err := cr.Read()
		if errors.Is(err, io.EOF) {
			return rows, nil
		}
		var pe *csv.ParseError
		switch {
		case err == nil:
			line, _ := cr.FieldPos(0)
			rows = append(rows, csvRow(line, header, kinds, record))
		case errors.As(err, &pe):
			// A malformed record fails alone; the reader goes on with the
			// next line.
			msg := pe.Err.Error()
			if errors.Is(pe.Err, csv.ErrFieldCount) {
				msg = fmt.Sprintf("%d cells, the header has %d", len(record), len(header))
			}
			rows = append(rows, Row{Line: pe.StartLine, Err: badCell("CSV: %s", msg)})
		default:
			return nil, fmt.Errorf("read: %w", err)
		}
	}
}

// csvRow turns one record into a Row.
func csvRow(line int, header []string, kinds []columnKind, record []string) Row {
	row := Row{Line: line}
	req := map[string]any{}
	for i, cell := range record {
		if cell == "" {
			continue // absent: WeChat's default
		}
		name := header[i]
		switch kinds[i] {
		case kindName:
			row.Name = cell
		case kindString:
			req[name] = cell
		case kindNumber:
			n, ok := jsonNumber(cell)
			if !ok {
				row.Err = badCell("%s %q is not a number", name, cell)
				return row
			}
			req[name] = n
		case kindBool:
			b, err := strconv.ParseBool(strings.TrimSpace(cell))
			if err != nil {
				row.Err = badCell("%s %q is not a boolean", name, cell)
				return row
			}
			req[name] = b
		case kindColor:
			parts := strings.Split(cell, ",")
			if len(parts) != 3 {
				row.Err = badCell("%s %q is not r,g,b", name, cell)
				return row
			}
			color := map[string]any{}
			for j, k := range []string{"r", "g", "b"} {
				n, ok := jsonNumber(parts[j])
				if !ok {
					row.Err = badCell("%s %q is not r,g,b", name, cell)
					return row
				}
				color[k] = n
			}
			req[name] = color
		}
	}
	body, err := json.Marshal(req)
	if err != nil {
		// Only invalid UTF-8 gets here; WeChat refuses it as 47001 too.
		row.Err = badCell("%v", err)
		return row
	}
	row.Body = body
	return row
}

// jsonNumber reads s (spaces around it allowed) by JSON's number grammar.
func jsonNumber(s string) (json.Number, bool) {
	s = strings.TrimSpace(s)
	if s == "" || (s[0] != '-' && (s[0] < '0' || s[0] > '9')) {
		return "", false
	}
	dec := json.NewDecoder(strings.NewReader(s))
	dec.UseNumber()
	var n json.Number
	if err := dec.Decode(&n); err != nil || dec.More() || dec.InputOffset() != int64(len(s)) {
		return "", false
	}
	return n, true
}

// ReadJSONL reads one request body per line (blank lines skipped, a BOM
// and CRLF accepted). A top-level "name" (a string) names the output file
// and is removed from the body; the rest of the body is sent as written,
// so the sidecar's validation sees exactly what the line says. A line
// that is not a JSON object makes a Row with Err.
func ReadJSONL(r io.Reader) ([]Row, error) {
	br := bufio.NewReader(r)
	var rows []Row
	for line := 1; ; line++ {
		text, err := br.ReadBytes('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("read: %w", err)
		}
		if line == 1 {
			text = bytes.TrimPrefix(text, []byte(utf8BOM))
		}
		if trimmed := bytes.TrimSpace(text); len(trimmed) > 0 {
			rows = append(rows, jsonlRow(line, trimmed))
		}
		if err != nil {
			return rows, nil
		}
	}
}

// jsonlRow takes name out of one line's object, keeping every other member
// byte for byte.
func jsonlRow(line int, text []byte) Row {
	row := Row{Line: line}
	dec := json.NewDecoder(bytes.NewReader(text))
	dec.UseNumber()
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		row.Err = badCell("line is not a JSON object")
		return row
	}
	body := []byte{'{'}
	sawName := false
	for dec.More() {
		start := dec.InputOffset()
		tok, err := dec.Token()
		key, isKey := tok.(string)
		if err != nil || !isKey {
			row.Err = badCell("line is not a JSON object")
			return row
		}
		var value json.RawMessage
		if err := dec.Decode(&value); err != nil {
			row.Err = badCell("line is not a JSON object")
			return row
		}
		if key == "name" {
			var name string
			if sawName || json.Unmarshal(value, &name) != nil {
				row.Err = badCell("name must be one string")
				return row
			}
			row.Name, sawName = name, true
			continue
		}
		member := bytes.TrimLeft(text[start:dec.InputOffset()], " \t\r\n,")
		if len(body) > 1 {
			body = append(body, ',')
		}
		body = append(body, member...)
	}
	if tok, err := dec.Token(); err != nil || tok != json.Delim('}') {
		row.Err = badCell("line is not a JSON object")
		return row
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		row.Err = badCell("more than one JSON value on the line")
		return row
	}
	row.Body = append(body, '}')
	return row
}
