package wxacode

import "crypto/sha256"

// KeyVersion is hashed first into every key (KeyOf). Bump it whenever the
// canonical form of some request changes (a default, a normalization, the
// encoding), so that keys of the old form and the new never meet: a shared
// cache tier outlives a deploy, and an old entry found under a new key
// would serve one code for another.
const KeyVersion byte = 1

// KeyOf is the cache key of a code: sha256 of KeyVersion, appID, a zero
// byte, endpoint, a zero byte and the canonical request (from Canonical or
// FromQuery). The zero bytes keep the parts apart, since neither an app ID
// nor an endpoint contains one. It is a plain [32]byte, the size of
// cache.Key, so that this package and the cache need not know each other.
func KeyOf(appID, endpoint string, canonical []byte) [32]byte {
	h := sha256.New()
	h.Write([]byte{KeyVersion})
	for _, part := range []string{appID, endpoint} {
		h.Write([]byte(part))
		h.Write([]byte{0})
	}
	h.Write(canonical)
	var k [32]byte
	h.Sum(k[:0])
	return k
}
