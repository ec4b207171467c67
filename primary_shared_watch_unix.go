//go:build unix

package clusternet

// Runs in the primary: watching the sockets it shares (Unix).
//
// A listening socket that the primary shares with workers (modeShared: the
// SchedNone policy, and Unix sockets under SchedReusePort) is one socket:
// every worker accepts on a copy of it, and any holder of a copy can stop it
// for all. On Linux (measured on 6.18), shutdown(fd, SHUT_RD) or
// connect(fd, AF_UNSPEC) on a listening TCP socket closes it: accept says
// EINVAL, connect is refused, and the port is free to bind again. On a
// listening Unix socket SHUT_RD makes connect refused and accept wait for
// ever (EAGAIN on the workers' non-blocking copies); the name stays bound.
// Nothing tells the primary, whose copy is parked out of the poller, and a
// worker forked later would get the dead socket too. So the primary looks at
// its copy every sharedCheckInterval and, when it no longer listens, binds
// the address again and sends the new socket to every worker subscribed to
// it (frameRebound); their listeners switch to it (trackedListener.replace).

import (
	"encoding/binary"
	"os"
	"runtime"
	"time"

	"golang.org/x/sys/unix"
)

// sharedCheckInterval is how often the primary looks whether a shared
// listening socket still listens. A look is one poll(2) with a zero timeout
// on the primary's copy, about 1.5 µs (measured on Linux 6.18): 3 µs a
// second per address, and two wakeups a second of an otherwise idle
// primary. The interval bounds the outage a worker causes by stopping the
// socket (the tests see the service answer again 0.4 to 0.5 s after), short
// enough that clients retrying see a blip rather than a failure.
const sharedCheckInterval = 500 * time.Millisecond

// sharedSocketsRebound says that the primary replaces a shared listening
// socket that stopped listening, so that a worker's Accept that failed
// because another worker stopped it waits for the replacement.
const sharedSocketsRebound = true

// pollRDHUP is Linux's POLLRDHUP, which x/sys/unix does not define on
// every Unix system (FreeBSD's value is different).
const pollRDHUP = 0x2000

// sharedWatch is a shared address's watch over its shared listening socket.
// Guarded by sa.mu.
type sharedWatch struct {
	timer   *time.Timer
	backlog int         // as the first worker asked, for the new socket
	perm    os.FileMode // a socket file's mode, as Settings.SocketMode said at the first bind

	// unsent holds the subscriptions that could not be sent the new socket
	// when it was bound (out of descriptors): the next look tries again. A
	// worker that joins later gets the new socket with its listen reply
	// (subscribe copies it under sa.mu).
	unsent map[*subscription]bool
}

// watchShared starts watching the socket of a new modeShared stream address,
// if the primary can bind its address again: a TCP address (the port
// actually bound, even one from socket activation, if the primary may bind
// it), or a socket file the primary created. Not an abstract Unix name: it
// stays bound while any copy of the socket is open, which every worker
// holds (and the worker that stopped it can keep its copy for ever). Not a
// socket file from socket activation: the file is not the primary's to
// remove (the service manager made it, in a directory the primary may not
// write).
func (sa *sharedAddr) watchShared(backlog int, perm os.FileMode) {
	switch p, _ := sa.sock.(*parkedSocket); {
	case isSocketFile(sa.network, sa.address) && (p == nil || p.file == nil):
		return
	case sa.network == "unix" && !isSocketFile(sa.network, sa.address):
		return
	}
	sa.mu.Lock()
	defer sa.mu.Unlock()
	sa.rebind = sharedWatch{backlog: backlog, perm: perm}
	sa.rebind.timer = time.AfterFunc(sharedCheckInterval, sa.checkShared)
}

// stopSharedWatch stops the watch. Called with sa.mu held, when the
// address closes.
func (sa *sharedAddr) stopSharedWatch() {
	if sa.rebind.timer != nil {
		sa.rebind.timer.Stop()
	}
}

