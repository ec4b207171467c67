//go:build unix

package clusternet

// Runs in the primary: Upgrade's handover of the whole cluster to a new
// primary started from the program on disk now, from both sides: the old
// primary that hands over, and the new one that takes over (Unix).
//
// The handover. The old primary makes a Unix stream socket pair and starts
// its own executable again (os.Executable, its arguments, its environment)
// with the other end as descriptor 3 and CLUSTERNET_UPGRADE_FD=3. The two
// speak the channel's framing (frame.go) with these kinds:
//
//	upgradeHello    new → old  4 bytes big endian: the handover version it speaks
//	upgradeRefused  old → new  text: why the old primary refuses this one
//	upgradeSockets  old → new  JSON handedAddr; its sockets as handles, and
//	                           for a Unix socket file its directory, last
//	upgradeState    old → new  JSON handoverState: every socket was sent
//	upgradeReady    new → old  empty: its workers listen where the old ones did
//	upgradeCommit   old → new  empty: the new primary is in charge
//	upgradeConns    old → new  JSON {"id"}: connections the old primary had
//	                           accepted for that address, as handles
//
//  1. The new primary says hello as soon as it acts as a primary (its first
//     Fork or Run, or Listen outside a cluster). The old one refuses another
//     version (upgradeRefused, then kills it if it has not exited within
//     upgradeRefusedGrace) and otherwise sends every socket it holds: the
//     addresses it shares with workers (under SchedReusePort each worker's
//     socket, queue and all), socket activation's sockets by name, and the
//     directory of each Unix socket file it created, so that the new
//     primary can one day remove the file without resolving its path. Both
//     primaries now hold every socket; the kernel's queues are shared, and
//     nothing is closed or unlinked.
//  2. The new primary forks its workers, whose listens get the handed
//     sockets (no bind). Once they listen wherever the old workers did
//     (handoverState.Want) and, under Run, every slot's worker is online
//     (and has listened, if the old ones had), it sends upgradeReady.
//  3. The old primary tells the service manager the new main pid, sends
//     upgradeCommit and disconnects its workers, which finish what they
//     accepted. The connections it accepted and no worker took (SchedRR),
//     including those its workers leave queued, go to the new primary
//     (upgradeConns), which deals them to its workers. Then it closes its
//     copies of the sockets, removing no file, and the channel; Upgrade
//     returns, and so does Run.
//
// Rollback: a new primary that exits, breaks this protocol, or is not ready
// within the timeout is killed before step 3, and its workers die with it
// (Pdeathsig on Linux, the end of their channel elsewhere). The old primary
// has closed nothing and goes on as before. A new primary whose channel
// ends before step 3 without a refusal (the old primary died) takes over as
// it is: serving beats exiting.
//
// Versions: upgradeHello and upgradeRefused keep their numbers and bodies
// in every version, so that any two builds can tell each other this much;
// the rest may change with upgradeVersion.

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

const (
	upgradeHello frameKind = iota + 1
	upgradeRefused
	upgradeSockets
	upgradeState
	upgradeReady
	upgradeCommit
	upgradeConns
	upgradeKindEnd
)

// upgradeVersion is the handover version. Version 1: this file as it is.
const upgradeVersion = 1

// upgradeSpoken is the version a new primary says it speaks:
// upgradeVersion, except in the tests of a build from another release. Set
// before any init function runs, never after.
var upgradeSpoken uint32 = upgradeVersion

// envUpgradeFD names the descriptor of a new primary's end of the handover.
const envUpgradeFD = "CLUSTERNET_UPGRADE_FD"

const (
	// maxUpgradeFrame bounds a handover frame's body: a handedAddr, the
	// addresses listened on, or a refusal.
	maxUpgradeFrame = 1 << 20

	// maxHandedSockets bounds the sockets a new primary takes over: 256
	// listens per worker are allowed (maxListensPerWorker), and under
	// SchedReusePort each worker has its own.
	maxHandedSockets = 4096

	// upgradeHandshakeTimeout bounds how long a new primary waits for the
	// old one's sockets after its hello.
	upgradeHandshakeTimeout = 10 * time.Second

	// upgradeReadyPoll is how often a new primary looks at whether it is
	// ready, beside the nudges of its workers' listening reports.
	upgradeReadyPoll = 100 * time.Millisecond

	// upgradeRefusedGrace is how long a refused new primary has to exit
	// before it is killed.
	upgradeRefusedGrace = time.Second

	// upgradeFlushTimeout bounds how long the old primary waits for the new
	// one to read the last connections it forwards.
	upgradeFlushTimeout = 10 * time.Second
)

