package clusternet

// Node's tests of the primary's settings and of what a worker starts with:
// test-cluster-setup-primary, -setup-primary-argv, -setup-primary-cumulative,
// -setup-primary-emit, -setup-primary-multiple, -cwd, -fork-env,
// -fork-windowsHide.

import (
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"testing"
)

func init() {
	helpers["node-cwd"] = func() {
		dir, err := os.Getwd()
		nodeCheck(err == nil, "Getwd: %v", err)
		Self().Send(dir)
		Self().CloseChannel()
		select {}
	}
	helpers["node-fork-env"] = func() {
		err := Self().Send(map[string]string{"prop": os.Getenv("cluster_test_prop"), "overwrite": os.Getenv("cluster_test_overwrite")})
		nodeCheck(err == nil, "Send: %v", err) // Node: send returns true
		select {}
	}
	helpers["node-argv"] = func() {
		// process.argv[2]: the first argument after the script's name, the
		// first after the program's in Go.
		arg := ""
		if len(os.Args) > 1 {
			arg = os.Args[1]
		}
		Self().Send(arg)
		select {}
	}
	helpers["node-shutdown"] = func() {
		Self().OnMessage(func(Message) { Self().Disconnect() })
		select {}
	}
}

// nodeSetups returns a channel that gets the settings of every setup event
// from now until t ends. Setup events are delivered after SetupPrimary
// returns, so those of earlier calls (another test's cleanup) may still be
// on their way: a setup with a marker exec, awaited, flushes them. The
// primary-wide handler cannot be removed: it is added once.
var nodeSetup struct {
	once sync.Once
	mu   sync.Mutex
	ch   chan Settings
	n    int
}

func nodeSetups(t *testing.T) <-chan Settings {
	t.Helper()
	nodeSetup.once.Do(func() {
		OnSetup(func(s Settings) {
			nodeSetup.mu.Lock()
			defer nodeSetup.mu.Unlock()
			if nodeSetup.ch != nil {
				select {
				case nodeSetup.ch <- s:
				default:
				}
			}
		})
	})
	old := CurrentSettings()
	ch := make(chan Settings, 16)
	nodeSetup.mu.Lock()
	nodeSetup.ch = ch
	nodeSetup.n++
	marker := "node-setup-marker-" + strconv.Itoa(nodeSetup.n)
	nodeSetup.mu.Unlock()
	t.Cleanup(func() {
		nodeSetup.mu.Lock()
		nodeSetup.ch = nil
		nodeSetup.mu.Unlock()
		SetupPrimary(old)
	})
	m := old
	m.Exec = marker
	if err := SetupPrimary(m); err != nil {
		t.Fatal(err)
	}
	for recv(t, ch, "the marker's setup event").Exec != marker {
	}
	if err := SetupPrimary(old); err != nil {
		t.Fatal(err)
	}
	recv(t, ch, "the setup event of the settings put back")
	return ch
}

// TestNodeSetupPrimary is test-cluster-setup-primary: settings with args
// and silent give a setup event whose settings have them and the default
// exec; both workers get the argument.
//
// Go differs: Node's fork calls setupPrimary again, which emits a second
// setup event that the test's handler, added after the first call, sees; Go's
// Fork emits none, so the handler is added before SetupPrimary.
func TestNodeSetupPrimary(t *testing.T) {
	setups := nodeSetups(t)
	withSettings(t, Settings{Args: []string{"custom argument"}, Silent: true})
	s := recv(t, setups, "the setup event")
	exe, _ := os.Executable()
	if len(s.Args) == 0 || s.Args[0] != "custom argument" || !s.Silent || s.Exec != exe {
		t.Errorf("setup event settings: args %q, silent %v, exec %q; want the custom argument, true, %q", s.Args, s.Silent, s.Exec, exe)
	}
	for range 2 {
		arg := make(chan string, 1)
		w, _ := nodeFork(t, func(w *Worker) {
			w.OnMessage(func(m Message) {
				var s string
				m.Decode(&s)
				arg <- s
				w.Kill(nil)
			})
		}, "node-argv")
		if got := recv(t, arg, "the worker's argument"); got != "custom argument" {
			t.Errorf("worker %d got argument %q", w.ID(), got)
		}
		waitDone(t, w)
	}
}

