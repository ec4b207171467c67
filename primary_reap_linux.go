package clusternet

// Runs in the primary: reaping orphans as PID 1 or as a subreaper (Linux).
//
// A process whose parent exits is reparented to the nearest subreaper among
// its ancestors, or else to PID 1 of its PID namespace, which must wait for
// it or keep its zombie forever. Run's primary is that process when it is a
// container's entrypoint (PID 1), or a subreaper (WithSubreaper): the
// orphans of its workers' children come to it. It then reaps them, and only
// them: a child it started itself, a worker or what the application started
// with os/exec, belongs to the os.Process that will wait for it, and reaping
// it first would make that Wait fail with ECHILD and lose the status.
//
// "Started here" is "a pidfd open in this process refers to it". os (Go
// 1.23 and later) gives every os.StartProcess child, so every os/exec one, a
// pidfd at the clone itself (CLONE_PIDFD, installed before the child can
// run, let alone exit) and os.FindProcess opens one (pidfd_open); an
// os.Process closes it only once its Wait has reaped the child, or on
// Release. Workers are started with syscall.StartProcess and then
// os.FindProcess: pinChild asks that clone for a pidfd too, held until
// FindProcess has its own. An orphan was started by another process: no
// pidfd here refers to it. A sweep therefore
//
//  1. asks whether any child is waitable at all, and stops if none is
//     (waitid(P_ALL, WNOHANG|WNOWAIT), which reaps nothing);
//  2. lists the children (/proc/self/task/*/children, or the /proc/<pid>/stat
//     of every process, for its parent) and keeps the zombies
//     (waitid(P_PID, WNOHANG|WNOWAIT));
//  3. reads which pids the pidfds open here refer to (fstat of every
//     descriptor, then the "Pid:" line of each pidfd's fdinfo), and pins
//     each zombie that none refers to with a pidfd of its own;
//  4. reads them again, its own left out, and reaps each pinned zombie that
//     none refers to through its pidfd (waitid(P_PIDFD, WEXITED|WNOHANG)):
//     exactly that process, even if its pid has been reused meanwhile.
//
// The owner of a child holds its pidfd from the clone until its Wait has
// reaped it, so at step 4 an owned zombie is either seen owned, or already
// reaped (the waitid then fails with ECHILD, harmlessly). If a pid was
// reaped and reused between steps 2 and 3, the pin is the new process: seen
// owned at step 4 if it is owned, left alone by the WNOHANG waitid if it
// has not exited. Nothing ever waits on P_ALL without WNOWAIT.
//
// Reaping is off, with a warning, where ownership cannot be told: where os
// does not use pidfds (Linux before 5.4, or a seccomp profile that forbids
// them: os.Process then waits by pid), and where /proc is not this PID
// namespace's (its pids would not be ours). A child started without os
// (syscall.ForkExec, cgo's fork) holds no pidfd and looks like an orphan:
// under reaping, start children with os/exec.

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

const (
	// reapEvery is the sweep that catches what SIGCHLD did not: the kernel's
	// children lists may miss a child while others fork or exit (proc(5)),
	// and a sweep stops after maxReapPerSweep. A tick that finds no zombie
	// costs one waitid (see sweep).
	reapEvery = time.Second

	// maxReapPerSweep bounds the zombies one sweep pins and reaps, and so
	// the descriptors it holds at once; a sweep that stops there is followed
	// at once by another.
	maxReapPerSweep = 128
)

// WithSubreaper makes Run's primary a child subreaper
// (PR_SET_CHILD_SUBREAPER) while Run runs: the orphans of its workers'
// children are reparented to it rather than to PID 1, and it reaps them. A
// primary that is PID 1 (a container's entrypoint) reaps them without it.
// Only the orphans are reaped: workers, and children the application starts
// with os/exec, are still waited for by their owners. On Linux only.
func WithSubreaper() RunOption {
	return func(c *runConfig) { c.subreaper = true }
}

// startReaper starts reaping orphans when this process is PID 1 or
// subreaper is set, and returns the function that stops it: it ends the
// reaper's goroutine, reaps the zombies left and puts the subreaper
// attribute back as it was.
func startReaper(log *slog.Logger, subreaper bool) (stop func()) {
	self := os.Getpid()
	if self != 1 && !subreaper {
		return func() {}
	}
	r, err := newReaper(log, self)
	if err != nil {
		log.Warn("not reaping orphans", "err", err)
		return func() {}
	}
	unset := false
	if self != 1 {
		was, err := isSubreaper()
		if err == nil && !was {
			err = unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
			unset = err == nil
		}
		if err != nil {
			log.Warn("not reaping orphans", "err", fmt.Errorf("PR_SET_CHILD_SUBREAPER: %w", err))
			return func() {}
		}
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGCHLD)
	quit, done := make(chan struct{}), make(chan struct{})
	go r.loop(sigs, quit, done)
	log.Debug("reaping orphans", "pid1", self == 1, "subreaper", subreaper)
	return sync.OnceFunc(func() {
		signal.Stop(sigs)
		close(quit)
		<-done
		if unset {
			// First, so that no orphan comes after the last sweep.
			unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)
		}
		for r.sweep() {
		}
		log.Debug("stopped reaping orphans", "reaped", r.reaped)
	})
}

