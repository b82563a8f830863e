package config

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
)

func TestPublicPortDefaults(t *testing.T) {
	c, err := Load(base())
	if err != nil {
		t.Fatal(err)
	}
	if c.QRCodeShare != nil {
		t.Errorf("QRCODE_LIMIT unset: %v, want nil (half the endpoint's limit)", *c.QRCodeShare)
	}
	// 60/m:20: a burst of 20, then 40 a minute.
	if want := (RateLimit{Rate: 40.0 / 60, Burst: 20}); c.ClientLimit != want {
		t.Errorf("QRCODE_CLIENT_LIMIT default: %+v, want %+v", c.ClientLimit, want)
	}
	if len(c.TrustedProxies) != 0 {
		t.Errorf("TRUSTED_PROXIES default: %v, want none", c.TrustedProxies)
	}
}

func TestPublicPortSettings(t *testing.T) {
	c, err := Load(with("QRCODE_ADDR", ":8081", "QRCODE_LIMIT", "600/m:20", "QRCODE_CLIENT_LIMIT", "6/m:5",
		"TRUSTED_PROXIES", " 10.0.0.0/8, fd00::/8,192.0.2.1, 10.1.2.3/8 ,::ffff:198.51.100.0/120"))
	if err != nil {
		t.Fatal(err)
	}
	if c.QRCodeShare == nil || *c.QRCodeShare != (RateLimit{Rate: 580.0 / 60, Burst: 20}) {
		t.Errorf("QRCODE_LIMIT=600/m:20: %v", c.QRCodeShare)
	}
	if c.ClientLimit != (RateLimit{Rate: 1.0 / 60, Burst: 5}) {
		t.Errorf("QRCODE_CLIENT_LIMIT=6/m:5: %+v", c.ClientLimit)
	}
	want := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("fd00::/8"),
		netip.MustParsePrefix("192.0.2.1/32"), netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("198.51.100.0/24")}
	if !slices.Equal(c.TrustedProxies, want) {
		t.Errorf("TRUSTED_PROXIES: %v, want %v", c.TrustedProxies, want)
	}
	c, err = Load(with("QRCODE_LIMIT", "off", "QRCODE_CLIENT_LIMIT", "off"))
	if err != nil {
		t.Fatal(err)
	}
	if c.QRCodeShare == nil || c.QRCodeShare.Rate != 0 || c.ClientLimit.Rate != 0 {
		t.Errorf("off: share %v, client %+v; want both zero", c.QRCodeShare, c.ClientLimit)
	}
}

func TestPublicPortProblems(t *testing.T) {
	cases := []struct {
		env  []string
		want string
	}{
		{[]string{"QRCODE_LIMIT", "5/x"}, `QRCODE_LIMIT: "5/x": N must be`},
		{[]string{"QRCODE_LIMIT", "10/s:10"}, `QRCODE_LIMIT: "10/s:10": BURST must be`},
		{[]string{"QRCODE_CLIENT_LIMIT", "many"}, `QRCODE_CLIENT_LIMIT: "many": N must be`},
		{[]string{"TRUSTED_PROXIES", "10.0.0.0/8,proxy.local"}, `TRUSTED_PROXIES: "proxy.local" is neither a CIDR`},
		{[]string{"TRUSTED_PROXIES", "10.0.0.0/33"}, `TRUSTED_PROXIES: "10.0.0.0/33"`},
		// A share as large as the endpoint's own limit leaves the API port
		// nothing.
		{[]string{"QRCODE_ADDR", ":8081", "QRCODE_LIMIT", "5000/m:50"}, `QRCODE_LIMIT: "5000/m:50" refills at 82.5/s, not below /wxa/getwxacodeunlimit's own 82.5/s`},
		{[]string{"QRCODE_ADDR", ":8081", "UPSTREAM_LIMITS", "/wxa/getwxacodeunlimit=20/s:10", "QRCODE_LIMIT", "11/s:1"},
			`QRCODE_LIMIT: "11/s:1" refills at 10/s, not below /wxa/getwxacodeunlimit's own 10/s`},
	}
	for _, c := range cases {
		_, err := Load(with(c.env...))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: error %v, want one containing %q", c.env, err, c.want)
			continue
		}
		if n := strings.Count(err.Error(), "\n") + 1; n != 1 {
			t.Errorf("%v: %d lines, want one:\n%v", c.env, n, err)
		}
	}
	// Without QRCODE_ADDR a large share harms nobody.
	if _, err := Load(with("QRCODE_LIMIT", "5000/m:50")); err != nil {
		t.Errorf("QRCODE_LIMIT without QRCODE_ADDR: %v", err)
	}
}