// handedAddr is one shared address (or socket activation's socket) in a
// handover, and in the new primary its sockets until a listen takes them.
type handedAddr struct {
	ID         string      `json:"id,omitempty"` // the shared address (addrID); empty for socket activation's
	Mode       shareMode   `json:"mode,omitempty"`
	Packet     bool        `json:"packet,omitempty"`
	Address    string      `json:"address,omitempty"` // SchedReusePort: the address with its port fixed
	BoundAt    string      `json:"boundAt,omitempty"`
	Activation string      `json:"activation,omitempty"` // socket activation's socket, by name
	File       *handedFile `json:"file,omitempty"`       // the socket's file; its directory is the last handle

	socks []sharedSocket // in the new primary
}

// handedFile is a Unix socket file the old primary created: its name in
// the directory that travels with it, and its identity.
type handedFile struct {
	Name     string `json:"name"`
	Dev, Ino uint64
}

// handoverState ends the sockets: the addresses the old workers listen on.
type handoverState struct {
	Want []string `json:"want"`
}

// --- the old primary ---------------------------------------------------------

var upgrading struct {
	busy atomic.Bool // an upgrade is under way

	mu   sync.Mutex // after sa.mu: forwardConns runs under it
	to   *successor // committed: connections nobody here takes go there
	done bool       // this primary handed its cluster over
}

// forwarded counts the connections a primary passed to its successor.
var forwarded atomic.Int64

// successor is the new primary an upgrade started.
type successor struct {
	cmd    *exec.Cmd
	ch     *channel
	exited chan struct{} // closed once cmd.Wait returned
	err    error         // cmd.Wait's error, once exited is closed
}

// upgradeMsg is what the successor said: a frame's kind and body, or why
// its channel ended.
type upgradeMsg struct {
	kind frameKind
	body []byte
	err  error
}

// upgradeCluster is Upgrade, under Run when s is not nil.
func upgradeCluster(ctx context.Context, s *supervisor) error {
	if !upgrading.busy.CompareAndSwap(false, true) {
		return ErrUpgradeInProgress
	}
	defer upgrading.busy.Store(false)
	reloadMu.Lock() // a reload under way ends first
	defer reloadMu.Unlock()
	upgrading.mu.Lock()
	done := upgrading.done
	upgrading.mu.Unlock()
	if done {
		return errors.New("clusternet: upgrade: this primary has handed its cluster over already")
	}
	if inheritingUpgrade() {
		return errors.New("clusternet: upgrade: this primary is still taking over from the one before it; upgrade it once it has (its PID file names it)")
	}
	if os.Getpid() == 1 {
		// The new primary is this one's child: when PID 1 exits, the
		// kernel kills every process of its namespace, the new primary too.
		return errors.New("clusternet: upgrade: this primary is PID 1 of its PID namespace (a container's entrypoint), whose exit would kill the new primary; run it under an init (docker run --init, tini) to upgrade it, or replace the container")
	}

	log, timeout, drain := slog.New(slog.DiscardHandler), defaultReplaceTimeout, time.Duration(0)
	var notify *notifier
	if s != nil {
		log, notify, drain = s.log, s.notify, s.cfg.shutdownTimeout
		if s.cfg.listenTimeout > 0 {
			timeout = s.cfg.listenTimeout
		}
	} else {
		notify = newNotifier(log)
	}
	notify.send("RELOADING=1", monotonicUsec(), "STATUS=upgrading: starting a new primary")
	if s != nil {
		// A worker still starting would bind its SchedReusePort socket
		// after the handover, and take its queue with it when it leaves.
		s.awaitReady(ctx, timeout)
	}
	succ, err := startSuccessor(ctx, timeout, log)
	if err == nil && s != nil && !s.handOff() {
		succ.kill()
		err = errors.New("clusternet: upgrade abandoned: the cluster is shutting down")
	}
	if err != nil {
		notify.send("READY=1", "STATUS=serving; the upgrade failed: "+err.Error())
		return err
	}

	// Committed: from here on the new primary serves.
	pid := succ.cmd.Process.Pid
	upgrading.mu.Lock()
	upgrading.to, upgrading.done = succ, true
	upgrading.mu.Unlock()
	notify.send("MAINPID="+strconv.Itoa(pid), "READY=1", fmt.Sprintf("STATUS=serving: upgraded; the primary is now pid %d", pid))
	notify.mute() // no longer the main process: what it says next is not the service's state
	succ.ch.send(outFrame{b: newFrame(upgradeCommit, 0, 0)})
	log.Info("upgraded: the new primary serves; this one drains its workers and exits", "pid", pid)
	disownSocketFiles()
	drainWorkers(ctx, drain, log)
	closeAllAddrs() // what is still pending goes to the new primary
	succ.ch.shutdown()
	flush := time.NewTimer(upgradeFlushTimeout)
	defer flush.Stop()
	select {
	case <-succ.ch.done:
	case <-flush.C:
		succ.ch.abort(errors.New("the new primary does not read its handover"))
		log.Warn("the new primary did not read the last connections handed to it", "pid", pid)
	}
	log.Info("handed over", "pid", pid, "connections", forwarded.Load())
	if s != nil {
		close(s.upgraded)
	}
	return nil
}

