package clusternet

// Runs in the primary: binding sockets for workers on Windows.

import (
	"errors"
	"os"
)

// bindSocketFile binds and listens on a Unix stream socket at path. Windows
// has no file permissions for Unix sockets to set (mode is not used) and
// workers run as the primary's user: the net package binds and removes the
// file.
func bindSocketFile(path string, mode os.FileMode, backlog int) (sharedSocket, error) {
	ln, err := bindStream("unix", path, backlog, false)
	if err != nil {
		return nil, err
	}
	return park(ln)
}

// workingDir would return the working directory of the worker process p:
// Windows does not show it to another process.
func workingDir(p *os.Process) (string, error) {
	return "", errors.New("the primary cannot see a worker's working directory on Windows: send an absolute path (clusternet.Listen does)")
}
