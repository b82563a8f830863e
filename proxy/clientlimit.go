package proxy

import (
	"net/netip"
	"strings"
)

// Who a client of QRCODE_ADDR is, for QRCODE_CLIENT_LIMIT.

// clientOf is the client a request comes from, as QRCODE_CLIENT_LIMIT
// counts it (clientGroup of its address): the peer remote, unless remote
// is a trusted proxy; then the rightmost address of X-Forwarded-For (xff,
// its header lines in order) that is not a trusted proxy. Each hop of
// X-Forwarded-For was written by the hop to its right, so the walk from
// the right stops at the first hop a trusted proxy did not vouch for:
// whatever lies to its left, the client wrote. A hop that is no address
// ends the walk too, and the last trusted hop stands for the client: a
// client can hide behind its proxy, never choose who it is.
func clientOf(remote string, xff []string, trusted []netip.Prefix) netip.Prefix {
	return clientGroup(clientAddr(remote, xff, trusted))
}

func clientAddr(remote string, xff []string, trusted []netip.Prefix) netip.Addr {
	addr, ok := parseHop(remote)
	if !ok || !isTrusted(addr, trusted) {
		return addr
	}
	for i := len(xff) - 1; i >= 0; i-- {
		line := xff[i]
		for line != "" {
			hop := line
			line = ""
			if j := strings.LastIndexByte(hop, ','); j >= 0 {
				hop, line = hop[j+1:], hop[:j]
			}
			hop = strings.TrimSpace(hop)
			if hop == "" {
				continue
			}
			a, ok := parseHop(hop)
			if !ok {
				return addr
			}
			addr = a
			if !isTrusted(a, trusted) {
				return a
			}
		}
	}
	// Every hop is a trusted proxy: the leftmost is as near the client as
	// anyone vouches for.
	return addr
}

// parseHop reads one address as a peer or a proxy writes it: 192.0.2.1,
// 2001:db8::1, [2001:db8::1], or any of them with a port. An IPv4 address
// in IPv6 form is the IPv4 address; a zone is dropped.
func parseHop(s string) (netip.Addr, bool) {
	a, err := netip.ParseAddr(s)
	if err != nil {
		ap, perr := netip.ParseAddrPort(s)
		switch {
		case perr == nil:
			a = ap.Addr()
		case len(s) > 2 && s[0] == '[' && s[len(s)-1] == ']':
			if a, err = netip.ParseAddr(s[1 : len(s)-1]); err != nil {
				return netip.Addr{}, false
			}
		default:
			return netip.Addr{}, false
		}
	}
	return a.Unmap().WithZone(""), true
}

func isTrusted(a netip.Addr, trusted []netip.Prefix) bool {
	for _, p := range trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// clientGroup is what one client's limit is kept for: an IPv4 address, or
// an IPv6 address's /64 (one subscriber's, or one host's: a host picks
// any address of its /64 at will). An address that did not parse is one
// group, the zero Prefix.
func clientGroup(a netip.Addr) netip.Prefix {
	switch {
	case a.Is4():
		return netip.PrefixFrom(a, 32)
	case a.Is6():
		p, _ := a.Prefix(64)
		return p
	}
	return netip.Prefix{}
}