// startSuccessor starts the new primary, hands it the sockets and waits
// until it is ready. On any failure the new primary is killed, and the
// error says what it did.
func startSuccessor(ctx context.Context, timeout time.Duration, log *slog.Logger) (*successor, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("clusternet: upgrade: finding this program: %w", err)
	}
	items, state, err := collectHandover()
	if err != nil {
		return nil, fmt.Errorf("clusternet: upgrade: %w", err)
	}
	release := func() {
		for _, it := range items {
			closeHandles(it.hs)
		}
	}
	fds, err := rawSocketPair()
	if err != nil {
		release()
		return nil, fmt.Errorf("clusternet: upgrade: %w", err)
	}
	conn, err := unixConnFromFD(fds[0], "clusternet-upgrade")
	if err != nil {
		unix.Close(fds[1])
		release()
		return nil, fmt.Errorf("clusternet: upgrade: %w", err)
	}
	theirs := os.NewFile(uintptr(fds[1]), "clusternet-upgrade")
	// Not syscall.StartProcess as for workers: no parent-death signal (the
	// new primary outlives this one), and os/exec holds the child's pidfd,
	// so a reaper never takes it for an orphan.
	cmd := &exec.Cmd{
		Path:       exe,
		Args:       slices.Clone(os.Args),
		Env:        append(os.Environ(), envUpgradeFD+"=3"),
		Stdin:      os.Stdin,
		Stdout:     os.Stdout,
		Stderr:     os.Stderr,
		ExtraFiles: []*os.File{theirs},
	}
	err = cmd.Start()
	theirs.Close()
	if err != nil {
		conn.Close()
		release()
		return nil, fmt.Errorf("clusternet: upgrade: starting the new primary: %w", err)
	}
	log.Info("upgrading: new primary started", "pid", cmd.Process.Pid, "exec", exe)
	succ := &successor{cmd: cmd, exited: make(chan struct{})}
	go func() {
		succ.err = cmd.Wait()
		close(succ.exited)
	}()
	succ.ch = newChannel(newUnixTransport(conn), maxUpgradeFrame)
	succ.ch.reader.end = upgradeKindEnd
	msgs := make(chan upgradeMsg, 2) // the hello, then the ready or the end
	go succ.read(msgs)

	expire := time.NewTimer(timeout)
	defer expire.Stop()
	fail := func(why string) (*successor, error) {
		release()
		succ.kill()
		return nil, fmt.Errorf("clusternet: upgrade rolled back; this primary keeps serving: the new primary (pid %d, %s) %s: %s",
			cmd.Process.Pid, exe, why, succ.status())
	}

	m, why := succ.await(ctx, msgs, expire.C, timeout, upgradeHello)
	if why != "" {
		return fail(why + " before it said which handover version it speaks")
	}
	if len(m.body) != 4 {
		return fail(fmt.Sprintf("broke the handover protocol: a hello of %d bytes, want 4", len(m.body)))
	}
	if v := binary.BigEndian.Uint32(m.body); v != upgradeVersion {
		reason := fmt.Sprintf("the running primary (pid %d) speaks handover version %d and this one %d; restart the service to run this release", os.Getpid(), upgradeVersion, v)
		succ.ch.send(outFrame{b: append(newFrame(upgradeRefused, len(reason), 0), reason...)})
		grace := time.NewTimer(upgradeRefusedGrace)
		select {
		case <-succ.exited:
		case <-grace.C:
		}
		grace.Stop()
		release()
		succ.kill()
		return nil, fmt.Errorf("clusternet: upgrade refused; this primary keeps serving: the new primary (pid %d, %s): %w: it speaks handover version %d, this primary %d",
			cmd.Process.Pid, exe, ErrVersion, v, upgradeVersion)
	}
	for i, it := range items {
		body, _ := json.Marshal(it.a)
		b := append(newFrame(upgradeSockets, len(body), len(it.hs)), body...)
		items[i].hs = nil // send closes them once written
		succ.ch.send(outFrame{b: b, handles: it.hs})
	}
	body, _ := json.Marshal(state)
	succ.ch.send(outFrame{b: append(newFrame(upgradeState, len(body), 0), body...)})
	if _, why := succ.await(ctx, msgs, expire.C, timeout, upgradeReady); why != "" {
		return fail(why + " before its workers listened where this primary's do (" + strings.Join(state.Want, ", ") + ")")
	}
	return succ, nil
}

