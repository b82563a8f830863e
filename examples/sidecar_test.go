package examples_test

import (
	"net/http/httptest"

	"github.com/wxa-sidecar/wxa-sidecar/proxy"
	"github.com/wxa-sidecar/wxa-sidecar/token"
	"github.com/wxa-sidecar/wxa-sidecar/wechattest"
)

// startSidecar runs the sidecar's API handler in front of upstream, with
// the fake's demo app, as `go run . --demo` does.
func startSidecar(upstream string) (url string, stop func()) {
	tokens, err := token.New(token.Options{AppID: wechattest.DemoAppID, Secret: wechattest.DemoSecret, BaseURL: upstream})
	if err != nil {
		panic(err)
	}
	p, err := proxy.New(proxy.Options{Upstream: upstream,
		Apps: []proxy.App{{Secret: wechattest.DemoSecret, Tokens: tokens}}})
	if err != nil {
		panic(err)
	}
	srv := httptest.NewServer(p)
	return srv.URL, func() { srv.Close(); p.Close() }
}
