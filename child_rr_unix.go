//go:build unix

package clusternet

// Runs in a worker: reading one connection from a handoff socket (Unix),
// never one the worker has no descriptor for.
//
// Why reserves. A connection comes as a descriptor attached to a record
// (SCM_RIGHTS), and taking it costs the worker two descriptor slots: one
// that recvmsg installs, and one for net.FileConn's dup (the first is closed
// after). If recvmsg finds no free slot, Linux reads the record anyway, sets
// MSG_CTRUNC and drops the descriptor: the connection is gone, the client
// sees EOF, and the primary, seeing the queue shrink, counts it as accepted;
// if the dup fails, the connection is closed. Measured at `ulimit -n 256`:
// 22 to 84 of 5 000 connections lost, none under SchedNone, where accept(2)
// fails with EMFILE and leaves the connection in the kernel's queue.
//
// So the worker never reads a record it cannot adopt. It keeps two reserve
// descriptors (rrReserve: close-on-exec duplicates of a handoff socket, one
// pair for the process, shared by every SchedRR listener): before a read
// both must be held, taken again if missing; if they cannot be, Accept
// returns EMFILE without reading, a temporary error that net/http's Serve
// backs off from as it does for a plain listener at its limit. The record
// stays queued: the primary takes it back once the queue has not moved for
// rrStaleAfter and gives it to another worker, or keeps it until a worker
// has room. If both are held, one is closed so that recvmsg has a slot, and
// the other is lent to the connection received so that its dup has one:
// connFromHandle closes it only if the dup fails with EMFILE, and gives it
// back after. The lock is held from the check to the end of recvmsg, a
// system call that does not wait: Accepts of different listeners wait for
// one another only there.
//
// Cost, per Accept: two system calls more, a close and a dup
// (F_DUPFD_CLOEXEC), on the 17 that take a connection from the record to
// a *net.TCPConn and close it (strace); elsewhere than on Linux a third, an
// fcntl for close-on-exec. BenchmarkRRAdopt, side by side with a plain read
// on a 2-core VM shared with other work: 1.08x (median of 12 interleaved
// pairs, in time and in CPU time; best against best 1.01x). End to end
// (BenchmarkHandoff/rr, before and after) the difference is within the
// noise. Two descriptors per worker that listens under SchedRR, for its
// life.
//
// What is left: another thread of the worker (the application opening a
// file, dialing) can take the freed slot between the close and recvmsg, a
// few system calls' time, or the lent one between its close and the dup.
// Then the connection is lost as before, but never silently: recvConn
// returns errConnLost for a record whose descriptor the kernel dropped
// (MSG_CTRUNC, the record consumed), and Accept reports every connection
// lost in the worker with an error event and in the worker's Stats (Handed
// counts it, Accepted does not); after a MSG_CTRUNC the reserves are taken
// afresh, so that one loss is not followed by others. TestRRFDLimit checks
// that a worker at its limit loses none, TestRRFDLimitLost that such a
// loss is reported.
//
// Reading with MSG_PEEK, which leaves a record whose descriptor could not
// be installed in the queue, would need no reserves, but the record must
// then be read again to consume it, and the primary may take the queue back
// in between (subscription.takeBack): the connection would be served twice
// and the next one consumed and lost.

import (
	"io"
	"net"
	"os"
	"runtime"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// msgCmsgCloexec is MSG_CMSG_CLOEXEC on Linux (the same on every
// architecture), with which recvmsg makes the descriptor close-on-exec
// itself; x/sys/unix has no such name on macOS, where this file also
// builds, so elsewhere it is 0 and an fcntl does it after.
var msgCmsgCloexec = func() int {
	if runtime.GOOS == "linux" {
		return 0x40000000
	}
	return 0
}()

// rrReserve is the worker's pair of reserve descriptors (see above).
var rrReserve = fdReserve{lent: make(map[sysHandle]int)}

// fdReserve holds descriptors that exist only to be closed when a slot is
// needed, and those lent to received connections.
type fdReserve struct {
	mu   sync.Mutex
	free []int             // held for the next read
	lent map[sysHandle]int // a received connection's slot for its dup
}

// fill takes the reserves that are missing, duplicating fd. Called with
// r.mu held.
func (r *fdReserve) fill(fd int) error {
	for len(r.free) < 2 {
		nfd, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			return err
		}
		r.free = append(r.free, nfd)
	}
	return nil
}

// recv reads one record from the handoff socket fd if both reserves are
// held, with a slot free for its descriptor; the other reserve is lent to
// the descriptor received. If they cannot be held it returns EMFILE as
// accept(2) would, without reading; it returns recvmsg's EAGAIN as it is.
func (r *fdReserve) recv(fd int, b, oob []byte) (n, oobn, flags int, hs []sysHandle, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.fill(fd); err != nil {
		return 0, 0, 0, nil, os.NewSyscallError("accept", err)
	}
	// The descriptor arrives in this process: close-on-exec before any
	// fork can see it. Without msgCmsgCloexec, the fork lock is taken
	// before the slot is freed: waiting for a fork under way must not
	// leave the slot free to other threads.
	if msgCmsgCloexec == 0 {
		syscall.ForkLock.RLock()
	}
	last := len(r.free) - 1
	unix.Close(r.free[last])
	r.free = r.free[:last]
	for {
		n, oobn, flags, _, err = unix.Recvmsg(fd, b, oob, msgCmsgCloexec)
		if err != unix.EINTR {
			break
		}
	}
	if oobn > 0 {
		hs, _ = parseRights(oob[:oobn])
	}
	if msgCmsgCloexec == 0 {
		for _, h := range hs {
			unix.CloseOnExec(h)
		}
		syscall.ForkLock.RUnlock()
	}
	switch {
	case len(hs) == 1:
		last = len(r.free) - 1
		r.lent[hs[0]] = r.free[last]
		r.free = r.free[:last]
	case flags&unix.MSG_CTRUNC != 0:
		// The slot was not there for recvmsg: taken by another thread,
		// or above a limit lowered since the reserves were taken. They
		// are taken afresh, below the limit, or not at all.
		closeHandles(r.free)
		r.free = r.free[:0]
	}
	if err == unix.EAGAIN {
		r.fill(fd) // held while it waits; if not, checked before the next read
	} else if err != nil {
		err = os.NewSyscallError("recvmsg", err)
	}
	return n, oobn, flags, hs, err
}