// read reads what the successor says until it is ready, or its channel ends.
func (succ *successor) read(msgs chan<- upgradeMsg) {
	for {
		f, err := succ.ch.reader.next()
		if err == nil && len(f.handles) > 0 {
			closeHandles(f.handles)
			err = protocolErrorf("a new primary sent handles")
		}
		if err == nil && f.kind != upgradeHello && f.kind != upgradeReady {
			err = protocolErrorf("a new primary sent a frame of kind %d", f.kind)
		}
		if err != nil {
			succ.ch.reader.close()
			msgs <- upgradeMsg{err: err}
			return
		}
		msgs <- upgradeMsg{kind: f.kind, body: slices.Clone(f.body)}
		if f.kind == upgradeReady {
			return
		}
	}
}

// await waits for the successor's next frame, which must be of kind want,
// and returns it, or why it did not come.
func (succ *successor) await(ctx context.Context, msgs <-chan upgradeMsg, expire <-chan time.Time, timeout time.Duration, want frameKind) (upgradeMsg, string) {
	select {
	case m := <-msgs:
		switch {
		case m.err == nil && m.kind == want:
			return m, ""
		case m.err == nil:
			return m, fmt.Sprintf("broke the handover protocol: a frame of kind %d", m.kind)
		case isClosedErr(m.err):
			// It exited, most likely: wait a moment for its status.
			grace := time.NewTimer(upgradeRefusedGrace)
			defer grace.Stop()
			select {
			case <-succ.exited:
				return m, "exited"
			case <-grace.C:
			}
			return m, "closed the handover"
		default:
			return m, "broke the handover protocol: " + m.err.Error()
		}
	case <-succ.exited:
		return upgradeMsg{}, "exited"
	case <-expire:
		return upgradeMsg{}, fmt.Sprintf("was not ready within %v", timeout)
	case <-ctx.Done():
		return upgradeMsg{}, fmt.Sprintf("was not ready when the upgrade's context ended (%v)", context.Cause(ctx))
	}
}

// kill kills the successor and waits until it is gone.
func (succ *successor) kill() {
	succ.cmd.Process.Kill()
	<-succ.exited
	succ.ch.abort(errors.New("the upgrade was rolled back"))
}

// status says how the successor ended.
func (succ *successor) status() string {
	select {
	case <-succ.exited:
	default:
		return "still running"
	}
	var ee *exec.ExitError
	if errors.As(succ.err, &ee) {
		return exitStatus(ee.ProcessState, nil, nil).String()
	}
	if succ.err != nil {
		return succ.err.Error()
	}
	return "exit code 0"
}

// handoverItem is one upgradeSockets frame to send.
type handoverItem struct {
	a  handedAddr
	hs []sysHandle // copies, closed once sent
}

// collectHandover copies every socket the primary holds, for a successor,
// and lists the addresses its workers listen on.
func collectHandover() ([]handoverItem, handoverState, error) {
	var items []handoverItem
	var state handoverState
	abort := func(err error) ([]handoverItem, handoverState, error) {
		for _, it := range items {
			closeHandles(it.hs)
		}
		return nil, state, err
	}
	for _, s := range activatedSockets() {
		h, err := dupHandle(s.conn())
		if err != nil {
			return abort(fmt.Errorf("socket activation's %s: %w", s.name, err))
		}
		items = append(items, handoverItem{a: handedAddr{Activation: s.name}, hs: []sysHandle{h}})
	}
	cluster.mu.Lock()
	sas := slices.Collect(maps.Values(cluster.addrs))
	cluster.mu.Unlock()
	n := len(items)
	for _, sa := range sas {
		its, err := sa.handover()
		items = append(items, its...)
		if err != nil {
			return abort(err)
		}
		for _, it := range its {
			n += len(it.hs)
		}
		if n > maxHandedSockets {
			return abort(fmt.Errorf("more than %d sockets to hand over", maxHandedSockets))
		}
	}
	want := make(map[string]bool)
	for _, w := range Workers() {
		maps.Copy(want, w.listenedAddresses())
	}
	state.Want = slices.Sorted(maps.Keys(want))
	return items, state, nil
}

