// Command bare is the yardstick of bench/throughput.sh: a plain net/http
// server answering every request with the same bytes from memory, as fast
// as Go serves anything. The sidecar's cache hit is measured against it.
package main

import (
	"flag"
	"io"
	"log"
	"net/http"
	"os"
	"strconv"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:18090", "listen address")
	file := flag.String("file", "", "the bytes to answer with")
	flag.Parse()
	body, err := os.ReadFile(*file)
	if err != nil {
		log.Fatal(err)
	}
	length := strconv.Itoa(len(body))
	log.Fatal(http.ListenAndServe(*addr, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Read the request body as the sidecar must, so both do the same work
		// on the way in.
		io.Copy(io.Discard, r.Body)
		h := w.Header()
		h.Set("Content-Type", "image/jpeg")
		h.Set("Content-Length", length)
		w.Write(body)
	})))
}
