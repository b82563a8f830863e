package examples_test

import (
	"bytes"
	"fmt"
	"net/http"
	"net/url"

	"github.com/silenceper/wechat/v2"
	"github.com/silenceper/wechat/v2/cache"
	miniConfig "github.com/silenceper/wechat/v2/miniprogram/config"
	"github.com/silenceper/wechat/v2/miniprogram/qrcode"
	"github.com/silenceper/wechat/v2/util"

	"github.com/wxa-sidecar/wxa-sidecar/wechattest"
)

// sidecarTransport sends every request the SDK makes, whatever host its
// URL names (silenceper's are absolute https://api.weixin.qq.com URLs),
// to the sidecar instead.
type sidecarTransport struct {
	sidecar *url.URL
	next    http.RoundTripper
}

func (t sidecarTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	out := req.Clone(req.Context())
	out.URL.Scheme = t.sidecar.Scheme
	out.URL.Host = t.sidecar.Host
	out.Host = ""
	return t.next.RoundTrip(out)
}

// Example_silenceper shows silenceper/wechat/v2 pointed at the sidecar:
// one line replaces the SDK's HTTP client, and everything else — its own
// token fetching included — works unchanged.
func Example_silenceper() {
	fake := wechattest.NewServer(wechattest.Options{})
	defer fake.Close()
	sidecarURL, stop := startSidecar(fake.URL) // in production: http://127.0.0.1:8080
	defer stop()

	sidecar, _ := url.Parse(sidecarURL)
	util.DefaultHTTPClient = &http.Client{Transport: sidecarTransport{sidecar, http.DefaultTransport}}
	defer func() { util.DefaultHTTPClient = http.DefaultClient }()

	for _, stable := range []bool{false, true} {
		mini := wechat.NewWechat().GetMiniProgram(&miniConfig.Config{
			AppID:       wechattest.DemoAppID,
			AppSecret:   wechattest.DemoSecret,
			Cache:       cache.NewMemory(),
			UseStableAK: stable,
		})
		img, err := mini.GetQRCode().GetWXACodeUnlimit(qrcode.QRCoder{Scene: "id=42", Page: "pages/index/index"})
		fmt.Printf("stable token: %v, error: %v, JPEG: %v\n", stable, err, bytes.HasPrefix(img, []byte{0xFF, 0xD8, 0xFF}))
	}
	// The SDK's token requests were answered by the sidecar, never by WeChat.
	fmt.Println("WeChat's classic token endpoint called:", fake.Calls("/cgi-bin/token"))
	// Output:
	// stable token: false, error: <nil>, JPEG: true
	// stable token: true, error: <nil>, JPEG: true
	// WeChat's classic token endpoint called: 0
}
