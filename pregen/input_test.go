package pregen

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/wxa-sidecar/wxa-sidecar/wechat"
)

func TestReadCSV(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		endpoint string
		want     []Row // Body as compact JSON; Err by its code alone
	}{
		{name: "types", in: "scene,page,width,check_path,is_hyaline,line_color,name\n" +
			`a=1,pages/x,280,false,1,"1, 2,3",Table 1` + "\n",
			want: []Row{{Line: 2, Name: "Table 1",
				Body: []byte(`{"check_path":false,"is_hyaline":true,"line_color":{"b":3,"g":2,"r":1},"page":"pages/x","scene":"a=1","width":280}`)}}},
		{name: "empty cell is absent", in: "scene,page,width\nb,,\n",
			want: []Row{{Line: 2, Body: []byte(`{"scene":"b"}`)}}},
		{name: "BOM and CRLF", in: "\xEF\xBB\xBFscene,width\r\nc,430\r\nd,\r\n",
			want: []Row{{Line: 2, Body: []byte(`{"scene":"c","width":430}`)}, {Line: 3, Body: []byte(`{"scene":"d"}`)}}},
		{name: "quoted field over two lines keeps the line it starts on", in: "scene,name\n\"e\",\"two\nlines\"\nf,\n",
			want: []Row{{Line: 2, Name: "two\nlines", Body: []byte(`{"scene":"e"}`)}, {Line: 4, Body: []byte(`{"scene":"f"}`)}}},
		{name: "quoted comma and quote", in: "scene,name\n\"g,h\",\"say \"\"hi\"\"\"\n",
			want: []Row{{Line: 2, Name: `say "hi"`, Body: []byte(`{"scene":"g,h"}`)}}},
		{name: "blank lines keep physical numbering", in: "scene\n\ni\n\nj\n",
			want: []Row{{Line: 3, Body: []byte(`{"scene":"i"}`)}, {Line: 5, Body: []byte(`{"scene":"j"}`)}}},
		{name: "bad numbers and booleans fail their row only", in: "scene,width,auto_color,line_color\n" +
			"k,wide,,\nl,0x10,,\nm,,yes,\nn,,,\"1,2\"\no,,,\"1,2,x\"\np,1e2,,\n",
			want: []Row{{Line: 2, Err: wechat.Errorf(wechat.DataFormat, "")}, {Line: 3, Err: wechat.Errorf(wechat.DataFormat, "")},
				{Line: 4, Err: wechat.Errorf(wechat.DataFormat, "")}, {Line: 5, Err: wechat.Errorf(wechat.DataFormat, "")},
				{Line: 6, Err: wechat.Errorf(wechat.DataFormat, "")}, {Line: 7, Body: []byte(`{"scene":"p","width":1e2}`)}}},
		{name: "missing and extra cells fail their row", in: "scene,width\nq\nr,280,x\ns,300\n",
			want: []Row{{Line: 2, Err: wechat.Errorf(wechat.DataFormat, "")}, {Line: 3, Err: wechat.Errorf(wechat.DataFormat, "")},
				{Line: 4, Body: []byte(`{"scene":"s","width":300}`)}}},
		{name: "bare quote fails its row", in: "scene\nt\"u\nv\n",
			want: []Row{{Line: 2, Err: wechat.Errorf(wechat.DataFormat, "")}, {Line: 3, Body: []byte(`{"scene":"v"}`)}}},
		{name: "createwxaqrcode", in: "path,width\npages/a?id=1,280\n", endpoint: wechat.PathQRCode,
			want: []Row{{Line: 2, Body: []byte(`{"path":"pages/a?id=1","width":280}`)}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			endpoint := tc.endpoint
			if endpoint == "" {
				endpoint = wechat.PathUnlimited
			}
			got, err := ReadCSV(strings.NewReader(tc.in), endpoint)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tc.want) {
				t.Fatalf("%d rows, want %d: %+v", len(got), len(tc.want), got)
			}
			for i, w := range tc.want {
				g := got[i]
				if g.Line != w.Line || g.Name != w.Name || !bytes.Equal(g.Body, w.Body) || (g.Err == nil) != (w.Err == nil) ||
					(w.Err != nil && g.Err.Code != w.Err.Code) {
					t.Errorf("row %d: got line %d name %q body %s err %v; want line %d name %q body %s err %v",
						i, g.Line, g.Name, g.Body, g.Err, w.Line, w.Name, w.Body, w.Err)
				}
			}
		})
	}
}