// reapable says why this process could not tell its own children from
// orphans by their pidfds, if it could not.
func reapable(self int) error {
	if err := pidfdsWork(); err != nil {
		return fmt.Errorf("os does not use pidfds here, so a child's owner cannot be told: %w", err)
	}
	// /proc/self is this process as /proc's PID namespace numbers it.
	if s, err := os.Readlink("/proc/self"); err != nil {
		return fmt.Errorf("no /proc: %w", err)
	} else if s != strconv.Itoa(self) {
		return fmt.Errorf("/proc is not this PID namespace's (/proc/self is %s, the pid %d)", s, self)
	}
	return nil
}

// pidfdsWork reports whether os holds a pidfd for every process it starts or
// finds: its own check (pidfd_open, waitid(P_PIDFD), clone(CLONE_PIDFD))
// decides whether os.FindProcess returns a Process with a handle.
var pidfdsWork = sync.OnceValue(func() error {
	p, err := os.FindProcess(os.Getpid())
	if err != nil {
		return err
	}
	defer p.Release()
	return p.WithHandle(func(uintptr) {})
})

// pinChild asks syscall.StartProcess for a pidfd of the new worker
// (CLONE_PIDFD) where os uses pidfds, and returns the function that closes
// it, which startProcess calls once os.FindProcess has opened the Process's
// own: the worker is then never without a pidfd here, so a reaper never
// takes it for an orphan, even if it dies before FindProcess.
func pinChild(sys *syscall.SysProcAttr) (release func()) {
	if sys.PidFD != nil || pidfdsWork() != nil {
		return func() {}
	}
	fd := -1 // syscall sets it only if the process starts
	sys.PidFD = &fd
	return func() {
		if fd >= 0 {
			unix.Close(fd)
		}
	}
}

// isSubreaper reports whether this process is a child subreaper already.
func isSubreaper() (bool, error) {
	var v int32
	_, _, errno := unix.Syscall6(unix.SYS_PRCTL, unix.PR_GET_CHILD_SUBREAPER, uintptr(unsafe.Pointer(&v)), 0, 0, 0, 0)
	if errno != 0 {
		return false, fmt.Errorf("PR_GET_CHILD_SUBREAPER: %w", errno)
	}
	return v != 0, nil
}

// reaper is the state of the goroutine that reaps; only it uses one.
type reaper struct {
	log      *slog.Logger
	self     int
	byParent bool // no /proc/self/task/*/children: find children by their stat
	reaped   int

	// What fstat says of a pidfd: in pidfs (Linux 6.9 and later), every
	// inode of the file system pidfd is; before, the one anonymous inode
	// that pidfds share with eventfds, epolls and others.
	pidfdDev, anonIno uint64
	pidfs             bool

	// Reused by every sweep.
	kids, zombies []int
	names         []string
	owned         map[int]bool
	buf, dents    []byte
}

// newReaper returns a reaper for this process (pid self), or why it could
// not tell its own children from orphans.
func newReaper(log *slog.Logger, self int) (*reaper, error) {
	if err := reapable(self); err != nil {
		return nil, err
	}
	r := &reaper{log: log, self: self, owned: make(map[int]bool), buf: make([]byte, 4096), dents: make([]byte, 8192)}
	// CONFIG_PROC_CHILDREN is set by every major distribution (CRIU needs it).
	_, err := os.Stat("/proc/self/task/" + strconv.Itoa(self) + "/children")
	r.byParent = err != nil
	// Without this, no pidfd would be seen, and every child would look
	// like an orphan.
	fd, err := unix.PidfdOpen(self, 0)
	if err != nil {
		return nil, fmt.Errorf("pidfd_open: %w", err)
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	var fs unix.Statfs_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, fmt.Errorf("fstat of a pidfd: %w", err)
	}
	if err := unix.Fstatfs(fd, &fs); err != nil {
		return nil, fmt.Errorf("fstatfs of a pidfd: %w", err)
	}
	r.pidfdDev, r.anonIno = uint64(st.Dev), uint64(st.Ino)
	r.pidfs = fs.Type == unix.PID_FS_MAGIC
	return r, nil
}