// TestNodeSetupPrimaryArgv is test-cluster-setup-primary-argv: SetupPrimary
// with no arguments set takes the primary's own (os.Args[1:], Node's
// process.argv), as they are when it is called.
func TestNodeSetupPrimaryArgv(t *testing.T) {
	setups := nodeSetups(t)
	old := os.Args
	os.Args = append(slices.Clone(os.Args), "OMG,OMG", "OMG,OMG")
	defer func() { os.Args = old }()
	withSettings(t, Settings{})
	s := recv(t, setups, "the setup event")
	if len(s.Args) == 0 || s.Args[len(s.Args)-1] != os.Args[len(os.Args)-1] {
		t.Errorf("settings args %q, want the last to be %q", s.Args, os.Args[len(os.Args)-1])
	}
}

// TestNodeSetupPrimaryCumulative is test-cluster-setup-primary-cumulative,
// the Go equivalent: the defaults (args, exec, silent false) once set up;
// an exec set, then args.
//
// Go differs, on purpose (README, cluster.setupPrimary): SetupPrimary
// replaces the settings, zero fields taking their defaults, where Node
// merges; the way to change one field is to start from CurrentSettings(),
// and the test asserts that this keeps the others, as Node's merge does.
// There is no execArgv (Go has no VM flags) and Node's {} before the first
// setup has no Go counterpart (CurrentSettings always has the defaults).
func TestNodeSetupPrimaryCumulative(t *testing.T) {
	old := CurrentSettings()
	t.Cleanup(func() { SetupPrimary(old) })
	exe, _ := os.Executable()
	if err := SetupPrimary(Settings{}); err != nil {
		t.Fatal(err)
	}
	s := CurrentSettings()
	if !slices.Equal(s.Args, os.Args[1:]) || s.Exec != exe || s.Silent {
		t.Errorf("defaults: args %q exec %q silent %v; want %q, %q, false", s.Args, s.Exec, s.Silent, os.Args[1:], exe)
	}
	s.Exec = "overridden"
	SetupPrimary(s)
	if got := CurrentSettings().Exec; got != "overridden" {
		t.Errorf("exec %q, want overridden", got)
	}
	s = CurrentSettings()
	s.Args = []string{"foo", "bar"}
	SetupPrimary(s)
	s = CurrentSettings()
	if s.Exec != "overridden" || !slices.Equal(s.Args, []string{"foo", "bar"}) {
		t.Errorf("after setting args from CurrentSettings: exec %q args %q; want both kept", s.Exec, s.Args)
	}
	SetupPrimary(CurrentSettings())
	s = CurrentSettings()
	if s.Exec != "overridden" || !slices.Equal(s.Args, []string{"foo", "bar"}) || s.Silent {
		t.Errorf("current settings set up again: exec %q args %q silent %v; want them kept", s.Exec, s.Args, s.Silent)
	}
}

// TestNodeSetupPrimaryEmit is test-cluster-setup-primary-emit: the setup
// event carries the settings given (exec "new-exec"), and with none given,
// the default exec.
func TestNodeSetupPrimaryEmit(t *testing.T) {
	setups := nodeSetups(t)
	withSettings(t, Settings{Exec: "new-exec"})
	if s := recv(t, setups, "the first setup event"); s.Exec != "new-exec" {
		t.Errorf("exec %q, want new-exec", s.Exec)
	}
	if err := SetupPrimary(Settings{}); err != nil {
		t.Fatal(err)
	}
	if s := recv(t, setups, "the second setup event"); s.Exec == "" {
		t.Error("no exec in the settings of the second setup event")
	}
}

