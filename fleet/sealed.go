package fleet

import (
	"crypto/rand"
	"errors"
	"sync"

	"github.com/wxa-sidecar/wxa-sidecar/seal"
)

// Nothing read from Redis is believed unless it opens. Whoever can write
// to Redis (another tenant of a shared instance, a compromised client)
// could otherwise swap two codes' images, plant HTML under an image's
// key, hand the sidecar a token of theirs, or close an endpoint until the
// year 9999. So every value the tier writes is sealed (seal: AES-256-GCM
// under a key derived from the app's secret) with its full Redis key as
// the place, and every value it reads is opened at the key it was read
// from: a forged, moved or truncated value, or one sealed under another
// secret (a rotation, another deployment), is absent and counted, never an
// error to the caller. It is not deleted either: during a rolling upgrade
// or a secret rotation the replicas that can open it still use it, and the
// next fetch overwrites it.
//
// What a Lua script must compare (a GCRA instant, a cool-down's end, the
// force_refresh count) stays in clear beside the sealed part, bounded:
// beyond what the limit or the quota window allows it is unreadable too.

// sealer is what the tier needs of a seal.Keyring.
type sealer interface {
	Seal(app string, plaintext []byte, place string) ([]byte, error)
	Open(app string, sealed []byte, place string) ([]byte, error)
}

var _ sealer = (*seal.Keyring)(nil)

// processKeys is Options.Keys' default: a secret drawn once per process, a
// Box per app derived from it on first use.
var processKeys ownKeys

type ownKeys struct {
	once   sync.Once
	secret []byte
	mu     sync.Mutex
	boxes  map[string]*seal.Box
}

func (k *ownKeys) box(app string) (*seal.Box, error) {
	k.once.Do(func() {
		k.secret = make([]byte, 32)
		rand.Read(k.secret)
		k.boxes = map[string]*seal.Box{}
	})
	k.mu.Lock()
	defer k.mu.Unlock()
	if b := k.boxes[app]; b != nil {
		return b, nil
	}
	b, err := seal.New(k.secret, app, SealPurpose)
	if err != nil {
		return nil, err
	}
	k.boxes[app] = b
	return b, nil
}

func (k *ownKeys) Seal(app string, plaintext []byte, place string) ([]byte, error) {
	b, err := k.box(app)
	if err != nil {
		return nil, err
	}
	return b.Seal(plaintext, place), nil
}

func (k *ownKeys) Open(app string, sealed []byte, place string) ([]byte, error) {
	b, err := k.box(app)
	if err != nil {
		return nil, err
	}
	return b.Open(sealed, place)
}

// errNoKey: a value for an app the Keyring holds no key for is not
// written. Callers treat it as a failed write (a miss for the others).
var errNoKey = errors.New("fleet: no sealing key for this app: not written to Redis")

// seal seals plaintext for app at key.
func (c *Client) seal(app string, plaintext []byte, key string) ([]byte, error) {
	b, err := c.keys.Seal(app, plaintext, key)
	if err != nil {
		return nil, errNoKey
	}
	return b, nil
}

// open opens a value of kind read from key for app; false (and counted)
// when it does not open.
func (c *Client) open(kind, app string, sealed []byte, key string) ([]byte, bool) {
	plain, err := c.keys.Open(app, sealed, key)
	if err != nil {
		c.unsealed(kind)
		return nil, false
	}
	return plain, true
}

// unsealed counts a value of kind that was not believed.
func (c *Client) unsealed(kind string) {
	if c.hooks.Unsealed != nil {
		c.hooks.Unsealed(kind)
	}
}