// spend closes the reserve lent to h, so that the dup that failed for it
// can have its slot, and reports whether there was one.
func (r *fdReserve) spend(h sysHandle) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	fd, ok := r.lent[h]
	if ok {
		unix.Close(fd)
		delete(r.lent, h)
	}
	return ok
}

// settle takes back the reserve lent to h once h is adopted, before h is
// closed (a descriptor number is reused as soon as it is free), and takes
// the missing one again while it is at it: a dup here or before the next
// read costs the same, and here the worker holds both while it waits.
func (r *fdReserve) settle(h sysHandle) {
	r.mu.Lock()
	defer r.mu.Unlock()
	fd, ok := r.lent[h]
	if !ok {
		return
	}
	delete(r.lent, h)
	if len(r.free) < 2 {
		r.free = append(r.free, fd)
		r.fill(fd)
	} else {
		unix.Close(fd)
	}
}

// handoffConn wraps the worker's end of a handoff socket, taking ownership
// of it, and takes the reserves if they are not held yet, so that they count
// among the worker's descriptors from its first Listen on.
func handoffConn(h sysHandle) (*net.UnixConn, error) {
	c, err := unixConnFromFD(h, "clusternet-handoff")
	if err != nil {
		return nil, err
	}
	if rc, err := c.SyscallConn(); err == nil {
		rc.Control(func(fd uintptr) {
			rrReserve.mu.Lock()
			rrReserve.fill(int(fd)) // if not now, before the first read
			rrReserve.mu.Unlock()
		})
	}
	return c, nil
}

// recvConn reads one record from a handoff socket: a connection, and
// whether it filled the window. It returns io.EOF once the primary has
// closed it; EMFILE, without reading, when the worker could not take a
// connection now; errConnLost, with last, for a record whose descriptor the
// kernel dropped. The connection's adoption (connFromHandle) has a reserve
// lent to it.
func recvConn(c *net.UnixConn) (h sysHandle, last bool, err error) { return recvRecord(c, true) }

// recvConnNow is recvConn without waiting: EAGAIN when no record waits.
func recvConnNow(c *net.UnixConn) (h sysHandle, last bool, err error) { return recvRecord(c, false) }

// watchCopy returns a second handle on the handoff socket c, for waiting on
// it while Accept reads c: one net.Conn serializes its reads, so a wait on
// c itself would hold up Accept until a record came.
func watchCopy(c *net.UnixConn) (*net.UnixConn, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	nfd := -1
	var derr error
	if err := rc.Control(func(fd uintptr) { nfd, derr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return nil, err
	}
	if derr != nil {
		return nil, os.NewSyscallError("fcntl", derr)
	}
	return unixConnFromFD(nfd, "clusternet-handoff-watch")
}

// waitReadable waits until the handoff socket c has a record (or its end),
// without reading it: a peek, which takes no descriptor.
func waitReadable(c *net.UnixConn) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var b [1]byte
	var n int
	var perr error
	err = rc.Read(func(fd uintptr) bool {
		n, _, perr = unix.Recvfrom(int(fd), b[:], unix.MSG_PEEK)
		return perr != unix.EAGAIN
	})
	if err == nil {
		err = perr
	}
	if err == nil && n == 0 {
		err = io.EOF // the primary closed its end
	}
	return err
}

func recvRecord(c *net.UnixConn, wait bool) (h sysHandle, last bool, err error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return -1, false, err
	}
	var b [1]byte
	oob := make([]byte, unix.CmsgSpace(4))
	for {
		var n, oobn, flags int
		var hs []sysHandle
		var rerr error
		err := rc.Read(func(fd uintptr) bool {
			n, oobn, flags, hs, rerr = rrReserve.recv(int(fd), b[:], oob)
			return rerr != unix.EAGAIN || !wait
		})
		if err == nil {
			err = rerr
		}
		if err != nil {
			return -1, false, err
		}
		if n == 0 && oobn == 0 {
			return -1, false, io.EOF
		}
		record := n == 1 && (b[0] == recordConn || b[0] == recordConnLast)
		if record && len(hs) == 1 && flags&unix.MSG_CTRUNC == 0 {
			return hs[0], b[0] == recordConnLast, nil
		}
		if record && len(hs) == 0 && flags&unix.MSG_CTRUNC != 0 {
			return -1, b[0] == recordConnLast, errConnLost
		}
		// Only the primary writes here, and only records: this cannot
		// happen, but if it did, what came is not a connection to serve.
		for _, h := range hs {
			rrReserve.settle(h)
		}
		closeHandles(hs)
	}
}
