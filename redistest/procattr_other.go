//go:build !linux

package redistest

import "syscall"

// dieWithParent is Linux's alone: elsewhere a server is stopped by Stop
// only.
func dieWithParent() *syscall.SysProcAttr { return nil }
