package config

import (
	"fmt"
	"net/netip"
	"strings"
)

// validatePublic reads what GET /qrcode on QRCODE_ADDR may spend:
// QRCODE_LIMIT, QRCODE_CLIENT_LIMIT and TRUSTED_PROXIES.
func (c *Config) validatePublic() []error {
	var p []error
	switch spec := strings.TrimSpace(c.QRCodeLimit); spec {
	case "":
	case "off":
		c.QRCodeShare = &RateLimit{}
	default:
		lim, why := parseRate(spec)
		if why != "" {
			p = append(p, fmt.Errorf("QRCODE_LIMIT: %q: %s (want N/UNIT[:BURST], e.g. 2500/m:25, or off)", spec, why))
		} else {
			c.QRCodeShare = &lim
		}
	}
	switch spec := strings.TrimSpace(c.QRCodeClientLimit); spec {
	case "off":
		c.ClientLimit = RateLimit{}
	default:
		lim, why := parseRate(spec)
		if why != "" {
			p = append(p, fmt.Errorf("QRCODE_CLIENT_LIMIT: %q: %s (want N/UNIT[:BURST], e.g. 60/m:20, or off)", spec, why))
		}
		c.ClientLimit = lim
	}
	c.TrustedProxies = nil
	for _, s := range c.TrustedProxiesRaw {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		prefix, err := parseTrusted(s)
		if err != nil {
			p = append(p, fmt.Errorf("TRUSTED_PROXIES: %q is neither a CIDR (10.0.0.0/8, fd00::/8) nor an address", s))
			continue
		}
		c.TrustedProxies = append(c.TrustedProxies, prefix)
	}
	if err := c.checkShare(); err != nil {
		p = append(p, err)
	}
	return p
}

// parseTrusted reads a CIDR, or an address as the prefix of itself alone;
// an IPv4 address in IPv6 form is the IPv4 one, as a peer's is read.
func parseTrusted(s string) (netip.Prefix, error) {
	if !strings.Contains(s, "/") {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return netip.Prefix{}, err
		}
		a = a.Unmap().WithZone("")
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	prefix, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	if a := prefix.Addr(); a.Is4In6() && prefix.Bits() >= 96 {
		prefix = netip.PrefixFrom(a.Unmap(), prefix.Bits()-96)
	}
	return prefix.Masked(), nil
}

// unlimitedPath is the one endpoint GET /qrcode asks.
const unlimitedPath = "/wxa/getwxacodeunlimit"

// checkShare refuses a QRCODE_LIMIT that would leave the API port nothing
// of getwxacodeunlimit's own limit under a flood of QRCODE_ADDR.
func (c *Config) checkShare() error {
	if c.QRCodeAddr == "" || c.QRCodeShare == nil || c.QRCodeShare.Rate <= 0 {
		return nil
	}
	endpoint, ok := c.Limits[unlimitedPath]
	if !ok {
		endpoint = RateLimit{Rate: c.UpstreamRPS, Burst: c.UpstreamBurst}
	}
	if endpoint.Rate > 0 && c.QRCodeShare.Rate >= endpoint.Rate {
		return fmt.Errorf("QRCODE_LIMIT: %q refills at %.4g/s, not below %s's own %.4g/s: the API port would keep nothing; lower it, or set off",
			c.QRCodeLimit, c.QRCodeShare.Rate, unlimitedPath, endpoint.Rate)
	}
	return nil
}