// TestNodeSetupPrimaryMultiple is test-cluster-setup-primary-multiple: three
// SetupPrimary calls give three setup events, in order, each with its exec
// (Node spaces the calls 100 ms apart; order is what it asserts).
func TestNodeSetupPrimaryMultiple(t *testing.T) {
	setups := nodeSetups(t)
	old := CurrentSettings()
	t.Cleanup(func() { SetupPrimary(old) })
	execs := []string{"node-next", "node-next-2", "node-next-3"}
	for _, e := range execs {
		if err := SetupPrimary(Settings{Exec: e}); err != nil {
			t.Fatal(err)
		}
	}
	for i, e := range execs {
		if s := recv(t, setups, "setup event"); s.Exec != e {
			t.Errorf("setup event %d: exec %q, want %q", i, s.Exec, e)
		}
	}
	select {
	case s := <-setups:
		t.Errorf("a fourth setup event: %+v", s)
	default:
	}
}

// TestNodeCwd is test-cluster-cwd: a worker runs in the primary's directory
// by default; after SetupPrimary with a directory, that directory is in the
// settings and the next worker runs there.
//
// Go differs: Node's settings.cwd is undefined until set; CurrentSettings
// has the defaults filled in (documented), so the test asserts no Dir is set
// (empty: the primary's).
func TestNodeCwd(t *testing.T) {
	if d := CurrentSettings().Dir; d != "" {
		t.Errorf("Dir %q before it is set, want empty (the primary's)", d)
	}
	here, _ := os.Getwd()
	cwdOf := func() string {
		got := make(chan string, 1)
		w, _ := nodeFork(t, func(w *Worker) {
			w.OnMessage(func(m Message) {
				var s string
				m.Decode(&s)
				got <- s
			})
		}, "node-cwd")
		defer waitDone(t, w)
		return recv(t, got, "the worker's directory")
	}
	if d := cwdOf(); !nodeSameDir(d, here) {
		t.Errorf("worker ran in %q, want %q", d, here)
	}
	tmp := testTempDir(t)
	s := CurrentSettings()
	s.Dir = tmp
	withSettings(t, s)
	if d := CurrentSettings().Dir; d != tmp {
		t.Errorf("Dir %q, want %q", d, tmp)
	}
	if d := cwdOf(); !nodeSameDir(d, tmp) {
		t.Errorf("worker ran in %q, want %q", d, tmp)
	}
}

func nodeSameDir(a, b string) bool {
	fa, err1 := os.Stat(a)
	fb, err2 := os.Stat(filepath.Clean(b))
	return err1 == nil && err2 == nil && os.SameFile(fa, fb)
}

// TestNodeForkEnv is test-cluster-fork-env: Fork's environment reaches the
// worker and overrides the primary's; the worker's Send succeeds.
func TestNodeForkEnv(t *testing.T) {
	t.Setenv("cluster_test_overwrite", "old")
	got := make(chan map[string]string, 1)
	w, _ := nodeFork(t, func(w *Worker) {
		w.OnMessage(func(m Message) {
			var v map[string]string
			m.Decode(&v)
			got <- v
		})
	}, "node-fork-env", "cluster_test_prop=custom", "cluster_test_overwrite=new")
	v := recv(t, got, "the worker's environment")
	if v["prop"] != "custom" {
		t.Errorf("the worker did not receive the correct env: %q", v["prop"])
	}
	if v["overwrite"] != "new" {
		t.Errorf("the custom environment did not overwrite the existing one: %q", v["overwrite"])
	}
	w.Kill(nil)
	waitDone(t, w)
}

// TestNodeForkWindowsHide is test-cluster-fork-windowsHide: a silent worker
// forked with WindowsHide comes online, and told to shut down exits with
// code 0 and no signal. Node checks the worker's main window handle (0) on
// Windows only, with PowerShell; elsewhere it checks nothing more. Node runs
// the primary as a detached child; the primary here is the test.
func TestNodeForkWindowsHide(t *testing.T) {
	withSettings(t, Settings{Silent: true, WindowsHide: true})
	online := make(chan struct{}, 1)
	w, _ := nodeFork(t, func(w *Worker) {
		w.OnOnline(func() {
			online <- struct{}{}
			w.Send("shutdown")
		})
	}, "node-shutdown")
	recv(t, online, "the online event")
	nodeWantExit(t, w, 0)
}