// handover copies sa's sockets for a successor: the shared one, or under
// SchedReusePort each worker's and the spares, at most maxFrameHandles to
// a frame. An address on socket activation's socket goes as that socket.
func (sa *sharedAddr) handover() ([]handoverItem, error) {
	a := handedAddr{ID: sa.id, Mode: sa.mode, Packet: sa.packet}
	if sa.mode == modeOwn {
		sa.bindMu.Lock()
		a.Address, a.BoundAt = sa.address, sa.boundAt
		sa.bindMu.Unlock()
	}
	sa.mu.Lock()
	defer sa.mu.Unlock()
	if sa.closed || sa.inherited != nil {
		return nil, nil
	}
	var socks []sharedSocket
	if sa.mode == modeOwn {
		for _, sub := range sa.subs {
			if sub.own != nil {
				socks = append(socks, sub.own)
			}
		}
		for _, sp := range sa.spares {
			socks = append(socks, sp.s)
		}
		for _, r := range sa.retired {
			socks = append(socks, r.s)
		}
	} else {
		a.BoundAt = sa.boundAt
		socks = append(socks, sa.sock)
	}
	var hs []sysHandle
	for _, s := range socks {
		h, err := dupHandle(s)
		if err != nil {
			closeHandles(hs)
			return nil, fmt.Errorf("%s: %w", sa.id, err)
		}
		hs = append(hs, h)
	}
	if sa.mode != modeOwn {
		if p, ok := sa.sock.(*parkedSocket); ok {
			f, dir, err := p.handFile()
			if err != nil {
				closeHandles(hs)
				return nil, fmt.Errorf("%s: %w", sa.id, err)
			}
			if f != nil {
				a.File = f
				hs = append(hs, dir)
			}
		}
		return []handoverItem{{a: a, hs: hs}}, nil
	}
	var items []handoverItem
	for len(hs) > 0 {
		n := min(len(hs), maxFrameHandles)
		items = append(items, handoverItem{a: a, hs: hs[:n:n]})
		hs = hs[n:]
	}
	return items, nil
}

// handFile returns the socket's file, if the primary created one, and a
// copy of its directory's descriptor.
func (p *parkedSocket) handFile() (*handedFile, sysHandle, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.fd < 0 || p.file == nil || !p.file.known {
		return nil, -1, nil
	}
	dir, err := dupFD(p.file.dir)
	if err != nil {
		return nil, -1, err
	}
	return &handedFile{Name: p.file.name, Dev: p.file.dev, Ino: p.file.ino}, dir, nil
}

// disownSocketFiles gives up the socket files of the shared addresses: the
// successor serves on them and removes them in the end.
func disownSocketFiles() {
	cluster.mu.Lock()
	sas := slices.Collect(maps.Values(cluster.addrs))
	cluster.mu.Unlock()
	for _, sa := range sas {
		sa.mu.Lock()
		if p, ok := sa.sock.(*parkedSocket); ok {
			p.adopt(nil)
		}
		sa.mu.Unlock()
	}
}

// adopt makes f the socket's file, removed when it closes; nil gives the
// file up. A socket closed meanwhile does not take f.
func (p *parkedSocket) adopt(f *socketFile) {
	p.mu.Lock()
	defer p.mu.Unlock()
	old := p.file
	p.file = nil
	if p.fd >= 0 && f != nil {
		p.file, f = f, nil
	}
	if old != nil {
		unix.Close(old.dir)
	}
	if f != nil {
		unix.Close(f.dir)
	}
}

// upgradedAway reports whether this primary has handed its cluster over:
// the new primary holds every socket, so none is retired here.
func upgradedAway() bool {
	upgrading.mu.Lock()
	defer upgrading.mu.Unlock()
	return upgrading.to != nil
}

// forwardConns sends hs, accepted for the address id, to the successor
// once the cluster is handed over, and reports whether it did.
func forwardConns(id string, hs []sysHandle) bool {
	upgrading.mu.Lock()
	to := upgrading.to
	upgrading.mu.Unlock()
	if to == nil {
		return false
	}
	body, _ := json.Marshal(struct {
		ID string `json:"id"`
	}{id})
	forwarded.Add(int64(len(hs)))
	for len(hs) > 0 {
		n := min(len(hs), maxFrameHandles)
		b := append(newFrame(upgradeConns, len(body), n), body...)
		to.ch.send(outFrame{b: b, handles: hs[:n:n]}) // closes them once written, or at once on error
		hs = hs[n:]
	}
	return true
}

