//go:build windows

package clusternet

// Runs in the primary: starting worker processes, the job object that ends
// them with the primary, and how they ended (Windows).

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"unsafe"

	"golang.org/x/sys/windows"
)

// startProcess starts a worker process. The child gets stdio, the channel
// and Settings.ExtraFiles through syscall.StartProcess's explicit handle
// list, so that it inherits those and nothing else. Windows has no
// descriptor numbers: inherited handles keep their values, so the worker
// finds the channel at the value in CLUSTERNET_CHANNEL, and ExtraFiles at
// the values they have in the primary (which the primary must tell it).
// The worker joins the primary's job object, which ends it when the primary
// exits.
func startProcess(s *Settings, env []string, stdio *childStdio, channel sysHandle) (*os.Process, error) {
	if s.Uid != nil || s.Gid != nil {
		return nil, fmt.Errorf("Settings.Uid and Settings.Gid: running a worker as another user on Windows: %w", errors.ErrUnsupported)
	}
	if s.Dir != "" {
		// As os.StartProcess does: CreateProcess reports a missing
		// directory as an invalid one, which says less.
		if _, err := os.Stat(s.Dir); err != nil {
			if pe, ok := errors.AsType[*os.PathError](err); ok {
				pe.Op = "chdir"
			}
			return nil, err
		}
	}
	path, err := execPath(s.Exec)
	if err != nil {
		return nil, err
	}
	var files []uintptr
	for i, f := range stdio.files {
		var h uintptr // 0: none
		if f != nil {
			var err error
			if h, err = rawFD(f); err != nil {
				return nil, fmt.Errorf("standard handle %d for the worker: %w", i, err)
			}
		}
		files = append(files, h)
	}
	inherit := []syscall.Handle{syscall.Handle(channel)}
	for i, f := range s.ExtraFiles {
		if f == nil {
			continue
		}
		h, err := rawFD(f)
		if err != nil {
			return nil, fmt.Errorf("Settings.ExtraFiles[%d]: %w", i, err)
		}
		if !slices.Contains(inherit, syscall.Handle(h)) {
			inherit = append(inherit, syscall.Handle(h))
		}
	}
	env = append(env, envChannel+"="+strconv.FormatUint(uint64(channel), 10))
	attr := &syscall.ProcAttr{
		Dir:   s.Dir,
		Env:   env,
		Files: files,
		Sys:   &syscall.SysProcAttr{HideWindow: s.WindowsHide, AdditionalInheritedHandles: inherit},
	}
	restore, err := makeInheritable(inherit)
	if err != nil {
		return nil, err
	}
	pid, ph, err := syscall.StartProcess(path, append([]string{s.Exec}, s.Args...), attr)
	restore()
	runtime.KeepAlive(stdio)
	runtime.KeepAlive(s.ExtraFiles)
	if err != nil {
		return nil, &os.PathError{Op: "fork/exec", Path: path, Err: err}
	}
	proc := windows.Handle(ph)
	defer windows.CloseHandle(proc)
	p, err := os.FindProcess(pid)
	if err == nil {
		err = joinWorkerJob(proc)
	}
	if err != nil {
		windows.TerminateProcess(proc, 1)
		if p != nil {
			p.Release()
		}
		return nil, err
	}
	return p, nil
}

var procGetHandleInformation = windows.NewLazySystemDLL("kernel32.dll").NewProc("GetHandleInformation")

// makeInheritable marks hs inheritable, as the explicit handle list asks,
// and returns a function that puts their flags back. Other processes
// started meanwhile inherit them only if they were started without such a
// list, which Go never does.
func makeInheritable(hs []syscall.Handle) (restore func(), err error) {
	var was []bool
	restore = func() {
		for i, inherited := range was {
			if !inherited {
				windows.SetHandleInformation(windows.Handle(hs[i]), windows.HANDLE_FLAG_INHERIT, 0)
			}
		}
	}
	for _, h := range hs {
		var flags uint32
		if r, _, err := procGetHandleInformation.Call(uintptr(h), uintptr(unsafe.Pointer(&flags))); r == 0 {
			restore()
			return nil, fmt.Errorf("handle %#x for the worker: %w", h, os.NewSyscallError("GetHandleInformation", err))
		}
		if err := windows.SetHandleInformation(windows.Handle(h), windows.HANDLE_FLAG_INHERIT, windows.HANDLE_FLAG_INHERIT); err != nil {
			restore()
			return nil, fmt.Errorf("handle %#x for the worker: %w", h, os.NewSyscallError("SetHandleInformation", err))
		}
		was = append(was, flags&windows.HANDLE_FLAG_INHERIT != 0)
	}
	return restore, nil
}

// workerJob is the job object that every worker joins. Its handle is never
// closed: the system closes it when the primary exits, however it exits,
// and JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE then ends every worker, as the
// parent-death signal does on Linux. Processes that workers start leave the
// job silently, so that only the workers are tied to the primary's life.
var workerJob = sync.OnceValues(func() (windows.Handle, error) {
	job, err := windows.CreateJobObject(nil, nil)
	if err != nil {
		return 0, os.NewSyscallError("CreateJobObject", err)
	}
	var info windows.JOBOBJECT_EXTENDED_LIMIT_INFORMATION
	info.BasicLimitInformation.LimitFlags = windows.JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE | windows.JOB_OBJECT_LIMIT_SILENT_BREAKAWAY_OK
	if _, err := windows.SetInformationJobObject(job, windows.JobObjectExtendedLimitInformation,
		uintptr(unsafe.Pointer(&info)), uint32(unsafe.Sizeof(info))); err != nil {
		windows.CloseHandle(job)
		return 0, os.NewSyscallError("SetInformationJobObject", err)
	}
	return job, nil
})

// joinWorkerJob puts a worker in the job. Between its start and this, the
// worker is already covered: it exits when its channel reaches end of file.
func joinWorkerJob(proc windows.Handle) error {
	job, err := workerJob()
	if err != nil {
		return err
	}
	return os.NewSyscallError("AssignProcessToJobObject", windows.AssignProcessToJobObject(job, proc))
}

// signalProcess ends a worker process whatever sig is, as Node does on
// Windows for SIGTERM, SIGINT and SIGKILL: Windows has no signals to send.
// Once Wait has returned, os.Process reports EINVAL, not os.ErrProcessDone.
func signalProcess(p *os.Process, sig os.Signal) error {
	if err := p.Kill(); err != nil {
		if errors.Is(err, syscall.EINVAL) {
			return os.ErrProcessDone
		}
		return err
	}
	return nil
}

// terminateSignal is what Kill(nil) sends: Windows cannot deliver SIGTERM,
// and os.Process.Signal knows only os.Kill, which terminates the process.
var terminateSignal os.Signal = os.Kill

// envCaseInsensitive: Windows environment variable names ignore case.
const envCaseInsensitive = true

// exitStatus reports the exit code. Windows has no signals: a worker ended
// by Kill was terminated with exit code 1, as os.Process.Kill does.
// exitStatus reports a worker that the primary killed as killed by the
// signal it was sent: Windows records no signals, and os.Process.Kill ends a
// process with exit code 1.
func exitStatus(ps *os.ProcessState, err error, killedWith os.Signal) ExitStatus {
	if err != nil || ps == nil {
		return ExitStatus{Code: -1}
	}
	if killedWith != nil && ps.ExitCode() == 1 {
		return ExitStatus{Code: -1, Signal: killedWith}
	}
	return ExitStatus{Code: ps.ExitCode()}
}
