package sidecar

import "html/template"

// statusPage is the status page's markup and style: no script, no external
// asset; html/template escapes every value it is given.
var statusPage = template.Must(template.New("status").Parse(`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="refresh" content="30">
<title>wxa-sidecar {{.Version}}</title>
<style>
*, *::before, *::after { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, sans-serif; margin: 0 auto; padding: 1.2em 1.5em; color: #1d2327; max-width: 1240px; }
h1 { font-size: 1.4em; margin: 0 0 .2em; } h2 { font-size: 1.1em; margin: 1.4em 0 .5em; }
.muted { color: #646970; } .ok { color: #176b2c; font-weight: 600; } .bad { color: #b00020; font-weight: 600; }
.cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(260px, 1fr)); gap: .8em; }
.card { border: 1px solid #dcdcde; border-radius: 6px; padding: .7em .9em; min-width: 0; }
.card .big { font-size: 1.6em; font-weight: 600; }
.card.trouble { border-color: #b00020; background: #fff4f4; }
table { border-collapse: collapse; width: 100%; table-layout: fixed; }
th, td { border-bottom: 1px solid #e4e4e7; padding: .35em .5em; text-align: left; vertical-align: top; overflow-wrap: anywhere; }
th { background: #f6f7f7; font-weight: 600; }
tr.trouble td { background: #fff4f4; }
.bar { height: .7em; background: #e4e4e7; border-radius: 3px; overflow: hidden; margin-top: .25em; }
.bar span { display: block; height: 100%; background: #2271b1; }
.bar.low span { background: #b00020; }
svg { display: block; width: 100%; height: auto; background: #f6f7f7; border-radius: 3px; }
svg rect { fill: #2271b1; } .danger svg rect { fill: #b00020; }
td.id { overflow-wrap: normal; word-break: keep-all; }
.card.chart { display: flex; flex-direction: column; gap: .15em; }
.card.chart .total { font-size: 1.25em; }
.card.chart svg { margin-top: auto; }
.axis { display: flex; justify-content: space-between; font-size: .8em; color: #646970; }
code { background: #f6f7f7; padding: 0 .25em; border-radius: 3px; }
</style>
</head>
<body>
<h1>wxa-sidecar {{.Version}}</h1>
<p>{{if .Ready}}<span class="ok">ready</span>{{else}}<span class="bad">not ready</span>{{end}}
<span class="muted">· {{.Now}} · refreshes every 30 s · the same facts as JSON: <code>curl /status</code></span></p>

<div class="cards">
<div class="card"><div class="muted">Cache hit ratio</div><div class="big">{{.Cache.HitRatio}}</div>
<div class="muted">of {{.Cache.Lookups}} code lookups{{range .Cache.Results}} · {{.Count}} {{.Name}}{{end}}</div></div>
<div class="card"><div class="muted">Local cache</div><div class="big">{{.Cache.Used}}</div>
<div class="muted">of {{.Cache.Of}} · {{.Cache.Entries}} images</div>
<div class="bar"><span style="width: {{.Cache.UsedPercent}}%"></span></div></div>
{{with .Redis}}<div class="card{{if not .Up}} trouble{{end}}"><div class="muted">Redis (shared tier)</div>
<div class="big">{{if .Up}}<span class="ok">up</span>{{else}}<span class="bad">down</span>{{end}}</div>
<div class="muted">{{.Addr}} · breaker {{.Breaker}}</div></div>{{end}}
</div>

<h2>The last 15 minutes</h2>
<div class="cards">
{{range .Charts}}<div class="card chart{{if .Danger}} danger{{end}}"><div class="muted">{{.Title}}</div>
<div><strong class="total">{{.Total}}</strong> <span class="muted">in 15 min · peak {{.Peak}} per 10 s</span></div>
<svg viewBox="0 0 {{.Width}} {{.Height}}" role="img" aria-label="{{.Title}} per 10 seconds">{{range .Bars}}<rect x="{{printf "%.1f" .X}}" y="{{printf "%.1f" .Y}}" width="{{printf "%.1f" .W}}" height="{{printf "%.1f" .H}}"><title>{{.Tip}}</title></rect>{{end}}</svg>
<div class="axis"><span>15 min ago</span><span>now</span></div></div>
{{end}}</div>

<h2>Apps and their tokens</h2>
<table>
<tr><th style="width:16%">app</th><th style="width:10%">mode</th><th style="width:12%">token expires</th><th>fetched</th><th>next refresh</th><th style="width:15%">fetches · errors · adopted · forced today</th></tr>
{{range .Apps}}<tr{{if or .ExpiresSoon .NoToken .LastError}} class="trouble"{{end}}><td class="id">{{.App}}</td><td>{{.Mode}} <span class="muted">({{.Store}})</span></td>
<td>{{if .ExpiresSoon}}<span class="bad">{{.Expires}}</span>{{else}}{{.Expires}}{{end}}</td><td>{{.Fetched}}</td><td>{{.NextRefresh}}</td>
<td>{{.Fetches}} · {{.Errors}} · {{.Adopted}} · {{.ForceRefreshes}}</td></tr>
{{if .LastError}}<tr class="trouble"><td></td><td colspan="5"><span class="bad">last error</span> {{.LastErrorAt}}: {{.LastError}}</td></tr>{{end}}
{{end}}</table>

<h2>Rate limits and cool-downs</h2>
{{if .Limits}}<table>
<tr><th style="width:16%">app</th><th style="width:22%">endpoint</th><th style="width:8%">rate</th><th style="width:6%">burst</th><th style="width:14%">free slots</th><th>cool-down</th></tr>
{{range .Limits}}<tr{{if or .Cooldown .NearEmpty}} class="trouble"{{end}}><td class="id">{{.App}}</td><td>{{.Endpoint}}</td><td>{{.Rate}}</td><td>{{.Burst}}</td>
<td>{{.Slots}}{{if not .Unlimited}}<div class="bar{{if .NearEmpty}} low{{end}}"><span style="width: {{.SlotsPercent}}%"></span></div>{{end}}</td>
<td>{{if .Cooldown}}<span class="bad">{{.Cooldown}}</span>{{else}}<span class="muted">none</span>{{end}}</td></tr>
{{end}}</table>{{else}}<p class="muted">No call has gone upstream yet.</p>{{end}}

{{range .Others}}<h2>{{.Title}}</h2>
{{if .Rows}}<table>
<tr>{{range .Columns}}<th>{{.}}</th>{{end}}</tr>
{{range .Rows}}<tr>{{range .}}<td>{{.}}</td>{{end}}</tr>
{{end}}</table>
{{else}}<p class="muted">none</p>
{{end}}{{end}}
</body>
</html>
`))
