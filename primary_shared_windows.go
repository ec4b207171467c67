//go:build windows

package clusternet

// Runs in the primary: sockets it shares (Windows).

import "io"

// park returns c as the socket a shared address shares. Unlike epoll, a completion
// port does not wake the primary when a worker takes a connection from a
// socket it shares, so the socket stays as the net package made it.
func park(c io.Closer) (sharedSocket, error) {
	s, err := asShared(c)
	if err != nil {
		c.Close()
	}
	return s, err
}
