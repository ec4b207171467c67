package clusternet

// Node's test-tls-ticket-cluster: TLS sessions resume across workers.
//
// Node shares the session ticket keys between workers through the primary
// itself (the cluster's _getServerData/_setServerData). Go's cluster does
// not: in Go, each tls.Config has random ticket keys of its own, and sharing
// them across processes is the application's job, here explicit: the
// primary makes the keys and sends them to each worker in a message, and the
// worker gives them to tls.Config.SetSessionTicketKeys (with the
// certificate, which the primary sends with them: made by the test, never
// in a file).

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"math/big"
	"net"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"
)

// nodeTLSSetup is what the primary sends each worker: the certificate and
// its key (DER) and the session ticket key.
type nodeTLSSetup struct {
	Cert, Key []byte
	Ticket    [32]byte
}

// nodeTLSReport is what a worker sends the primary, as Node's {msg, port}.
type nodeTLSReport struct {
	Msg  string // listening, reused, not-reused
	Port int
	ID   int // the worker's
}

func init() {
	helpers["node-tls-ticket"] = func() {
		var once sync.Once
		var ln net.Listener
		Self().OnMessage(func(m Message) {
			var s string
			if m.Decode(&s) == nil && s == "die" {
				// server.close(), then process.exit().
				if ln != nil {
					ln.Close()
				}
				os.Exit(0)
			}
			var setup nodeTLSSetup
			if err := m.Decode(&setup); err != nil {
				nodeCheck(false, "message %s: %v", m.Raw(), err)
			}
			once.Do(func() {
				key, err := x509.ParseECPrivateKey(setup.Key)
				nodeCheck(err == nil, "key: %v", err)
				cfg := &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{setup.Cert}, PrivateKey: key}}}
				cfg.SetSessionTicketKeys([][32]byte{setup.Ticket})
				l, err := Listen("tcp", "127.0.0.1:0")
				nodeCheck(err == nil, "Listen: %v", err)
				ln = l
				go func() {
					for {
						c, err := ln.Accept()
						if err != nil {
							return
						}
						go func() {
							tc := tls.Server(c, cfg)
							defer tc.Close()
							tc.SetDeadline(time.Now().Add(testTimeout))
							if tc.Handshake() != nil {
								return
							}
							msg := "not-reused"
							if tc.ConnectionState().DidResume {
								msg = "reused"
							}
							Self().Send(nodeTLSReport{Msg: msg, ID: Self().ID()})
							tc.Write([]byte("x")) // c.end('x')
						}()
					}
				}()
				Self().Send(nodeTLSReport{Msg: "listening", Port: ln.Addr().(*net.TCPAddr).Port, ID: Self().ID()})
			})
		})
		select {}
	}
}

// firstSession is a client session cache that keeps the first session it
// is given and offers it on every connection: Node's lastSession, set once
// and passed to every tls.connect.
type firstSession struct {
	mu sync.Mutex
	cs *tls.ClientSessionState
}

func (c *firstSession) Get(string) (*tls.ClientSessionState, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cs, c.cs != nil
}

func (c *firstSession) Put(_ string, cs *tls.ClientSessionState) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cs == nil && cs != nil {
		c.cs = cs
	}
}

// nodeSelfSigned makes a certificate for 127.0.0.1 and its key, DER.
func nodeSelfSigned(t *testing.T) (cert, key []byte) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "clusternet test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	cert, err = x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	key, err = x509.MarshalECPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return cert, key
}

// TestNodeTLSTicketCluster is test-tls-ticket-cluster: four workers serve
// TLS on one port; the primary connects 16 times, one after the other,
// offering the session of its first connection each time; every connection
// but the first resumes it (reused + 1 == 16), whichever worker takes it.
// Beyond Node, under SchedRR (which deals the connections to the workers in
// turn): a worker other than the one that made the session resumes it.
func TestNodeTLSTicketCluster(t *testing.T) {
	const workerCount, expectedReqCount = 4, 16
	cert, key := nodeSelfSigned(t)
	setup := nodeTLSSetup{Cert: cert, Key: key}
	if _, err := rand.Read(setup.Ticket[:]); err != nil {
		t.Fatal(err)
	}
	if platformLacks("rr") == "" {
		setPolicy(t, SchedRR)
	}
	reports := make(chan nodeTLSReport, 64)
	var workers []*Worker
	for range workerCount {
		w, _ := nodeFork(t, func(w *Worker) {
			w.OnMessage(func(m Message) {
				var r nodeTLSReport
				if err := m.Decode(&r); err != nil {
					t.Errorf("worker %d: %s: %v", w.ID(), m.Raw(), err)
					return
				}
				select {
				case reports <- r:
				default:
				}
			})
		}, "node-tls-ticket")
		if err := w.Send(setup); err != nil { // the key distribution, explicit in Go
			t.Fatalf("Send: %v", err)
		}
		workers = append(workers, w)
	}
	port := 0
	for range workerCount {
		r := recv(t, reports, "the workers to listen")
		if r.Msg != "listening" {
			t.Fatalf("worker %d: %+v before listening", r.ID, r)
		}
		port = r.Port
	}

	cache := &firstSession{}
	cfg := &tls.Config{InsecureSkipVerify: true, ClientSessionCache: cache} // rejectUnauthorized: false
	var served []nodeTLSReport
	for i := range expectedReqCount {
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: testTimeout}, "tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), cfg)
		if err != nil {
			t.Fatalf("connection %d: %v", i+1, err)
		}
		c.SetDeadline(time.Now().Add(testTimeout))
		// Read to the end: the session ticket comes before it (Node waits
		// for close for the same reason).
		b, err := io.ReadAll(c)
		c.Close()
		if err != nil || string(b) != "x" {
			t.Fatalf("connection %d read %q, %v; want x", i+1, b, err)
		}
		served = append(served, recv(t, reports, "the worker's report"))
	}
	for _, w := range workers {
		w.Send("die")
	}
	for _, w := range workers {
		waitDone(t, w)
	}

	reused := 0
	otherWorker := false
	for i, r := range served {
		switch {
		case r.Msg == "reused":
			reused++
			otherWorker = otherWorker || r.ID != served[0].ID
		case r.Msg != "not-reused":
			t.Errorf("connection %d: report %+v", i+1, r)
		}
	}
	if len(served) != expectedReqCount || reused+1 != len(served) || served[0].Msg != "not-reused" {
		t.Errorf("connections: %d, resumed: %d; want %d, %d (all but the first): %+v", len(served), reused, expectedReqCount, expectedReqCount-1, served)
	}
	if SchedulingPolicy() == SchedRR && !otherWorker {
		t.Errorf("no worker other than %d resumed its session: %+v", served[0].ID, served)
	}
}