// --- the new primary ---------------------------------------------------------

var inheritance struct {
	mu      sync.Mutex
	err     error                  // the takeover failed: Fork and Run return it
	pending bool                   // handed over, not committed yet
	addrs   map[string]*handedAddr // by ID, not yet taken by a listen
	files   []handedSocketFile     // the socket files, owned from the commit
	want    []string               // where the old workers listen
	poke    chan struct{}          // a worker's listening report: look again
	done    chan struct{}          // closed at the commit
	unused  *time.Timer            // closes the sockets no listen took
	log     *slog.Logger
}

type handedSocketFile struct {
	p *parkedSocket
	f *socketFile
}

// inheritUpgrade takes over the cluster an old primary hands over, when
// Upgrade started this process, and returns socket activation's sockets
// among it; ok is false when Upgrade did not start this process.
func inheritUpgrade() (socks []*activatedSocket, ok bool) {
	text, set := os.LookupEnv(envUpgradeFD)
	if !set {
		return nil, false
	}
	os.Unsetenv(envUpgradeFD) // not for the workers
	socks, err := takeHandover(text)
	if err != nil {
		inheritance.mu.Lock()
		inheritance.err = fmt.Errorf("clusternet: taking over from the old primary: %w", err)
		inheritance.mu.Unlock()
		fmt.Fprintln(os.Stderr, inheritance.err)
	}
	return socks, true
}

// upgradeErr returns why this primary could not take over, if it could not.
func upgradeErr() error {
	activatedSockets() // takes over, once
	inheritance.mu.Lock()
	defer inheritance.mu.Unlock()
	return inheritance.err
}

// inheritingUpgrade reports whether this primary was handed a cluster and
// is not in charge yet.
func inheritingUpgrade() bool {
	inheritance.mu.Lock()
	defer inheritance.mu.Unlock()
	return inheritance.pending
}

// upgradePoke makes a primary that is taking over look at whether it is
// ready.
func upgradePoke() {
	inheritance.mu.Lock()
	poke := inheritance.poke
	inheritance.mu.Unlock()
	if poke != nil {
		select {
		case poke <- struct{}{}:
		default:
		}
	}
}

// takeHandover speaks the new primary's side of the handover up to
// upgradeState, on the descriptor fdText names.
func takeHandover(fdText string) ([]*activatedSocket, error) {
	fd, err := strconv.Atoi(fdText)
	if err != nil || fd < 3 {
		return nil, fmt.Errorf("%s=%q is not a descriptor", envUpgradeFD, fdText)
	}
	t, err := inheritedChannel(uint64(fd))
	if err != nil {
		return nil, err
	}
	ch := newChannel(t, maxUpgradeFrame)
	ch.reader.end = upgradeKindEnd
	ch.send(outFrame{b: binary.BigEndian.AppendUint32(newFrame(upgradeHello, 4, 0), upgradeSpoken)})
	var late atomic.Bool
	timer := time.AfterFunc(upgradeHandshakeTimeout, func() {
		late.Store(true)
		ch.abort(errors.New("the old primary sent nothing"))
	})
	defer timer.Stop()

	h, err := readHandover(ch)
	if err != nil {
		if late.Load() {
			err = fmt.Errorf("the old primary sent no sockets within %v", upgradeHandshakeTimeout)
		}
		ch.abort(err)
		return nil, err
	}
	inheritance.mu.Lock()
	inheritance.pending = true
	inheritance.addrs, inheritance.files, inheritance.want = h.addrs, h.files, h.want
	inheritance.poke = make(chan struct{}, 1)
	inheritance.done = make(chan struct{})
	done, poke := inheritance.done, inheritance.poke
	inheritance.mu.Unlock()
	go followHandover(ch)
	go awaitReady(ch, poke, done)
	return h.socks, nil
}

// handover is what a new primary was handed.
type handover struct {
	addrs map[string]*handedAddr // by ID
	socks []*activatedSocket     // socket activation's
	files []handedSocketFile
	want  []string
}

// close closes everything in h.
func (h *handover) close() {
	for _, a := range h.addrs {
		for _, s := range a.socks {
			s.Close()
		}
	}
	for _, s := range h.socks {
		s.conn().Close()
	}
	for _, f := range h.files {
		unix.Close(f.f.dir)
	}
}