func TestReadCSVRefusesWhatWouldChangeEveryRow(t *testing.T) {
	for name, tc := range map[string]struct{ in, endpoint string }{
		"unknown column":              {"scene,widht\na,280\n", wechat.PathUnlimited},
		"column of another endpoint":  {"scene,path\na,b\n", wechat.PathUnlimited},
		"style column on qrcode":      {"path,is_hyaline\na,true\n", wechat.PathQRCode},
		"repeated column":             {"scene,scene\na,b\n", wechat.PathUnlimited},
		"missing the required column": {"page,width\npages/a,280\n", wechat.PathUnlimited},
		"path missing for getwxacode": {"width\n280\n", wechat.PathWxacode},
		"empty input":                 {"", wechat.PathUnlimited},
		"only a BOM":                  {"\xEF\xBB\xBF", wechat.PathUnlimited},
	} {
		_, err := ReadCSV(strings.NewReader(tc.in), tc.endpoint)
		var ue *UsageError
		if !errors.As(err, &ue) {
			t.Errorf("%s: err %v, want a usage error", name, err)
		}
	}
}

func TestReadJSONL(t *testing.T) {
	in := "\xEF\xBB\xBF{\"scene\":\"a\",\"name\":\"Table 1\",\"width\":280}\r\n" +
		"\n" +
		"{\"name\":\"first\", \"scene\" : \"b\" , \"x\":[1, 2]}\n" +
		"not json\n" +
		"{\"scene\":\"c\",\"name\":7}\n" +
		"{\"scene\":\"d\"} {\"scene\":\"e\"}\n" +
		"{\"scene\":\"f\",\"scene\":\"g\"}\n" +
		"{\"scene\":\"h\"}"
	rows, err := ReadJSONL(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		line       int
		name, body string
		bad        bool
	}{
		{1, "Table 1", `{"scene":"a","width":280}`, false},
		{3, "first", `{"scene" : "b","x":[1, 2]}`, false},
		{4, "", "", true},
		{5, "", "", true},
		{6, "", "", true},
		// Kept as written: wxacode refuses duplicate keys, as the sidecar does.
		{7, "", `{"scene":"f","scene":"g"}`, false},
		{8, "", `{"scene":"h"}`, false},
	}
	if len(rows) != len(want) {
		t.Fatalf("%d rows, want %d: %+v", len(rows), len(want), rows)
	}
	for i, w := range want {
		g := rows[i]
		if g.Line != w.line || g.Name != w.name || string(g.Body) != w.body || (g.Err != nil) != w.bad {
			t.Errorf("row %d: got line %d name %q body %s err %v; want line %d name %q body %s bad %v",
				i, g.Line, g.Name, g.Body, g.Err, w.line, w.name, w.body, w.bad)
		}
	}
}

// FuzzReadCSV: the reader never panics, every row it returns is either an
// error with WeChat's 47001 or a JSON object, and line numbers only grow.
func FuzzReadCSV(f *testing.F) {
	f.Add("scene,width,line_color,name\na,280,\"1,2,3\",x\n")
	f.Add("\xEF\xBB\xBFscene,is_hyaline\r\n\"q\"\"x\",true\r\n")
	f.Add("scene,page\n\"open\n")
	f.Add("scene\n,\n")
	f.Fuzz(func(t *testing.T, in string) {
		for _, endpoint := range []string{wechat.PathUnlimited, wechat.PathQRCode} {
			rows, err := ReadCSV(strings.NewReader(in), endpoint)
			var ue *UsageError
			if err != nil && !errors.As(err, &ue) {
				t.Fatalf("error that is not a usage error: %v", err)
			}
			last := 1
			for _, r := range rows {
				if r.Line <= last {
					t.Fatalf("line %d after %d", r.Line, last)
				}
				last = r.Line
				if r.Err != nil {
					if r.Err.Code != wechat.DataFormat || r.Body != nil {
						t.Fatalf("row error %v with body %q", r.Err, r.Body)
					}
					continue
				}
				var obj map[string]any
				if err := json.Unmarshal(r.Body, &obj); err != nil {
					t.Fatalf("body %q is not a JSON object: %v", r.Body, err)
				}
			}
		}
	})
}

// FuzzReadJSONL: never panics; a row's body is a JSON object without name.
func FuzzReadJSONL(f *testing.F) {
	f.Add("{\"scene\":\"a\",\"name\":\"n\"}\n{}\n")
	f.Add("{\"name\":\"a\",\"name\":\"b\"}\r\n[1]\n")
	f.Fuzz(func(t *testing.T, in string) {
		rows, err := ReadJSONL(strings.NewReader(in))
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rows {
			if r.Err != nil {
				continue
			}
			if !json.Valid(r.Body) {
				t.Fatalf("line %d: body %q is not JSON", r.Line, r.Body)
			}
			var obj map[string]json.RawMessage
			if json.Unmarshal(r.Body, &obj) == nil {
				if _, ok := obj["name"]; ok {
					t.Fatalf("line %d: name kept in %q", r.Line, r.Body)
				}
			}
		}
	})
}
