package wechat

import (
	"slices"
	"testing"
)

func TestOnlyTheThreeTokenErrcodesReplay(t *testing.T) {
	for code, want := range map[Errcode]bool{40001: true, 40014: true, 42001: true,
		41001: false, 48001: false, 0: false, -1: false, 45011: false} {
		if got := code.IsTokenError(); got != want {
			t.Errorf("%d.IsTokenError() = %v, want %v", code, got, want)
		}
	}
}

func TestEndpointNamesAreBounded(t *testing.T) {
	for path, want := range map[string]string{
		PathUnlimited: PathUnlimited, "/wxa/unknown": EndpointOther, "/wxa/getwxacodeunlimit/": EndpointOther,
		"": EndpointOther, "/sns/jscode2session": "/sns/jscode2session",
	} {
		if got := Endpoint(path); got != want {
			t.Errorf("Endpoint(%q) = %q, want %q", path, got, want)
		}
	}
	known := KnownEndpoints()
	if !slices.IsSorted(known) || slices.Contains(known, EndpointOther) || len(known) != len(knownEndpoints) {
		t.Errorf("KnownEndpoints() = %v: want every known path, sorted, without %q", known, EndpointOther)
	}
	for _, p := range []string{PathUnlimited, PathWxacode, PathQRCode} {
		if !IsCodeEndpoint(p) || !IsKnownEndpoint(p) {
			t.Errorf("%s: want a known code endpoint", p)
		}
	}
}

func TestErrorSaysItsCode(t *testing.T) {
	if got := Errorf(LifetimeQuota, "max code count reached").Error(); got != "wechat: errcode 45029: max code count reached" {
		t.Errorf("got %q", got)
	}
}
