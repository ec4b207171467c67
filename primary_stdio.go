package clusternet

// Runs in the primary: a worker's standard input, output and error, as
// Node's stdio settings say.

import (
	"io"
	"os"
	"os/exec"
	"path/filepath"
)

// execPath finds the program to run as os/exec does: a bare name in PATH,
// anything with a separator as it is.
func execPath(name string) (string, error) {
	if filepath.Base(name) != name {
		return name, nil
	}
	return exec.LookPath(name)
}

// rawFD returns f's descriptor (handle on Windows) for a child to inherit,
// without what Fd does to it: Fd puts a non-blocking descriptor into
// blocking mode, and takes a handle off the runtime's completion port.
func rawFD(f *os.File) (uintptr, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return 0, err
	}
	var fd uintptr
	if err := rc.Control(func(s uintptr) { fd = s }); err != nil {
		return 0, err
	}
	return fd, nil
}

// childStdio is what a new worker gets as descriptors 0, 1 and 2, and what
// the primary must do around the start.
type childStdio struct {
	files           [3]*os.File
	closeAfterStart []*os.File // the child's ends of pipes, and /dev/null
	copiers         []func()   // run once the child has started
	closeOnFailure  []*os.File // the primary's ends of pipes
	stdout, stderr  *outputBuffer
}

// prepareStdio resolves Settings' stdio as Node's fork does: set streams win;
// otherwise Silent pipes output to Worker.Stdout/Stderr and gives the worker
// an empty stdin, and without Silent the worker shares the primary's stdio.
func prepareStdio(s *Settings) (*childStdio, error) {
	c := &childStdio{}
	fail := func(err error) (*childStdio, error) {
		c.abort()
		return nil, err
	}
	switch {
	case s.Stdin != nil:
		if err := c.input(s.Stdin); err != nil {
			return fail(err)
		}
	case s.Silent:
		f, err := os.Open(os.DevNull)
		if err != nil {
			return fail(err)
		}
		c.files[0] = f
		c.closeAfterStart = append(c.closeAfterStart, f)
	default:
		c.files[0] = os.Stdin
	}
	for i, out := range []struct {
		w      io.Writer
		std    *os.File
		buffer **outputBuffer
	}{{s.Stdout, os.Stdout, &c.stdout}, {s.Stderr, os.Stderr, &c.stderr}} {
		w := out.w
		if w == nil && s.Silent {
			*out.buffer = newOutputBuffer()
			w = *out.buffer
		}
		if w == nil {
			w = out.std
		}
		if err := c.output(i+1, w, *out.buffer); err != nil {
			return fail(err)
		}
	}
	return c, nil
}

func (c *childStdio) input(r io.Reader) error {
	if f, ok := r.(*os.File); ok {
		c.files[0] = f
		return nil
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		return err
	}
	c.files[0] = pr
	c.closeAfterStart = append(c.closeAfterStart, pr)
	c.closeOnFailure = append(c.closeOnFailure, pw)
	c.copiers = append(c.copiers, func() {
		io.Copy(pw, r)
		pw.Close()
	})
	return nil
}

func (c *childStdio) output(fd int, w io.Writer, buf *outputBuffer) error {
	if f, ok := w.(*os.File); ok {
		c.files[fd] = f
		return nil
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		return err
	}
	c.files[fd] = pw
	c.closeAfterStart = append(c.closeAfterStart, pw)
	c.closeOnFailure = append(c.closeOnFailure, pr)
	c.copiers = append(c.copiers, func() {
		io.Copy(w, pr)
		pr.Close()
		if buf != nil {
			buf.closeWrite()
		}
	})
	return nil
}

// started closes the child's ends and starts copying.
func (c *childStdio) started() {
	for _, f := range c.closeAfterStart {
		f.Close()
	}
	for _, fn := range c.copiers {
		go fn()
	}
}

// abort releases everything after a failed start.
func (c *childStdio) abort() {
	for _, f := range c.closeAfterStart {
		f.Close()
	}
	for _, f := range c.closeOnFailure {
		f.Close()
	}
}
