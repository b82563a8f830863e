// Package neterr classifies the errors of a call over the network, for the
// parts that count or decide by them (upstream, proxy, fleet, store). It
// owns nothing else and imports no package of ours, so any of them may use
// it whatever else it must never import.
package neterr

import (
	"context"
	"errors"
	"net"
)

// IsTimeout reports an error of a call or read that ran out of time: a
// context's deadline, or a net.Error that says it timed out (a dial, read
// or write deadline). A cancelled context is not a timeout.
func IsTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout())
}
