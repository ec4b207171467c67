//go:build windows

package clusternet

import "os"

// Runs in the primary: watching the sockets it shares (Windows: nothing to
// watch).
//
// On Windows a worker cannot stop a listening socket it shares with others:
// Winsock's shutdown applies to connected sockets (on a listening one it is
// documented to fail with WSAENOTCONN), and closesocket closes the worker's
// own duplicate only. So the primary does not watch shared sockets there
// (primary_shared_watch_unix.go says why it does elsewhere), and a worker's
// Accept returns every error as it comes.

// sharedSocketsRebound says that the primary does not replace a shared
// listening socket: a failed Accept does not wait for one.
const sharedSocketsRebound = false

// sharedWatch is what a shared address would hold to watch its shared socket.
type sharedWatch struct{}

func (sa *sharedAddr) watchShared(backlog int, perm os.FileMode) {}

func (sa *sharedAddr) stopSharedWatch() {}
