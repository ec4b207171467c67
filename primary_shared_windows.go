//go:build windows

package clusternet

import "io"

// park returns c as the socket a server shares. Unlike epoll, a completion
// port does not wake the primary when a worker takes a connection from a
// socket it shares, so the socket stays as the net package made it.
func park(c io.Closer) (sharedSocket, error) {
	s, err := asShared(c)
	if err != nil {
		c.Close()
	}
	return s, err
}
