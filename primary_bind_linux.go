package clusternet

// Runs in the primary: binding socket files relative to a directory
// descriptor, on a thread of its own (Linux). primary_bind_unix.go says why.

import (
	"os"
	"runtime"
	"strconv"

	"golang.org/x/sys/unix"
)

// dirOpenFlags opens a directory only to name things relative to it.
const dirOpenFlags = unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC

// openDir opens dir, an absolute path, following no symbolic link: one
// openat2 with RESOLVE_NO_SYMLINKS, or, where the kernel lacks it (before
// 5.6) or a seccomp filter refuses it, a walk with O_NOFOLLOW.
func openDir(dir string) (int, error) {
	fd, err := unix.Openat2(unix.AT_FDCWD, dir, &unix.OpenHow{
		Flags:   dirOpenFlags,
		Resolve: unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
	})
	switch err {
	case nil:
		return fd, nil
	case unix.ENOSYS, unix.EPERM:
		return openDirWalk(dir)
	}
	return -1, &os.PathError{Op: "openat2", Path: dir, Err: err}
}

// bindInDir creates a listening Unix socket named name in the directory
// dir, with mode as its permission bits.
//
// bind(2) creates the file with the socket's own mode less the umask, and
// the umask is the process's: restoring what it took away with a chmod by
// path after bind is what a worker racing a symbolic link swap turns into a
// chmod of any file. So the bind runs on a thread of its own, locked and
// never returned to the scheduler, whose file system context (working
// directory and umask, CLONE_FS) it unshares from the process: umask 0, the
// working directory dir itself, and bind to the bare name. The file is
// created with exactly mode, and in dir whatever happened to the path since
// dir was opened; the name also escapes the 108-byte sun_path limit on the
// directory's path. A new thread costs some tens of microseconds, once per
// address.
func bindInDir(dir int, _, name string, mode os.FileMode, backlog int) (int, *socketFile, error) {
	type result struct {
		fd  int
		f   *socketFile
		err error
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
		fd, f, err := bindOnThisThread(dir, name, mode, backlog)
		done <- result{fd, f, err}
	}()
	r := <-done
	return r.fd, r.f, r.err
}

func bindOnThisThread(dir int, name string, mode os.FileMode, backlog int) (int, *socketFile, error) {
	if err := unix.Unshare(unix.CLONE_FS); err != nil {
		return -1, nil, os.NewSyscallError("unshare", err)
	}
	unix.Umask(0)
	if err := unix.Fchdir(dir); err != nil {
		return -1, nil, os.NewSyscallError("fchdir", err)
	}
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		return -1, nil, os.NewSyscallError("socket", err)
	}
	fail := func(op string, err error) (int, *socketFile, error) {
		unix.Close(fd)
		return -1, nil, os.NewSyscallError(op, err)
	}
	// Linux creates the file with the socket inode's mode.
	if err := unix.Fchmod(fd, uint32(mode.Perm())); err != nil {
		return fail("fchmod", err)
	}
	// bind never follows a symbolic link in the last component: a name that
	// exists, whatever it is, is EADDRINUSE.
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: name}); err != nil {
		return fail("bind", err)
	}
	f := &socketFile{}
	f.dev, f.ino, f.known = boundFile(fd, name)
	if err := unix.Listen(fd, backlog); err != nil {
		f.dir, f.name = dir, name
		f.removeEntry()
		return fail("listen", err)
	}
	return fd, f, nil
}

// siocUnixFile is SIOCUNIXFILE (linux/un.h, Linux 6.0): an O_PATH
// descriptor of the file a Unix socket is bound to. It needs CAP_NET_ADMIN.
const siocUnixFile = unix.SIOCPROTOPRIVATE

// boundFile returns the device and inode of the file the socket fd was
// just bound to as name in the working directory. SIOCUNIXFILE names the
// very file bind created; without it (not root, older kernels) the name is
// looked at right after bind, before any worker is told the address exists.
func boundFile(fd int, name string) (dev, ino uint64, ok bool) {
	var st unix.Stat_t
	pfd, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), siocUnixFile, 0)
	if errno == 0 {
		err := unix.Fstat(int(pfd), &st)
		unix.Close(int(pfd))
		if err == nil {
			return uint64(st.Dev), uint64(st.Ino), true // Dev is 32 bits on some architectures
		}
	}
	if err := unix.Fstatat(unix.AT_FDCWD, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil || st.Mode&unix.S_IFMT != unix.S_IFSOCK {
		return 0, 0, false
	}
	return uint64(st.Dev), uint64(st.Ino), true // Dev is 32 bits on some architectures
}

// workingDir returns the working directory of the worker process p. Only
// a worker that has exited and been waited for leaves its pid to another
// process, and even then the path is only a path: AllowListen sees it, and
// the bind follows no symbolic link on it.
func workingDir(p *os.Process) (string, error) {
	return os.Readlink("/proc/" + strconv.Itoa(p.Pid) + "/cwd")
}
