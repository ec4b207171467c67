package clusternet

// Runs in the primary: starting workers, Linux's part (the parent-death
// signal, and forking from one locked thread).

import (
	"runtime"
	"sync"
	"syscall"
)

// setParentDeathSignal makes the kernel kill the worker when the primary
// dies, so that no worker outlives it even if it never reads its channel.
func setParentDeathSignal(a *syscall.SysProcAttr) { a.Pdeathsig = syscall.SIGKILL }

// The parent-death signal fires when the thread that forked the child exits,
// not the process, and the Go runtime may end threads. So every fork happens
// on one thread that never exits: a goroutine locked to it for the life of
// the primary, started with the first Fork.
var forkThread struct {
	once sync.Once
	fns  chan func()
}

func onForkThread(fn func()) {
	forkThread.once.Do(func() {
		forkThread.fns = make(chan func())
		go func() {
			runtime.LockOSThread() // never unlocked: the thread must outlive every worker
			for f := range forkThread.fns {
				f()
			}
		}()
	})
	done := make(chan struct{})
	forkThread.fns <- func() { fn(); close(done) }
	<-done
}