func (r *reaper) loop(sigs <-chan os.Signal, quit <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	t := time.NewTicker(reapEvery)
	defer t.Stop()
	for {
		if r.sweep() {
			select {
			case <-quit:
				return
			default:
				continue
			}
		}
		select {
		case <-quit:
			return
		case <-sigs:
		case <-t.C:
		}
	}
}

// sweep reaps the zombie children that no pidfd here refers to, at most
// maxReapPerSweep of them, and reports whether it stopped there.
//
// Measured (BenchmarkReapSweep; Linux 6.18 on a 2-core VM shared with other
// work, where even getppid costs 1.2 µs): 1.5-3 µs when no child is a
// zombie, one waitid, which is every tick and every sweep but those that
// follow a death (a worker's or an os/exec child's Wait is usually blocked
// in waitid already, and has reaped it); with 10 live children and one
// zombie whose owner has not waited for it yet, 250-290 µs, about 110
// system calls (5 threads' children lists, a waitid per child, the
// descriptors scanned), plus 2.3-3 µs per descriptor open in the primary;
// per orphan, 27-30 µs, of which a bare wait4 of the same zombie costs 6-8
// µs (the kernel freeing the process): 100 orphans in 3 ms.
func (r *reaper) sweep() (more bool) {
	if pid, _, err := waitid(unix.P_ALL, 0, unix.WEXITED|unix.WNOHANG|unix.WNOWAIT); err != nil || pid == 0 {
		return false // no child, or none waitable
	}
	r.kids = r.children(r.kids[:0])
	r.zombies = r.zombies[:0]
	for _, pid := range r.kids {
		if w, _, err := waitid(unix.P_PID, pid, unix.WEXITED|unix.WNOHANG|unix.WNOWAIT); err == nil && w == pid {
			r.zombies = append(r.zombies, pid)
		}
	}
	if len(r.zombies) == 0 || r.pidfdPids(nil) != nil {
		return false // reaped since; or /proc unreadable: not now
	}
	type pinned struct{ pid, fd int }
	var pins []pinned
	defer func() {
		for _, p := range pins {
			unix.Close(p.fd)
		}
	}()
	var mine map[int]bool
	for _, pid := range r.zombies {
		if r.owned[pid] {
			continue // owned: not even pinned, so that owned zombies never fill a sweep
		}
		if len(pins) == maxReapPerSweep {
			more = true
			break
		}
		// If pid has been reaped and reused since, fd is another process:
		// one that is owned is seen owned below, and one that is not a
		// zombie child is not reaped.
		fd, err := unix.PidfdOpen(pid, 0)
		if err != nil {
			continue // reaped since; or out of descriptors, and the next sweep tries again
		}
		if mine == nil {
			mine = make(map[int]bool)
		}
		pins = append(pins, pinned{pid, fd})
		mine[fd] = true
	}
	if len(pins) == 0 || r.pidfdPids(mine) != nil {
		return false
	}
	for _, p := range pins {
		if r.owned[p.pid] {
			continue
		}
		pid, st, err := waitid(unix.P_PIDFD, p.fd, unix.WEXITED|unix.WNOHANG)
		if err != nil || pid == 0 {
			continue // its owner reaped it in between, or it is not a zombie child
		}
		r.reaped++
		r.log.Debug("reaped an orphan", "pid", pid, "status", st.String())
	}
	return more
}

// children appends the pids of this process's children to kids.
func (r *reaper) children(kids []int) []int {
	if r.byParent {
		return r.childrenByParent(kids)
	}
	// Each thread has its own children: those it forked, and orphans
	// reparented to it.
	var err error
	if r.names, err = r.readDir("/proc/self/task", r.names[:0]); err != nil {
		return kids
	}
	for _, tid := range r.names {
		b, err := r.readFile("/proc/self/task/" + tid + "/children")
		if err != nil {
			continue // that thread has exited
		}
		for _, f := range bytes.Fields(b) {
			if pid, err := strconv.Atoi(string(f)); err == nil {
				kids = append(kids, pid)
			}
		}
	}
	return kids
}

// childrenByParent appends to kids every process in /proc whose parent is
// this process: one stat file read per process in the namespace.
func (r *reaper) childrenByParent(kids []int) []int {
	var err error
	if r.names, err = r.readDir("/proc", r.names[:0]); err != nil {
		return kids
	}
	for _, name := range r.names {
		pid, err := strconv.Atoi(name)
		if err != nil {
			continue
		}
		b, err := r.readFile("/proc/" + name + "/stat")
		if err != nil {
			continue
		}
		// "pid (comm) state ppid ...": comm may hold anything, so
		// look after the last ')'.
		f := bytes.Fields(b[bytes.LastIndexByte(b, ')')+1:])
		if len(f) > 1 {
			if ppid, err := strconv.Atoi(string(f[1])); err == nil && ppid == r.self {
				kids = append(kids, pid)
			}
		}
	}
	return kids
}

