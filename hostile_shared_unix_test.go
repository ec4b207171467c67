//go:build linux

package clusternet

// A hostile worker under SchedNone: every worker accepts on a copy of the
// one listening socket the primary bound, and Linux lets any holder of a
// copy stop it for all with shutdown(SHUT_RD). The primary must notice,
// bind the address again and hand the new socket to every worker, whose
// Accept switches to it without returning an error; a worker forked later
// must get the new socket, not the dead one.

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// hsRecoverWithin bounds the wait for the service to answer again after an
// attack: a few times sharedCheckInterval, with room for a loaded machine.
const hsRecoverWithin = 10 * time.Second

// hsRounds is how many times in a row the hostile worker shuts the socket.
const hsRounds = 3

func init() {
	// hs-serve listens on HS_NET HS_ADDR and answers each connection's line
	// with "worker <id> <line>". If Accept ever returns an error it tells
	// the primary "accept-error: ..." and stops serving. A message makes it
	// an attacker of its copy of the shared socket: "shut" calls
	// shutdown(SHUT_RD), "unspec" connect(AF_UNSPEC) (on a TCP socket, the
	// same effect); it answers "<attack>: <error or ok>".
	helpers["hs-serve"] = func() {
		self := Self()
		ln, err := Listen(os.Getenv("HS_NET"), os.Getenv("HS_ADDR"))
		if err != nil {
			fmt.Fprintln(os.Stderr, "hs-serve:", err)
			os.Exit(1)
		}
		self.OnMessage(func(m Message) {
			var attack string
			m.Decode(&attack)
			if err := hsAttack(ln, attack); err != nil {
				self.Send(attack + ": " + err.Error())
			} else {
				self.Send(attack + ": ok")
			}
		})
		for {
			c, err := ln.Accept()
			if err != nil {
				self.Send("accept-error: " + err.Error())
				select {} // the test reaps it
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(testTimeout))
				line, err := bufio.NewReader(c).ReadString('\n')
				if err == nil {
					fmt.Fprintf(c, "worker %d %s", self.ID(), line)
				}
			}()
		}
	}
}

// hsAttack stops the socket the worker's listener accepts on now, for
// every worker that shares it.
func hsAttack(ln net.Listener, attack string) error {
	tl, ok := ln.(*trackedListener)
	if !ok {
		return fmt.Errorf("a %T is not a shared listener", ln)
	}
	sc, ok := tl.current().(syscall.Conn)
	if !ok {
		return errors.New("the listener has no socket")
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return err
	}
	var aerr error
	err = rc.Control(func(fd uintptr) {
		switch attack {
		case "shut":
			aerr = unix.Shutdown(int(fd), unix.SHUT_RD)
		case "unspec":
			sa := unix.RawSockaddr{Family: unix.AF_UNSPEC}
			if _, _, errno := unix.Syscall(unix.SYS_CONNECT, fd, uintptr(unsafe.Pointer(&sa)), unsafe.Sizeof(sa)); errno != 0 {
				aerr = errno
			}
		default:
			aerr = fmt.Errorf("no attack %q", attack)
		}
	})
	if err != nil {
		return err
	}
	return aerr
}

// hsRequest sends one line to network addr and returns the answer.
func hsRequest(network, addr string) (string, error) {
	c, err := net.DialTimeout(network, addr, time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Second))
	if _, err := fmt.Fprintf(c, "ping\n"); err != nil {
		return "", err
	}
	return bufio.NewReader(c).ReadString('\n')
}

