package seal

import (
	"bytes"
	"errors"
	"testing"
)

func mustBox(t *testing.T, secret, app, purpose string) *Box {
	t.Helper()
	b, err := New([]byte(secret), app, purpose)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestOpensWhatItSealedForThePlace(t *testing.T) {
	b := mustBox(t, "s3cret", "wx1", "redis")
	for _, plain := range [][]byte{nil, {}, []byte("x"), bytes.Repeat([]byte{0xFF}, 100000)} {
		sealed := b.Seal(plain, "wxa:wx1:img:ab")
		if len(sealed) != len(plain)+Overhead {
			t.Fatalf("sealed %d bytes into %d, want %d", len(plain), len(sealed), len(plain)+Overhead)
		}
		got, err := b.Open(sealed, "wxa:wx1:img:ab")
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		if !bytes.Equal(got, plain) {
			t.Fatalf("got %d bytes back, want %d", len(got), len(plain))
		}
	}
}

func TestSealingTwiceDiffers(t *testing.T) {
	b := mustBox(t, "s3cret", "wx1", "redis")
	if bytes.Equal(b.Seal([]byte("v"), "k"), b.Seal([]byte("v"), "k")) {
		t.Fatal("two seals of one value are equal: the nonce is not fresh")
	}
}

func TestRefusesWhatWasNotSealedHereForThisPlace(t *testing.T) {
	b := mustBox(t, "s3cret", "wx1", "redis")
	sealed := b.Seal([]byte("image A"), "wxa:wx1:img:aa")
	flipped := func(i int) []byte {
		c := bytes.Clone(sealed)
		c[i] ^= 1
		return c
	}
	cases := []struct {
		name   string
		box    *Box
		sealed []byte
		place  string
	}{
		{"moved to another key", b, sealed, "wxa:wx1:img:bb"},
		{"another secret (rotated)", mustBox(t, "new secret", "wx1", "redis"), sealed, "wxa:wx1:img:aa"},
		{"another purpose", mustBox(t, "s3cret", "wx1", "store"), sealed, "wxa:wx1:img:aa"},
		{"another app with the same secret", mustBox(t, "s3cret", "wx2", "redis"), sealed, "wxa:wx1:img:aa"},
		{"truncated", b, sealed[:len(sealed)-1], "wxa:wx1:img:aa"},
		{"empty", b, nil, "wxa:wx1:img:aa"},
		{"version byte", b, flipped(0), "wxa:wx1:img:aa"},
		{"nonce bit", b, flipped(3), "wxa:wx1:img:aa"},
		{"ciphertext bit", b, flipped(len(sealed) - tagSize - 1), "wxa:wx1:img:aa"},
		{"tag bit", b, flipped(len(sealed) - 1), "wxa:wx1:img:aa"},
		{"plaintext written in clear", b, []byte("FORGED&touser=attacker"), "wxa:wx1:img:aa"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := c.box.Open(c.sealed, c.place)
			if !errors.Is(err, ErrOpen) {
				t.Fatalf("Open = %q, %v; want ErrOpen", got, err)
			}
			if got != nil {
				t.Fatalf("Open returned %d bytes with its error", len(got))
			}
		})
	}
}

func TestNewRefusesEmptyInputs(t *testing.T) {
	if _, err := New(nil, "wx1", "redis"); err == nil {
		t.Error("empty secret accepted")
	}
	if _, err := New([]byte("s"), "wx1", ""); err == nil {
		t.Error("empty purpose accepted")
	}
}

func TestKeyringKeepsAppsApart(t *testing.T) {
	k, err := NewKeyring(map[string]string{"wx1": "one", "wx2": "two"}, "redis")
	if err != nil {
		t.Fatal(err)
	}
	sealed, err := k.Seal("wx1", []byte("token"), "wxa:wx1:token")
	if err != nil {
		t.Fatal(err)
	}
	if got, err := k.Open("wx1", sealed, "wxa:wx1:token"); err != nil || string(got) != "token" {
		t.Fatalf("Open = %q, %v; want token", got, err)
	}
	if _, err := k.Open("wx2", sealed, "wxa:wx1:token"); !errors.Is(err, ErrOpen) {
		t.Fatalf("another app's key opened it: %v", err)
	}
	if _, err := k.Seal("wx9", []byte("v"), "p"); !errors.Is(err, ErrUnknownApp) {
		t.Fatalf("Seal for an unknown app: %v, want ErrUnknownApp", err)
	}
	if _, err := k.Open("wx9", sealed, "p"); !errors.Is(err, ErrUnknownApp) {
		t.Fatalf("Open for an unknown app: %v, want ErrUnknownApp", err)
	}
	var zero *Keyring
	if zero.Box("wx1") != nil {
		t.Fatal("a nil Keyring holds a box")
	}
}

func BenchmarkSealOpen50KB(b *testing.B) {
	box, _ := New([]byte("s3cret"), "wx1", "redis")
	img := bytes.Repeat([]byte{0xAB}, 50_000)
	b.SetBytes(int64(len(img)))
	for b.Loop() {
		s := box.Seal(img, "wxa:wx1:img:ab")
		if _, err := box.Open(s, "wxa:wx1:img:ab"); err != nil {
			b.Fatal(err)
		}
	}
}
