package redistest

import "syscall"

// dieWithParent has the kernel kill a server when the process that started
// it dies: a test binary killed by -timeout, or a benchmark interrupted,
// leaves no redis-server behind.
func dieWithParent() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
