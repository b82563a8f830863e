package wechattest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"image"
	"image/jpeg"
	"image/png"
	"net/url"
	"strconv"
	"strings"

	qrencode "github.com/skip2/go-qrcode"
)

// codeErr is a refusal of a code request, with WeChat's errcode.
type codeErr struct {
	errcode int
	errmsg  string
}

func (e codeErr) Error() string { return e.errmsg }

func refuse(code int) codeErr { return codeErr{code, errmsgs[code]} }

// sceneChars are the characters WeChat accepts in a scene.
const sceneChars = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ!#$&'()*+,/:;=?@-._~"

// CodeText is the text a code image from the fake decodes to: the
// endpoint's short name and its parameters, so a test can tell which
// request an image answers.
func CodeText(endpoint string, params url.Values) string {
	name := endpoint[strings.LastIndex(endpoint, "/")+1:]
	return "https://wxa.example/" + name + "?" + params.Encode()
}

// imageFor validates a code request as WeChat does and draws its image.
// The second result identifies the parameter set (for Num-Used).
func (s *Server) imageFor(path string, body []byte) ([]byte, string, error) {
	var req map[string]any
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	if err := dec.Decode(&req); err != nil || req == nil || dec.More() {
		return nil, "", refuse(47001)
	}
	str := func(k string) (string, bool, error) {
		v, ok := req[k]
		if !ok {
			return "", false, nil
		}
		s, isStr := v.(string)
		if !isStr {
			return "", true, refuse(47001)
		}
		return s, true, nil
	}
	boolean := func(k string) (bool, error) {
		v, ok := req[k]
		if !ok {
			return false, nil
		}
		b, isBool := v.(bool)
		if !isBool {
			return false, refuse(47001)
		}
		return b, nil
	}
	width := 430
	if v, ok := req["width"]; ok {
		n, err := strconv.ParseFloat(fmt.Sprint(v), 64)
		if err != nil {
			return nil, "", refuse(47001)
		}
		width = min(max(int(n), 280), 1280)
	}
	hyaline, err := boolean("is_hyaline")
	if err != nil {
		return nil, "", err
	}
	if _, err := boolean("auto_color"); err != nil {
		return nil, "", err
	}
	params := url.Values{"w": {strconv.Itoa(width)}}
	switch path {
	case "/wxa/getwxacodeunlimit":
		scene, _, err := str("scene")
		if err != nil {
			return nil, "", err
		}
		if scene == "" || len(scene) > 32 {
			return nil, "", refuse(40169)
		}
		for _, c := range scene {
			if !strings.ContainsRune(sceneChars, c) {
				return nil, "", refuse(40129)
			}
		}
		page, _, err := str("page")
		if err != nil {
			return nil, "", err
		}
		if strings.HasPrefix(page, "/") || strings.Contains(page, "?") {
			return nil, "", refuse(41030)
		}
		if _, ok := req["scancode_time"]; ok {
			return nil, "", refuse(85096)
		}
		env, _, err := str("env_version")
		if err != nil {
			return nil, "", err
		}
		if env != "" && env != "release" && env != "trial" && env != "develop" {
			return nil, "", refuse(40097)
		}
		if _, err := boolean("check_path"); err != nil {
			return nil, "", err
		}
		params.Set("scene", scene)
		params.Set("page", page)
		params.Set("env", env)
	default:
		p, _, err := str("path")
		if err != nil {
			return nil, "", err
		}
		limit := 1024
		if path == "/cgi-bin/wxaapp/createwxaqrcode" {
			limit = 128
		}
		if p == "" || len(p) > limit {
			return nil, "", refuse(40159)
		}
		params.Set("path", p)
	}
	img, err := draw(CodeText(path, params), width, hyaline)
	if err != nil {
		return nil, "", codeErr{-1, "system error"}
	}
	return img, path + "?" + sortedJSON(req), nil
}

// draw renders text as a QR code of width pixels: a JPEG, or a PNG for a
// transparent code (still labelled image/jpeg by the caller, as WeChat does).
func draw(text string, width int, asPNG bool) ([]byte, error) {
	q, err := qrencode.New(text, qrencode.Medium)
	if err != nil {
		return nil, err
	}
	img := q.Image(width)
	var buf bytes.Buffer
	if asPNG {
		err = png.Encode(&buf, img)
	} else {
		err = jpeg.Encode(&buf, toRGBA(img), &jpeg.Options{Quality: 92})
	}
	return buf.Bytes(), err
}

// toRGBA gives the JPEG encoder full-colour pixels, as WeChat's codes are.
func toRGBA(src image.Image) image.Image {
	b := src.Bounds()
	dst := image.NewRGBA(b)
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			dst.Set(x, y, src.At(x, y))
		}
	}
	return dst
}
