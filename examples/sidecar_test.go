package examples_test

import (
	"net/http"
	"net/http/httptest"

	"github.com/wxa-sidecar/wxa-sidecar/proxy"
	"github.com/wxa-sidecar/wxa-sidecar/token"
	"github.com/wxa-sidecar/wxa-sidecar/upstream"
	"github.com/wxa-sidecar/wxa-sidecar/wechattest"
)

// startSidecar runs the sidecar's API handler in front of base, with the
// fake's demo app, as `go run . --demo` does.
func startSidecar(base string) (url string, stop func()) {
	up, err := upstream.New(upstream.Options{Base: base})
	if err != nil {
		panic(err)
	}
	tokens, err := token.New(token.Options{AppID: wechattest.DemoAppID, Secret: wechattest.DemoSecret, BaseURL: base,
		Client: &http.Client{Transport: up.Transport()}})
	if err != nil {
		panic(err)
	}
	p, err := proxy.New(proxy.Options{Upstream: up,
		Apps: []proxy.App{{Secret: wechattest.DemoSecret, Tokens: tokens}}})
	if err != nil {
		panic(err)
	}
	srv := httptest.NewServer(p)
	return srv.URL, srv.Close
}