// readHandover reads the old primary's sockets, up to upgradeState. On
// error it has closed everything it read, and the channel is unusable.
func readHandover(ch *channel) (*handover, error) {
	h := &handover{addrs: make(map[string]*handedAddr)}
	count := 0
	fail := func(err error) (*handover, error) {
		h.close()
		ch.reader.close()
		return nil, err
	}
	for {
		f, err := ch.reader.next()
		if err != nil {
			return fail(err)
		}
		switch f.kind {
		case upgradeRefused:
			closeHandles(f.handles)
			return fail(fmt.Errorf("%w: the running primary refused this one: %s", ErrVersion, f.body))
		case upgradeSockets:
			count += len(f.handles)
			if count > maxHandedSockets {
				closeHandles(f.handles)
				return fail(protocolErrorf("more than %d sockets handed over", maxHandedSockets))
			}
			a, file, err := parseHanded(f)
			if err != nil {
				return fail(err)
			}
			if file.f != nil {
				h.files = append(h.files, file)
			}
			if a.Activation != "" {
				s, err := activatedFromFD(f.handles[0], a.Activation)
				if err != nil {
					return fail(fmt.Errorf("socket activation's %s: %w", a.Activation, err))
				}
				h.socks = append(h.socks, s)
				continue
			}
			if prev := h.addrs[a.ID]; prev != nil {
				if prev.Mode != modeOwn || a.Mode != modeOwn {
					for _, s := range a.socks {
						s.Close()
					}
					return fail(protocolErrorf("address %s handed over twice", a.ID))
				}
				prev.socks = append(prev.socks, a.socks...)
				continue
			}
			h.addrs[a.ID] = a
		case upgradeState:
			var st handoverState
			if err := json.Unmarshal(f.body, &st); err != nil || len(st.Want) > maxListeningReports || len(f.handles) > 0 {
				closeHandles(f.handles)
				return fail(protocolErrorf("malformed handover state"))
			}
			h.want = st.Want
			return h, nil
		default:
			closeHandles(f.handles)
			return fail(protocolErrorf("the old primary sent a frame of kind %d during the handover", f.kind))
		}
	}
}

