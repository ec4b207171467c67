//go:build unix

package clusternet

// Runs in the primary: starting worker processes and reading how they ended
// (Unix).

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"syscall"
)

// startProcess starts a worker process. The descriptors are placed with
// syscall.StartProcess rather than os/exec, because os/exec asks every
// *os.File for Fd(), which puts a non-blocking socket (and the primary's
// copy of it, which shares the file description) into blocking mode.
// The child gets stdio as 0, 1, 2, Settings.ExtraFiles from 3, and the
// channel right after them.
func startProcess(s *Settings, env []string, stdio *childStdio, channel sysHandle) (*os.Process, error) {
	path, err := execPath(s.Exec)
	if err != nil {
		return nil, err
	}
	var files []uintptr
	for _, f := range append(stdio.files[:], s.ExtraFiles...) {
		fd := ^uintptr(0) // closed in the child
		if f != nil {
			var err error
			if fd, err = rawFD(f); err != nil {
				return nil, fmt.Errorf("descriptor %d for the worker: %w", len(files), err)
			}
		}
		files = append(files, fd)
	}
	env = append(env, envChannel+"="+strconv.Itoa(len(files)))
	files = append(files, uintptr(channel))

	attr := &syscall.ProcAttr{
		Dir:   s.Dir,
		Env:   env,
		Files: files,
		Sys:   &syscall.SysProcAttr{},
	}
	if s.Uid != nil || s.Gid != nil {
		cred := &syscall.Credential{Uid: uint32(os.Getuid()), Gid: uint32(os.Getgid())}
		if s.Uid != nil {
			cred.Uid = uint32(*s.Uid)
		}
		if s.Gid != nil {
			cred.Gid = uint32(*s.Gid)
		}
		attr.Sys.Credential = cred
	}
	setParentDeathSignal(attr.Sys)
	// A pidfd from the clone on, until FindProcess has opened its own: a
	// reaper (primary_reap_linux.go) never takes the worker for an orphan.
	defer pinChild(attr.Sys)()
	var pid int
	onForkThread(func() {
		pid, _, err = syscall.StartProcess(path, append([]string{s.Exec}, s.Args...), attr)
	})
	runtime.KeepAlive(stdio)
	runtime.KeepAlive(s.ExtraFiles)
	if err != nil {
		return nil, &os.PathError{Op: "fork/exec", Path: path, Err: err}
	}
	return os.FindProcess(pid)
}

// signalProcess sends sig to a worker process.
func signalProcess(p *os.Process, sig os.Signal) error { return p.Signal(sig) }

// terminateSignal is what Kill(nil) sends.
var terminateSignal os.Signal = syscall.SIGTERM

const envCaseInsensitive = false

// exitStatus reads the status the kernel reports; killedWith, what the
// primary sent, does not matter here: a worker may catch a signal and exit.
func exitStatus(ps *os.ProcessState, err error, _ os.Signal) ExitStatus {
	if err != nil || ps == nil {
		return ExitStatus{Code: -1}
	}
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return ExitStatus{Code: -1, Signal: ws.Signal()}
	}
	return ExitStatus{Code: ps.ExitCode()}
}
