package wechattest

import (
	"bytes"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"time"
)

// Fault is a way for the next calls to fail.
type Fault int

const (
	// FaultHTTP500 answers HTTP 500 with a short text body.
	FaultHTTP500 Fault = iota + 1
	// FaultBusy answers errcode -1, "system error".
	FaultBusy
	// FaultTruncatedImage announces the whole image's Content-Length, sends
	// half of it and closes the connection.
	FaultTruncatedImage
	// FaultDropConnection closes the connection without any response.
	FaultDropConnection
	// FaultErrcodeAsImage answers errcode JSON labelled image/jpeg.
	FaultErrcodeAsImage
	// FaultCorruptJPEG answers a body that starts FF D8 FF and ends FF D9,
	// as a JPEG does, with garbage between: whole by its markers, but not
	// decodable.
	FaultCorruptJPEG
	// FaultHugeDimensions answers a small, well-formed JPEG header that
	// declares 65000x65000 pixels: a decoder that trusts it allocates
	// gigabytes.
	FaultHugeDimensions
	// FaultRedirect answers 302 with Location set by FailNextRedirect (a
	// host of the test's choosing).
	FaultRedirect
)

type pendingFault struct {
	path        string
	n           int
	fault       Fault
	errcode     int
	contentType string // of an errcode answer; default WeChat's
	location    string // of FaultRedirect
}

// SetLatency delays every answer by d (a call cancelled meanwhile gets none).
func (s *Server) SetLatency(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.latency = d
}

// FailNext makes the next n calls to path ("" for any) fail with f.
func (s *Server) FailNext(path string, n int, f Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = append(s.faults, pendingFault{path: path, n: n, fault: f})
}

// FailNextErrcode makes the next n calls to path answer errcode (HTTP 200).
func (s *Server) FailNextErrcode(path string, n int, errcode int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = append(s.faults, pendingFault{path: path, n: n, errcode: errcode})
}

// FailNextErrcodeAs is FailNextErrcode with the answer labelled
// contentType, as older WeChat answers were (text/plain,
// application/json:UTF-8) or as a broken one might be (image/jpeg).
func (s *Server) FailNextErrcodeAs(path string, n int, errcode int, contentType string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = append(s.faults, pendingFault{path: path, n: n, errcode: errcode, contentType: contentType})
}

// FailNextRedirect makes the next n calls to path ("" for any) answer 302
// Found with Location location.
func (s *Server) FailNextRedirect(path string, n int, location string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = append(s.faults, pendingFault{path: path, n: n, fault: FaultRedirect, location: location})
}

func (s *Server) takeFault(path string) *pendingFault {
	for i := range s.faults {
		f := &s.faults[i]
		if f.n > 0 && (f.path == "" || f.path == path) {
			f.n--
			taken := *f
			if f.n == 0 {
				s.faults = slices.Delete(s.faults, i, i+1)
			}
			return &taken
		}
	}
	return nil
}

func (s *Server) fail(w http.ResponseWriter, r *http.Request, f *pendingFault, body []byte) {
	if f.errcode != 0 {
		if f.contentType != "" {
			w.Header().Set("Content-Type", f.contentType)
			fmt.Fprintf(w, `{"errcode":%d,"errmsg":"%s rid: %s"}`, f.errcode, errmsgs[f.errcode], rid())
			return
		}
		writeErr(w, f.errcode, errmsgs[f.errcode])
		return
	}
	switch f.fault {
	case FaultHTTP500:
		http.Error(w, "Internal Server Error", http.StatusInternalServerError)
	case FaultBusy:
		writeErr(w, -1, "system error")
	case FaultErrcodeAsImage:
		w.Header().Set("Content-Type", "image/jpeg")
		fmt.Fprintf(w, `{"errcode":-1,"errmsg":"system error rid: %s"}`, rid())
	case FaultTruncatedImage:
		img, _, err := s.imageFor(r.URL.Path, body)
		if err != nil {
			img = bytes.Repeat([]byte{0xFF, 0xD8, 0xFF}, 1000)
		}
		w.Header().Set("Content-Type", "image/jpeg")
		w.Header().Set("Content-Length", strconv.Itoa(len(img)))
		w.WriteHeader(http.StatusOK)
		w.Write(img[:len(img)/2])
		// Returning short of Content-Length makes net/http close the
		// connection: the client sees an unexpected EOF.
	case FaultCorruptJPEG:
		img := append([]byte{0xFF, 0xD8, 0xFF, 0xE0}, bytes.Repeat([]byte("not a jpeg scan "), 64)...)
		img = append(img, 0xFF, 0xD9)
		writeImage(w, img)
	case FaultHugeDimensions:
		writeImage(w, hugeJPEGHeader(65000, 65000))
	case FaultRedirect:
		http.Redirect(w, r, f.location, http.StatusFound)
	case FaultDropConnection:
		if hj, ok := w.(http.Hijacker); ok {
			if conn, _, err := hj.Hijack(); err == nil {
				conn.Close()
				return
			}
		}
		panic(http.ErrAbortHandler)
	}
}

// hugeJPEGHeader is the start of a baseline JPEG declaring width x height:
// SOI, a quantization table, SOF0, a Huffman table pair, SOS, a few bytes
// of scan and EOI. DecodeConfig reports its size without allocating it.
func hugeJPEGHeader(width, height int) []byte {
	b := []byte{0xFF, 0xD8}
	dqt := append([]byte{0xFF, 0xDB, 0x00, 0x43, 0x00}, bytes.Repeat([]byte{1}, 64)...)
	b = append(b, dqt...)
	b = append(b, 0xFF, 0xC0, 0x00, 0x0B, 0x08, byte(height>>8), byte(height), byte(width>>8), byte(width), 0x01, 0x01, 0x11, 0x00)
	// DC and AC tables with one code each.
	b = append(b, 0xFF, 0xC4, 0x00, 0x14, 0x00, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
	b = append(b, 0xFF, 0xC4, 0x00, 0x14, 0x10, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
	b = append(b, 0xFF, 0xDA, 0x00, 0x08, 0x01, 0x01, 0x00, 0x00, 0x3F, 0x00)
	b = append(b, bytes.Repeat([]byte{0x00}, 64)...)
	return append(b, 0xFF, 0xD9)
}
