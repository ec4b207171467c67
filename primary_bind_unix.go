//go:build unix

package clusternet

// Runs in the primary: Unix socket files that it creates for workers, and
// the binds for workers (Unix). The path of a socket file comes
// from a worker, which may own a directory on it (the usual runtime
// directory) and change it while the primary works: rename a directory
// away and put a symbolic link to /etc in its place, or swap the socket
// file for a link to another file between two system calls. So the primary
// never acts on the path twice. It opens the socket's directory once,
// following no symbolic link, and does everything else relative to that
// descriptor: bind, set the mode, and at the end remove the file, only if
// it is still the very socket it created. See docs/security.md.

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// socketFile is a Unix socket file the primary created: the directory it
// is in, held open, and the file's identity.
type socketFile struct {
	dir      int    // the directory, opened without following symbolic links
	name     string // the file's name in dir
	dev, ino uint64 // the file bind created
	known    bool   // dev and ino were read
}

// errSymlink says why the primary refuses a socket path with a symbolic
// link on it, and what to do instead.
var errSymlink = errors.New("a directory on the path is a symbolic link, and the primary follows none in a path a worker gave it: give the path without symbolic links (clusternet.Listen resolves them in the worker)")

// bindSocketFile binds and listens on a Unix stream socket at path, an
// absolute clean path, with mode as its permission bits, and returns it
// parked. The file is never visible with a looser mode on Linux (elsewhere
// the mode is set just after bind). On error nothing is left behind.
func bindSocketFile(path string, mode os.FileMode, backlog int) (sharedSocket, error) {
	opErr := func(err error) error {
		return &net.OpError{Op: "listen", Net: "unix", Addr: &net.UnixAddr{Name: path, Net: "unix"}, Err: err}
	}
	dir, name := filepath.Split(path)
	if !filepath.IsAbs(path) || filepath.Clean(path) != path || name == "" {
		return nil, opErr(fmt.Errorf("socket path %q is not an absolute, clean file path", path))
	}
	dfd, err := openDir(dir)
	if err != nil {
		if errors.Is(err, unix.ELOOP) || errors.Is(err, unix.EXDEV) {
			err = fmt.Errorf("%w: %w", err, errSymlink)
		}
		return nil, opErr(err)
	}
	if backlog <= 0 {
		backlog = listenBacklog()
	}
	fd, f, err := bindInDir(dfd, path, name, mode, backlog)
	if err != nil {
		unix.Close(dfd)
		return nil, opErr(err)
	}
	f.dir, f.name = dfd, name
	return &parkedSocket{fd: fd, file: f}, nil
}

// openDirWalk opens dir, an absolute path, one component at a time with
// O_NOFOLLOW, so that a symbolic link anywhere on it fails with ELOOP
// (ENOTDIR on some systems) instead of being followed.
func openDirWalk(dir string) (int, error) {
	fd, err := unix.Open("/", dirOpenFlags, 0)
	if err != nil {
		return -1, &os.PathError{Op: "open", Path: "/", Err: err}
	}
	at := ""
	for _, c := range strings.Split(dir, "/") {
		if c == "" || c == "." {
			continue
		}
		at += "/" + c
		nfd, err := unix.Openat(fd, c, dirOpenFlags|unix.O_NOFOLLOW, 0)
		unix.Close(fd)
		if err != nil {
			if err == unix.ENOTDIR || err == unix.EMLINK {
				// O_NOFOLLOW on a symbolic link: FreeBSD says EMLINK, and
				// some systems ENOTDIR with O_DIRECTORY.
				var st unix.Stat_t
				if unix.Lstat(at, &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFLNK {
					err = unix.ELOOP
				}
			}
			return -1, &os.PathError{Op: "openat", Path: at, Err: err}
		}
		fd = nfd
	}
	return fd, nil
}

// remove removes the socket file if it is still the one the primary
// created (see removeEntry), and closes the directory.
func (f *socketFile) remove() {
	f.removeEntry()
	unix.Close(f.dir)
}

// removeEntry removes the file if it is still the socket bind created:
// same device and inode, found without following a symbolic link. Between
// the check and the unlink the worker could swap the file again; unlinkat
// then removes what it put in the directory the primary holds, which it can
// write (or it could not have swapped), and so could remove itself: nothing
// outside that directory is ever touched.
func (f *socketFile) removeEntry() {
	var st unix.Stat_t
	err := unix.Fstatat(f.dir, f.name, &st, unix.AT_SYMLINK_NOFOLLOW)
	if err == nil && f.known && st.Mode&unix.S_IFMT == unix.S_IFSOCK && uint64(st.Dev) == f.dev && uint64(st.Ino) == f.ino {
		unix.Unlinkat(f.dir, f.name, 0)
	}
}

// listenBacklog is the listen queue length the net package uses: the
// system's maximum.
func listenBacklog() int {
	if b, err := os.ReadFile("/proc/sys/net/core/somaxconn"); err == nil {
		var n int
		if _, err := fmt.Sscan(string(b), &n); err == nil && n > 0 {
			return n
		}
	}
	return unix.SOMAXCONN
}