// parseHanded reads an upgradeSockets frame: the address and its sockets,
// taking ownership of the frame's handles (closed on error).
func parseHanded(f frame) (*handedAddr, handedSocketFile, error) {
	var file handedSocketFile
	a := new(handedAddr)
	bad := func(why string) (*handedAddr, handedSocketFile, error) {
		closeHandles(f.handles)
		return nil, file, protocolErrorf("handed socket: %s", why)
	}
	if err := json.Unmarshal(f.body, a); err != nil {
		return bad(err.Error())
	}
	hs := f.handles
	switch {
	case a.Activation != "":
		if len(hs) != 1 || a.ID != "" || a.File != nil {
			return bad("socket activation's, with an address or not one socket")
		}
		return a, file, nil
	case a.ID == "":
		return bad("no address")
	case a.Mode != modeRR && a.Mode != modeShared && a.Mode != modeOwn:
		return bad(fmt.Sprintf("mode %q", a.Mode))
	case a.Mode == modeOwn && (len(hs) == 0 || a.File != nil):
		return bad("a SchedReusePort address without sockets, or with a file")
	case a.Mode != modeOwn && len(hs) != 1+btoi(a.File != nil):
		return bad(fmt.Sprintf("%d handles for a shared socket", len(hs)))
	}
	if a.File != nil {
		name := a.File.Name
		if name == "" || name == "." || name == ".." || strings.Contains(name, "/") {
			return bad(fmt.Sprintf("socket file name %q", name))
		}
		dir := hs[len(hs)-1]
		hs = hs[:len(hs)-1]
		file.f = &socketFile{dir: dir, name: name, dev: a.File.Dev, ino: a.File.Ino, known: true}
	}
	for _, h := range hs {
		a.socks = append(a.socks, &parkedSocket{fd: h})
	}
	file.p, _ = a.socks[0].(*parkedSocket)
	return a, file, nil
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// followHandover reads the old primary's commit and the connections it
// forwards, until the channel ends; then this primary is in charge in any
// case.
func followHandover(ch *channel) {
	for {
		f, err := ch.reader.next()
		if err != nil {
			break
		}
		if f.kind == upgradeCommit && len(f.handles) == 0 {
			takeOver()
			continue
		}
		if f.kind != upgradeConns || !deliverConns(f) {
			closeHandles(f.handles)
			upgradeLog().Error("the old primary broke the handover protocol", "kind", f.kind)
			break
		}
	}
	ch.reader.close()
	ch.abort(ErrChannelClosed)
	takeOver()
}

// deliverConns deals connections the old primary accepted to this
// primary's workers on the same address.
func deliverConns(f frame) bool {
	var body struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal(f.body, &body); err != nil {
		return false
	}
	cluster.mu.Lock()
	sa := cluster.addrs[body.ID]
	cluster.mu.Unlock()
	if sa != nil && sa.mode != modeShared {
		sa.mu.Lock()
		if !sa.closed {
			if sa.mode == modeOwn {
				sa.dealOwnLocked(f.handles)
			} else {
				sa.pending = append(sa.pending, f.handles...)
				sa.flushPending()
				sa.cond.Signal()
			}
			sa.mu.Unlock()
			return true
		}
		sa.mu.Unlock()
	}
	closeHandles(f.handles)
	upgradeLog().Warn("connections handed over for an address no worker of this primary listens on; closed", "address", body.ID, "connections", len(f.handles))
	return true
}

// awaitReady tells the old primary once this one is ready.
func awaitReady(ch *channel, poke, done <-chan struct{}) {
	tick := time.NewTicker(upgradeReadyPoll)
	defer tick.Stop()
	for {
		select {
		case <-poke:
		case <-tick.C:
		case <-done:
			return
		}
		if inheritedReady() {
			ch.send(outFrame{b: newFrame(upgradeReady, 0, 0)})
			return
		}
	}
}

// inheritedReady reports whether this primary's workers listen wherever
// the old primary's did and, under Run, every slot's worker is up.
func inheritedReady() bool {
	inheritance.mu.Lock()
	want := inheritance.want
	inheritance.mu.Unlock()
	have := make(map[string]bool)
	for _, w := range Workers() {
		maps.Copy(have, w.listenedAddresses())
	}
	for _, a := range want {
		if !have[a] {
			return false
		}
	}
	if s := runningSupervisor(); s != nil {
		return s.upgradeReady(len(want) > 0)
	}
	return true
}

// takeOver puts this primary in charge, once: it owns the socket files from
// now on, the sockets no listen took are closed after heldAddrTimeout, and
// Run writes its PID file.
func takeOver() {
	inheritance.mu.Lock()
	if !inheritance.pending {
		inheritance.mu.Unlock()
		return
	}
	inheritance.pending = false
	files := inheritance.files
	inheritance.files = nil
	close(inheritance.done)
	if len(inheritance.addrs) > 0 {
		inheritance.unused = time.AfterFunc(heldAddrTimeout, closeUnusedHanded)
	}
	inheritance.mu.Unlock()
	for _, f := range files {
		f.p.adopt(f.f)
	}
	if s := runningSupervisor(); s != nil {
		s.tookOver()
	}
}

// closeUnusedHanded closes the handed sockets that no listen took: the new
// release does not listen there.
func closeUnusedHanded() {
	inheritance.mu.Lock()
	addrs := inheritance.addrs
	inheritance.addrs = nil
	inheritance.mu.Unlock()
	for _, a := range addrs {
		for _, s := range a.socks {
			s.Close()
		}
	}
}

// upgradeLog is Run's logger, or none.
func upgradeLog() *slog.Logger {
	if s := runningSupervisor(); s != nil {
		return s.log
	}
	return slog.New(slog.DiscardHandler)
}

// takeInherited gives sa the sockets handed over for its address, if any
// fit: a shared address takes the one socket (SchedRR and SchedNone share
// alike), a SchedReusePort address keeps the workers' sockets as spares for
// its first workers. It reports whether sa has its socket.
func (sa *sharedAddr) takeInherited() bool {
	inheritance.mu.Lock()
	a := inheritance.addrs[sa.id]
	if a == nil || a.Packet != sa.packet || (a.Mode == modeOwn) != (sa.mode == modeOwn) {
		inheritance.mu.Unlock()
		return false
	}
	delete(inheritance.addrs, sa.id)
	inheritance.mu.Unlock()
	if sa.mode != modeOwn {
		sa.sock, sa.boundAt = a.socks[0], a.BoundAt
		return true
	}
	sa.bindMu.Lock()
	sa.address, sa.boundAt = a.Address, a.BoundAt
	sa.bindMu.Unlock()
	sa.mu.Lock()
	for _, s := range a.socks {
		sa.keepSpareLocked(s, heldAddrTimeout)
	}
	sa.mu.Unlock()
	return true
}