// checkShared looks whether the shared socket still listens, and binds
// the address again if not. The bind (and, for a socket file, removing the
// old file) is system and file system work: it runs under no lock.
func (sa *sharedAddr) checkShared() {
	sa.mu.Lock()
	if sa.closed {
		sa.mu.Unlock()
		return
	}
	sock, backlog, perm := sa.sock, sa.rebind.backlog, sa.rebind.perm
	sa.sendReboundLate()
	sa.mu.Unlock()

	var fresh sharedSocket
	if !stillListening(sock) {
		var err error
		if fresh, err = sa.bindAgain(sock, backlog, perm); err != nil {
			// The port was taken meanwhile, or the directory is gone, or
			// the primary may not bind the port (socket activation):
			// look again, and try again, at the next look.
			fresh = nil
		}
	}

	sa.mu.Lock()
	var old sharedSocket
	switch {
	case sa.closed:
		old = fresh
	case fresh != nil:
		old = sa.replaceShared(fresh)
	}
	if !sa.closed {
		sa.rebind.timer.Reset(sharedCheckInterval)
	}
	sa.mu.Unlock()
	if old != nil {
		old.Close() // removes a socket file only if it is still old's own
	}
}

// stillListening reports whether s still listens, as far as poll(2) tells. Its
// copy is parked, so nothing else reads it: POLLIN only says connections
// are waiting. A TCP socket that stopped listening is closed (POLLHUP); a
// Unix one shut for reading says POLLRDHUP.
func stillListening(s sharedSocket) bool {
	rc, err := s.SyscallConn()
	if err != nil {
		return true
	}
	var events int16
	if runtime.GOOS == "linux" {
		events = pollRDHUP
	}
	dead := false
	rc.Control(func(fd uintptr) {
		p := []unix.PollFd{{Fd: int32(fd), Events: events}}
		if n, err := unix.Poll(p, 0); err == nil && n > 0 {
			dead = p[0].Revents&(unix.POLLHUP|unix.POLLERR|unix.POLLNVAL|events) != 0
		}
	})
	return !dead
}

// bindAgain binds a new socket at the address old was bound to: the same
// port for TCP; for a socket file, first removing old's file, if it is
// still old's (socketFile.removeEntry), since bind fails on a name that
// exists.
func (sa *sharedAddr) bindAgain(old sharedSocket, backlog int, perm os.FileMode) (sharedSocket, error) {
	if isSocketFile(sa.network, sa.address) {
		old.(*parkedSocket).removeFile()
		return bindSocketFile(sa.address, perm, backlog)
	}
	_, address, _ := cutNetwork(sa.boundAt)
	ln, err := bindStream(sa.network, address, backlog, false)
	if err != nil {
		return nil, err
	}
	return park(ln)
}

// replaceShared makes fresh the address's socket, which later listens get,
// sends it to every subscribed worker, and returns the old one to close. A
// socket from socket activation is not closed (it could not be had back)
// nor made available again: it no longer listens. Called with sa.mu held.
func (sa *sharedAddr) replaceShared(fresh sharedSocket) (old sharedSocket) {
	old = sa.sock
	if sa.inherited != nil {
		old, sa.inherited = nil, nil
	}
	sa.sock = fresh
	sa.rebind.unsent = nil
	for _, sub := range sa.subs {
		sa.sendReboundOrKeep(sub)
	}
	return old
}

// sendReboundLate sends the socket again to the workers that could not be
// sent it when it was bound, and still use the address. Called with sa.mu
// held.
func (sa *sharedAddr) sendReboundLate() {
	unsent := sa.rebind.unsent
	sa.rebind.unsent = nil
	for _, sub := range sa.subs {
		if unsent[sub] {
			sa.sendReboundOrKeep(sub)
		}
	}
}

// sendReboundOrKeep sends sub the socket, or keeps it for the next look.
// Called with sa.mu held.
func (sa *sharedAddr) sendReboundOrKeep(sub *subscription) {
	if sa.sendRebound(sub) {
		return
	}
	if sa.rebind.unsent == nil {
		sa.rebind.unsent = make(map[*subscription]bool)
	}
	sa.rebind.unsent[sub] = true
}

// sendRebound sends sub's worker a copy of the address's socket.
// Called with sa.mu held: the frame is only queued.
func (sa *sharedAddr) sendRebound(sub *subscription) bool {
	h, err := dupHandle(sa.sock)
	if err != nil {
		return false // out of descriptors: again at the next look
	}
	b := binary.BigEndian.AppendUint32(newFrame(frameRebound, 4, 1), sa.key)
	sub.w.ch.send(outFrame{b: b, handles: []sysHandle{h}})
	return true
}
