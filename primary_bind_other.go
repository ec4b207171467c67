//go:build unix && !linux

package clusternet

// Runs in the primary: binding socket files on the other Unix systems.
// primary_bind_unix.go says why it is done this way.

import (
	"errors"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// dirOpenFlags opens a directory to name things relative to it.
const dirOpenFlags = unix.O_RDONLY | unix.O_DIRECTORY | unix.O_CLOEXEC

// openDir opens dir, an absolute path, following no symbolic link.
func openDir(dir string) (int, error) { return openDirWalk(dir) }

// bindInDir creates a listening Unix socket named name in the directory
// dir, whose path is path, with mode as its permission bits.
//
// These systems cannot bind relative to a directory descriptor for every
// thread's sake (no per-thread working directory), so bind takes the path:
// a worker that owns a directory on it and swaps it for a symbolic link
// between the directory's opening and the bind can have the new socket
// created elsewhere (bind never replaces or opens an existing file). The
// mode is then set relative to the directory held, without following a
// link, and only on a socket of the primary's own with one name: never on
// a file the worker put there. docs/security.md says what follows.
func bindInDir(dir int, path, name string, mode os.FileMode, backlog int) (int, *socketFile, error) {
	syscall.ForkLock.RLock()
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM, 0)
	if err == nil {
		unix.CloseOnExec(fd)
	}
	syscall.ForkLock.RUnlock()
	if err != nil {
		return -1, nil, os.NewSyscallError("socket", err)
	}
	fail := func(op string, err error) (int, *socketFile, error) {
		unix.Close(fd)
		return -1, nil, os.NewSyscallError(op, err)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		return fail("setnonblock", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		return fail("bind", err)
	}
	f := &socketFile{dir: dir, name: name}
	var st unix.Stat_t
	if err := unix.Fstatat(dir, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fail("fstatat", err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFSOCK || st.Nlink != 1 || int(st.Uid) != os.Geteuid() {
		return fail("bind", unix.EEXIST) // not what bind made: the directory changed under it
	}
	f.dev, f.ino, f.known = uint64(st.Dev), uint64(st.Ino), true
	if err := unix.Fchmodat(dir, name, uint32(mode.Perm()), unix.AT_SYMLINK_NOFOLLOW); err != nil {
		f.removeEntry()
		return fail("fchmodat", err)
	}
	if err := unix.Listen(fd, backlog); err != nil {
		f.removeEntry()
		return fail("listen", err)
	}
	return fd, f, nil
}

// workingDir would return the working directory of the worker process p:
// these systems do not show it to another process.
func workingDir(p *os.Process) (string, error) {
	return "", errors.New("the primary cannot see a worker's working directory on this system: send an absolute path (clusternet.Listen does)")
}
