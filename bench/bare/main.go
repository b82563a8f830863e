// Command bare is the yardstick of bench/throughput.sh: a plain net/http
// server answering every request with the same bytes from memory, as fast
// as Go serves anything. The sidecar's cache hit is measured against it.
//
// With -like-sidecar it also sends the headers a sidecar hit carries and
// runs with the sidecar's server timeouts: what any Go server answering
// with the same HTTP would pay, so the benchmark can tell that cost apart
// from the sidecar's own work.
package main

import (
	"crypto/sha256"
	"encoding/base64"
	"flag"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"strconv"
	"time"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:18090", "listen address")
	file := flag.String("file", "", "the bytes to answer with")
	likeSidecar := flag.Bool("like-sidecar", false, "send a sidecar hit's headers, with its server timeouts")
	flag.Parse()
	body, err := os.ReadFile(*file)
	if err != nil {
		log.Fatal(err)
	}
	length := strconv.Itoa(len(body))
	sum := sha256.Sum256(body)
	etag := `"` + base64.RawURLEncoding.EncodeToString(sum[:16]) + `"`
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Read the request body as the sidecar must, so both do the same work
		// on the way in.
		io.Copy(io.Discard, r.Body)
		h := w.Header()
		h.Set("Content-Type", "image/jpeg")
		h.Set("Content-Length", length)
		if *likeSidecar {
			h.Set("Cache-Status", "wxa-sidecar; hit")
			h.Set("Content-Disposition", `attachment; filename="wxacode.jpeg"`)
			h.Set("Etag", etag)
		}
		w.Write(body)
	})}
	if *likeSidecar {
		srv.ReadHeaderTimeout = 10 * time.Second
		srv.IdleTimeout = 2 * time.Minute
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	log.Fatal(srv.Serve(ln))
}