// hsServed waits, at most hsRecoverWithin, until a request is answered,
// then asks a few more to see that the service stays up, and returns the
// worker ids that answered them.
func hsServed(t *testing.T, network, addr, what string) []string {
	t.Helper()
	start := time.Now()
	var err error
	for {
		var answer string
		if answer, err = hsRequest(network, addr); err == nil {
			t.Logf("%s: answered after %v (%s)", what, time.Since(start).Round(time.Millisecond), strings.TrimSpace(answer))
			break
		}
		if time.Since(start) > hsRecoverWithin {
			t.Fatalf("%s: no answer for %v: %v", what, hsRecoverWithin, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	var by []string
	for range 5 {
		answer, err := hsRequest(network, addr)
		if err != nil {
			t.Fatalf("%s: a request after the service came back failed: %v", what, err)
		}
		by = append(by, strings.Fields(answer)[1])
	}
	return by
}

// hsStrike has the attacker w stop the shared socket, and waits until it
// has.
func hsStrike(t *testing.T, w *Worker, in <-chan Message, attack string) {
	t.Helper()
	if err := w.Send(attack); err != nil {
		t.Fatal(err)
	}
	for {
		var s string
		recv(t, in, "the hostile worker's attack").Decode(&s)
		if strings.HasPrefix(s, "accept-error:") {
			continue // its own Accept is not the point
		}
		if s != attack+": ok" {
			t.Fatalf("hostile worker: %s", s)
		}
		return
	}
}

// hsNoAcceptError fails t if a well-behaved worker's Accept returned an
// error.
func hsNoAcceptError(t *testing.T, w *Worker, in <-chan Message) {
	t.Helper()
	for {
		select {
		case m := <-in:
			var s string
			m.Decode(&s)
			t.Errorf("well-behaved worker %d: %s", w.ID(), s)
		default:
			return
		}
	}
}

// hsAlone kills gone, after checking that its Accept never failed, and
// then has only w answer.
func hsAlone(t *testing.T, network, addr string, w, gone *Worker, goneIn <-chan Message) {
	t.Helper()
	hsNoAcceptError(t, gone, goneIn)
	gone.Kill(os.Kill)
	waitDone(t, gone)
	want := fmt.Sprint(w.ID())
	for _, id := range hsServed(t, network, addr, "worker "+want+" alone") {
		if id != want {
			t.Errorf("answered by worker %s, want worker %s alone", id, want)
		}
	}
}

func TestHostileSharedShutdown(t *testing.T) {
	for _, network := range []string{"tcp4", "unix"} {
		t.Run(network, func(t *testing.T) {
			setPolicy(t, SchedNone)
			addr := freePort(t)
			if network == "unix" {
				addr = filepath.Join(t.TempDir(), "hs.sock")
			}
			fds := openFDs(t)
			env := []string{"HS_NET=" + network, "HS_ADDR=" + addr}
			good := []*Worker{fork(t, "hs-serve", env...), fork(t, "hs-serve", env...)}
			bad := fork(t, "hs-serve", env...)
			relWaitListening(t, append(good, bad)...)
			goodIn := []<-chan Message{messages(good[0]), messages(good[1])}
			badIn := messages(bad)
			hsServed(t, network, addr, "before the attack")

			// (a) The attacker lives: the service comes back after each
			// shutdown, on a socket the attacker holds a copy of too.
			for round := range hsRounds {
				attack := "shut"
				if network != "unix" && round%2 == 1 {
					attack = "unspec"
				}
				hsStrike(t, bad, badIn, attack)
				hsServed(t, network, addr, fmt.Sprintf("attack %d (%s)", round+1, attack))
			}

			// (b) The attacker strikes once more and is killed. Each
			// well-behaved worker accepts on the new socket: with the
			// other gone, the one left answers; and a worker forked then
			// gets the socket that listens, not the dead one.
			hsStrike(t, bad, badIn, "shut")
			bad.Kill(os.Kill)
			waitDone(t, bad)
			hsServed(t, network, addr, "after the attacker was killed")
			hsAlone(t, network, addr, good[1], good[0], goodIn[0])
			fresh := fork(t, "hs-serve", env...)
			relWaitListening(t, fresh)
			hsAlone(t, network, addr, fresh, good[1], goodIn[1])

			// Nothing is left behind once the last worker is gone.
			fresh.Kill(os.Kill)
			waitDone(t, fresh)
			fdsAtMost(t, fds, "primary after every worker left")
			if network == "unix" {
				deadline := time.Now().Add(testTimeout)
				for _, err := os.Lstat(addr); !errors.Is(err, os.ErrNotExist); _, err = os.Lstat(addr) {
					if time.Now().After(deadline) {
						t.Errorf("socket file %s after every worker left: %v", addr, err)
						break
					}
					time.Sleep(20 * time.Millisecond)
				}
			}
		})
	}
}
