// Package seal seals values kept where others can write (the fleet's
// Redis, a durable store's bucket): each value is encrypted and
// authenticated with AES-256-GCM under a key derived by HKDF-SHA256 from
// the app's secret and a purpose label, with the place the value is kept
// (its full Redis key, its object name) as associated data. A value that
// was moved to another place, forged, truncated, or sealed under another
// secret or purpose fails to open: for its reader it is simply absent.
//
// It owns the format and the derivation, nothing else: it imports nothing
// of ours, never logs, and never sees a place's contents but the bytes it
// is handed. It must never return plaintext it could not authenticate.
package seal

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
)

// version is the first byte of every sealed value: a reader that finds
// another treats the value as unreadable (another format, a miss).
const version byte = 1

// Overhead is how many bytes Seal adds to a plaintext: the version byte,
// the nonce and GCM's tag.
const Overhead = 1 + nonceSize + tagSize

const (
	nonceSize = 12
	tagSize   = 16
)

// ErrOpen is the one error Open returns: the value is not one this Box
// sealed for that place. Callers treat it as absent, never as a fault of
// their caller.
var ErrOpen = errors.New("seal: value does not open (forged, moved, truncated, or sealed under another key)")

// Box seals and opens values for one app and one purpose. It is safe for
// concurrent use.
type Box struct {
	aead cipher.AEAD
}

// New derives a Box from secret (the app's secret, or a key of the
// store's own) for purpose, a label that keeps keys for different uses
// apart (a value sealed for Redis never opens as a store object). appID
// is mixed into the derivation too, so two apps sharing a secret still
// get different keys.
func New(secret []byte, appID, purpose string) (*Box, error) {
	if len(secret) == 0 {
		return nil, errors.New("seal: empty secret")
	}
	if purpose == "" {
		return nil, errors.New("seal: empty purpose")
	}
	key, err := hkdf.Key(sha256.New, secret, nil, "wxa-sidecar seal v1\x00"+purpose+"\x00"+appID, 32)
	if err != nil {
		return nil, fmt.Errorf("seal: derive: %w", err)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("seal: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("seal: %w", err)
	}
	return &Box{aead: aead}, nil
}

// Seal returns plaintext sealed for place (the full key or object name the
// value will be kept under). Each call draws a fresh random nonce, so
// sealing the same value twice gives different bytes.
func (b *Box) Seal(plaintext []byte, place string) []byte {
	out := make([]byte, 1+nonceSize, Overhead+len(plaintext))
	out[0] = version
	if _, err := rand.Read(out[1 : 1+nonceSize]); err != nil {
		// crypto/rand.Read never returns an error since Go 1.24 (it
		// crashes the program instead); kept for older toolchains' vet.
		panic("seal: " + err.Error())
	}
	return b.aead.Seal(out, out[1:1+nonceSize], plaintext, []byte(place))
}

// Open returns the plaintext of a value Seal made for place, or ErrOpen.
// The result is a new slice; sealed is not modified.
func (b *Box) Open(sealed []byte, place string) ([]byte, error) {
	if len(sealed) < Overhead || sealed[0] != version {
		return nil, ErrOpen
	}
	nonce := sealed[1 : 1+nonceSize]
	plain, err := b.aead.Open(nil, nonce, sealed[1+nonceSize:], []byte(place))
	if err != nil {
		return nil, ErrOpen
	}
	return plain, nil
}

// Keyring holds one Box per app for one purpose. The zero value holds no
// app. It is safe for concurrent use once built.
type Keyring struct {
	boxes map[string]*Box
}

// NewKeyring derives a Box for each app (appid → secret) for purpose.
func NewKeyring(secrets map[string]string, purpose string) (*Keyring, error) {
	k := &Keyring{boxes: make(map[string]*Box, len(secrets))}
	for app, secret := range secrets {
		b, err := New([]byte(secret), app, purpose)
		if err != nil {
			return nil, fmt.Errorf("seal: app %s: %w", app, err)
		}
		k.boxes[app] = b
	}
	return k, nil
}

// ErrUnknownApp is what a Keyring answers for an app it holds no key for:
// such a value can be neither written nor believed.
var ErrUnknownApp = errors.New("seal: no key for this app")

// Box returns app's Box, or nil.
func (k *Keyring) Box(app string) *Box {
	if k == nil {
		return nil
	}
	return k.boxes[app]
}

// Seal seals plaintext for app at place.
func (k *Keyring) Seal(app string, plaintext []byte, place string) ([]byte, error) {
	b := k.Box(app)
	if b == nil {
		return nil, ErrUnknownApp
	}
	return b.Seal(plaintext, place), nil
}

// Open opens a value sealed for app at place: ErrOpen if it does not open,
// ErrUnknownApp if app has no key.
func (k *Keyring) Open(app string, sealed []byte, place string) ([]byte, error) {
	b := k.Box(app)
	if b == nil {
		return nil, ErrUnknownApp
	}
	return b.Open(sealed, place)
}