// pidfdPids sets r.owned to the pids that the pidfds open in this process
// refer to, less the descriptors in skip (the sweep's own).
//
// Every descriptor is looked at with fstat: 1 µs, where a readlink of
// /proc/self/fd/N costs 7.6 µs (the path walked through /proc). Only a
// pidfd's fdinfo is read, for its "Pid:" line (before pidfs, also the
// readlink of an anonymous inode's descriptor, which tells a pidfd from an
// eventfd).
func (r *reaper) pidfdPids(skip map[int]bool) error {
	clear(r.owned)
	var err error
	if r.names, err = r.readDir("/proc/self/fd", r.names[:0]); err != nil {
		return err
	}
	link := make([]byte, 32)
	for _, name := range r.names {
		fd, err := strconv.Atoi(name)
		if err != nil || skip[fd] {
			continue
		}
		var st unix.Stat_t
		if unix.Fstat(fd, &st) != nil || uint64(st.Dev) != r.pidfdDev {
			continue
		}
		if !r.pidfs {
			if uint64(st.Ino) != r.anonIno {
				continue
			}
			n, err := unix.Readlink("/proc/self/fd/"+name, link)
			if err != nil || string(link[:n]) != "anon_inode:[pidfd]" {
				continue
			}
		}
		b, err := r.readFile("/proc/self/fdinfo/" + name)
		if err != nil {
			continue // closed since
		}
		if _, after, ok := bytes.Cut(b, []byte("\nPid:\t")); ok {
			line, _, _ := bytes.Cut(after, []byte("\n"))
			if pid, err := strconv.Atoi(string(line)); err == nil && pid > 0 {
				r.owned[pid] = true
			}
		}
	}
	return nil
}

// readFile reads a small /proc file into r.buf, for one use.
func (r *reaper) readFile(name string) ([]byte, error) {
	fd, err := unix.Open(name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	n := 0
	for {
		if n == len(r.buf) {
			r.buf = slices.Grow(r.buf, len(r.buf))[:2*len(r.buf)]
		}
		m, err := unix.Read(fd, r.buf[n:])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, err
		}
		if m == 0 {
			return r.buf[:n], nil
		}
		n += m
	}
}

// readDir appends the names in dir to names, with getdents: os.Open would
// also try, and fail, to add the directory to the poller.
func (r *reaper) readDir(dir string, names []string) ([]string, error) {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return names, err
	}
	defer unix.Close(fd)
	for {
		n, err := unix.ReadDirent(fd, r.dents)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return names, err
		}
		if n <= 0 {
			return names, nil
		}
		_, _, names = unix.ParseDirent(r.dents[:n], -1, names)
	}
}

// siginfoChild is siginfo_t as waitid fills it for a child: si_signo,
// si_errno and si_code (their order differs on MIPS), padding on 64-bit
// systems, then si_pid, si_uid and si_status.
type siginfoChild struct {
	Signo     int32
	ErrnoCode [2]int32
	_         [is64bit]int32
	Pid       int32
	Uid       uint32
	Status    int32
	_         [128 - (6+is64bit)*4]byte
}

const is64bit = ^uint(0) >> 63 // 1 on 64-bit systems, 0 on 32-bit ones

// si_code for a child killed by a signal, with or without a core dump
// (asm-generic/siginfo.h).
const (
	cldKilled = 2
	cldDumped = 3
)

// siginfoChild is unix.Siginfo, with its fields named.
var _ [unsafe.Sizeof(unix.Siginfo{}) - unsafe.Sizeof(siginfoChild{})]byte
var _ [unsafe.Sizeof(siginfoChild{}) - unsafe.Sizeof(unix.Siginfo{})]byte

// waitid is waitid(2) for one child: the pid it reports (0 if none is
// waitable) and how that child ended.
func waitid(idtype, id, options int) (int, ExitStatus, error) {
	var si siginfoChild
	var err error
	for {
		err = unix.Waitid(idtype, id, (*unix.Siginfo)(unsafe.Pointer(&si)), options, nil)
		if !errors.Is(err, unix.EINTR) {
			break
		}
	}
	if err != nil {
		return 0, ExitStatus{}, err
	}
	// waitid sets si_errno to 0, so the one of the two that is not 0 is
	// si_code, whichever way round they are.
	st := ExitStatus{Code: int(si.Status)}
	if code := si.ErrnoCode[0] | si.ErrnoCode[1]; code == cldKilled || code == cldDumped {
		st = ExitStatus{Code: -1, Signal: syscall.Signal(si.Status)}
	}
	return int(si.Pid), st, nil
}
