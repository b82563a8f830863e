package pregen

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
)

// Main is `wxa-sidecar pregen [flags] FILE`: it parses args (flags may
// come before or after FILE) and runs. It returns the exit status.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	o := Options{Stdout: stdout, Stderr: stderr}
	flags := flag.NewFlagSet("wxa-sidecar pregen", flag.ContinueOnError)
	flags.SetOutput(stderr)
	endpoint := flags.String("endpoint", "getwxacodeunlimit", "the code endpoint: getwxacodeunlimit, getwxacode or createwxaqrcode")
	flags.StringVar(&o.Format, "format", "", "csv or jsonl (default: jsonl for a .jsonl file, else csv)")
	flags.StringVar(&o.Sidecar, "sidecar", defaultSidecar, "the running sidecar's URL (…/apps/{appid} in multi-app mode)")
	flags.StringVar(&o.Out, "out", "", "write the images and manifest.csv to this directory")
	flags.StringVar(&o.Zip, "zip", "", "write the images and manifest.csv to this zip (and FILE.manifest.csv beside it)")
	flags.BoolVar(&o.DryRun, "dry-run", false, "ask the sidecar which codes it holds (only-if-cached) and say what the rest would spend")
	flags.IntVar(&o.Concurrency, "concurrency", defaultConcurrency, "requests in flight at once")
	flags.BoolVar(&o.Quiet, "quiet", false, "print only the summary")
	progress := flags.String("progress", "auto", "auto (a bar on a terminal, else a line every 5s), bar, lines or none")
	flags.Usage = func() {
		fmt.Fprintln(stderr, "usage: wxa-sidecar pregen [flags] FILE   (FILE - reads standard input)")
		fmt.Fprintln(stderr, "Generates a code image per row of FILE through a running sidecar; a second run skips what is done.")
		flags.PrintDefaults()
	}
	var positional []string
	for {
		if err := flags.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return ExitOK
			}
			return ExitUsage
		}
		args = flags.Args()
		if len(args) == 0 {
			break
		}
		positional = append(positional, args[0])
		args = args[1:]
	}
	if len(positional) != 1 {
		fmt.Fprintf(stderr, "pregen: want exactly one input FILE, got %d\n", len(positional))
		flags.Usage()
		return ExitUsage
	}
	o.Input = positional[0]
	path, ok := endpointNames[strings.TrimPrefix(*endpoint, "/")]
	if !ok {
		path = *endpoint
		if columns[path] == nil {
			fmt.Fprintf(stderr, "pregen: --endpoint %q: want getwxacodeunlimit, getwxacode or createwxaqrcode\n", *endpoint)
			return ExitUsage
		}
	}
	o.Endpoint = path
	mode, ok := progressModes[*progress]
	if !ok {
		fmt.Fprintf(stderr, "pregen: --progress %q: want auto, bar, lines or none\n", *progress)
		return ExitUsage
	}
	o.Progress = mode
	if o.Concurrency < 1 {
		fmt.Fprintln(stderr, "pregen: --concurrency must be at least 1")
		return ExitUsage
	}
	return Run(ctx, o)
}
