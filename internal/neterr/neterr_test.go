package neterr

import (
	"context"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"
)

func TestIsTimeout(t *testing.T) {
	// A real read past its deadline, as a connection reports it.
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	a.SetReadDeadline(time.Now().Add(-time.Second))
	_, readErr := a.Read(make([]byte, 1))
	if readErr == nil {
		t.Fatal("a read past its deadline succeeded")
	}
	expired, cancel := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancel()
	cancelled, cancel2 := context.WithCancel(context.Background())
	cancel2()

	for _, c := range []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"plain error", errors.New("connection refused"), false},
		{"context deadline", expired.Err(), true},
		{"wrapped context deadline", fmt.Errorf("fleet: %w", context.DeadlineExceeded), true},
		{"cancelled context", cancelled.Err(), false},
		{"read deadline", readErr, true},
		{"wrapped read deadline", &net.OpError{Op: "read", Net: "tcp", Err: readErr}, true},
		{"closed connection", net.ErrClosed, false},
	} {
		if got := IsTimeout(c.err); got != c.want {
			t.Errorf("IsTimeout(%s: %v) = %v, want %v", c.name, c.err, got, c.want)
		}
	}
}
