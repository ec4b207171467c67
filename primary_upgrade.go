package clusternet

// Runs in the primary: Upgrade's options and its shared half: the PID file,
// the error of a second upgrade, and the hooks through which the shared
// addresses take part in a handover (primary_upgrade_unix.go has the
// handover itself).

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Upgrade replaces this primary with a new one started from its program as
// it is on disk now (os.Executable, with this process's arguments and
// environment), without refusing a connection: a fix in the primary's own
// code reaches production as Reload's fixes in the workers do.
//
// The new primary gets every listening socket this one holds (the addresses
// its workers listen on, socket activation's sockets, Unix socket files,
// which are never removed in between) and forks its workers, which listen
// on those sockets. Once they listen wherever this primary's workers do
// (and, under Run, every slot's worker is up), this primary tells systemd
// the new main pid (MAINPID=, then READY=1, with NOTIFY_SOCKET), disconnects
// its workers and waits until they have finished their connections (the
// shutdown timeout under Run, else until ctx ends); the connections it had
// accepted that no worker of its took (SchedRR) are handed to the new
// primary, which serves them. Upgrade then returns nil; this primary holds
// no worker and no socket any more, and should exit (Run returns nil by
// itself).
//
// Rollback: a new primary that exits, is not ready within the listen
// timeout (WithListenTimeout under Run; 30 s otherwise), or speaks another
// handover version is killed with its workers, this primary goes on as if
// nothing happened, and Upgrade returns an error that says what the new
// primary did (wrapping ErrVersion for another version). The new primary
// fails its Run with that reason when it is refused.
//
// Under Run, SIGUSR2 upgrades (WithUpgradeSignals). One upgrade runs at a
// time: Upgrade returns ErrUpgradeInProgress during another, and a Reload
// under way finishes first. It returns ErrNotPrimary in a worker, and an
// error wrapping errors.ErrUnsupported on Windows. See docs/deploys.md.
func Upgrade(ctx context.Context) error {
	if IsWorker() {
		return ErrNotPrimary
	}
	return upgradeCluster(ctx, runningSupervisor())
}

// WithUpgradeSignals sets the signals on which Run upgrades the primary
// (see Upgrade). Default SIGUSR2 on Unix, as nginx and unicorn; none turns
// it off. Windows has no upgrade.
func WithUpgradeSignals(sigs ...os.Signal) RunOption {
	return func(c *runConfig) { c.upgradeSignals = sigs }
}

// WithPIDFile makes Run write this process's pid to path, for process
// managers that follow a service by its PID file. The file is replaced in
// one step (written beside it, then renamed over it), never seen half
// written. A primary started by Upgrade writes its pid there once it has
// taken over (if its Run has the option too), and Run removes the file when
// it returns, if the file still holds its own pid. Run fails at start if it
// cannot write the file.
func WithPIDFile(path string) RunOption {
	return func(c *runConfig) { c.pidFile = path }
}

// writePIDFile writes this process's pid to path, replacing the file in one
// rename.
func writePIDFile(path string) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("clusternet: writing the PID file: %w", err)
	}
	_, err = fmt.Fprintf(f, "%d\n", os.Getpid())
	if err == nil {
		err = f.Chmod(0o644)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("clusternet: writing the PID file: %w", err)
	}
	return nil
}

// removePIDFile removes the PID file at path if it holds this process's
// pid: after an upgrade it holds the new primary's, and stays.
func removePIDFile(path string) {
	b, err := os.ReadFile(path)
	if err == nil && strings.TrimSpace(string(b)) == strconv.Itoa(os.Getpid()) {
		os.Remove(path)
	}
}

// dropConns disposes of connections accepted for sa that no worker of this
// primary will take: a primary that has handed its cluster over sends them
// to its successor, which serves them; otherwise they are closed.
func (sa *sharedAddr) dropConns(hs []sysHandle) {
	if len(hs) == 0 {
		return
	}
	if forwardConns(sa.id, hs) {
		return
	}
	closeHandles(hs)
}
