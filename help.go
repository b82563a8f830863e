package main

import (
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/wxa-sidecar/wxa-sidecar/config"
)

// helpWidth is where --help wraps its descriptions.
const helpWidth = 80

// writeHelp prints --help: what the binary does, its flags, and every
// variable the config reads, from the config's own tags.
func writeHelp(w io.Writer, flags *flag.FlagSet) {
	fmt.Fprint(w, `wxa-sidecar runs beside a backend and makes the WeChat mini-program server API
safe and cheap to call: a managed access_token, cached code images, rate limits,
Prometheus metrics. Point the backend's WeChat base URL at LISTEN_ADDR.

Usage:
  wxa-sidecar [flags]          run the sidecar, configured by the environment
  wxa-sidecar --demo           run against a built-in fake WeChat on loopback
  wxa-sidecar pregen --help    generate many code images ahead of time

Flags:
`)
	flags.VisitAll(func(f *flag.Flag) {
		if f.Name == "h" {
			return // listed with --help
		}
		name := "--" + f.Name
		if f.Name == "help" {
			name = "-h, --help"
		}
		fmt.Fprintf(w, "  %-12s %s\n", name, f.Usage)
	})
	fmt.Fprint(w, "\nEnvironment (durations as 300ms or 2m, sizes in bytes):\n")
	for _, v := range config.Variables() {
		if v.Default != "" {
			fmt.Fprintf(w, "  %s (default %s)\n", v.Name, v.Default)
		} else {
			fmt.Fprintf(w, "  %s\n", v.Name)
		}
		for _, line := range wrap(v.Help, helpWidth-6) {
			fmt.Fprintf(w, "      %s\n", line)
		}
	}
	fmt.Fprint(w, `  GOMEMLIMIT, GOGC
      Go's own; when GOMEMLIMIT is unset the sidecar derives one from
      CACHE_MAX_BYTES
  HTTPS_PROXY, NO_PROXY
      the upstream client honours them (one egress IP for WeChat's whitelist)

An invalid configuration prints one line per problem and exits 2.
More in README.md and docs/: configuration.md, api.md, operations.md, fleet.md.
`)
}

// wrap breaks text into lines of at most width bytes, at spaces.
func wrap(text string, width int) []string {
	var lines []string
	line := ""
	for _, word := range strings.Fields(text) {
		switch {
		case line == "":
			line = word
		case len(line)+1+len(word) <= width:
			line += " " + word
		default:
			lines = append(lines, line)
			line = word
		}
	}
	if line != "" {
		lines = append(lines, line)
	}
	return lines
}
