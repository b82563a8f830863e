package proxy

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/wxa-sidecar/wxa-sidecar/wechattest"
)

// fakeCodeImage is the image the fake WeChat draws for a getwxacodeunlimit
// body.
func fakeCodeImage(tb testing.TB, body string) []byte {
	tb.Helper()
	fake := wechattest.NewServer(wechattest.Options{})
	defer fake.Close()
	post := func(path, body string) []byte {
		resp, err := http.Post(fake.URL+path, "application/json", strings.NewReader(body))
		if err != nil {
			tb.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			tb.Fatal(err)
		}
		return b
	}
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	answer := post("/cgi-bin/stable_token", fmt.Sprintf(`{"grant_type":"client_credential","appid":%q,"secret":%q}`,
		wechattest.DemoAppID, wechattest.DemoSecret))
	if err := json.Unmarshal(answer, &tok); err != nil || tok.AccessToken == "" {
		tb.Fatalf("no token from the fake: %s", answer)
	}
	img := post(pathUnlimited+"?access_token="+url.QueryEscape(tok.AccessToken), body)
	if !isWholeImage(img) {
		tb.Fatalf("not an image: %q", truncate(img, 100))
	}
	return img
}

// BenchmarkDecodeCheck is what the miss path pays to refuse undecodable
// images: one DecodeConfig and one Decode per image WeChat sends. Hits
// never pay it.
func BenchmarkDecodeCheck(b *testing.B) {
	images := []struct{ name, body string }{
		{"jpeg-430px", `{"scene":"bench","page":"pages/index/index"}`},
		{"png-hyaline-430px", `{"scene":"bench","page":"pages/index/index","is_hyaline":true}`},
	}
	for _, im := range images {
		img := fakeCodeImage(b, im.body)
		b.Run(fmt.Sprintf("%s-%dB", im.name, len(img)), func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(img)))
			for b.Loop() {
				if err := checkDecodable(img); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
