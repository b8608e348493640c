// Command refserver is the Go reference peer of `npm run bench`: what a Go implementation of
// the MinIO KMS data path reaches on the same machine, with Go's standard library only.
//
// It serves POST /v1/kms/{enclave} with KEY:GENERATE and KEY:DECRYPT frames (kms-wire.md
// §2.2) over mutual TLS (HTTP/1.1 and HTTP/2), and does the work minkms does for them:
//
//   - the client's h1: identity from its certificate, once per connection;
//   - authorization: the identity must be the enclave's allowed User, and the command allowed
//     for the key (a map lookup standing in for minkms's policy check);
//   - frame and protobuf decoding and encoding;
//   - KEY:GENERATE: a random data key sealed as HMAC-SHA256-derived AES-256-GCM (the ciphertext
//     format of minkms, kms-wire.md §4); KEY:DECRYPT: the reverse.
//
// It keeps one master key version in memory and stores nothing. It prints "PORT <n>" once it
// listens and stops on SIGTERM.
package main

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"minkms.bench/internal/kmswire"
)

const maxBody = 1 << 20

type server struct {
	enclave  string
	keyName  string
	identity string
	key      *kmswire.MasterKey
}

// connInfo caches a connection's identity: computed on its first request, like minkms does.
type connInfo struct {
	identity string
}

type ctxKey struct{}

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "listen address")
	certFile := flag.String("cert", "", "server certificate (PEM)")
	keyFile := flag.String("key", "", "server private key (PEM)")
	enclave := flag.String("enclave", "bench", "the enclave served")
	keyName := flag.String("keyname", "minio-default-key", "the master key's name")
	identity := flag.String("identity", "", "h1: identity allowed KEY:GENERATE and KEY:DECRYPT")
	flag.Parse()
	if *certFile == "" || *keyFile == "" || *identity == "" {
		log.Fatal("refserver: -cert, -key and -identity are required")
	}
	cert, err := tls.LoadX509KeyPair(*certFile, *keyFile)
	if err != nil {
		log.Fatalf("refserver: %v", err)
	}
	master := make([]byte, 32)
	rand.Read(master)
	mk, err := kmswire.NewMasterKey(master)
	if err != nil {
		log.Fatal(err)
	}
	clear(master)
	s := &server{enclave: *enclave, keyName: *keyName, identity: *identity, key: mk}

	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/kms/{enclave}", s.serveKMS)
	protocols := new(http.Protocols)
	protocols.SetHTTP1(true)
	protocols.SetHTTP2(true)
	srv := &http.Server{
		Handler:   mux,
		Protocols: protocols,
		TLSConfig: &tls.Config{
			Certificates: []tls.Certificate{cert},
			// Like minkms: ask for a client certificate, accept a self-signed one; the identity
			// (a hash of its public key) is what is authorized.
			ClientAuth: tls.RequestClientCert,
			MinVersion: tls.VersionTLS12,
		},
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       90 * time.Second,
		ConnContext: func(ctx context.Context, _ net.Conn) context.Context {
			return context.WithValue(ctx, ctxKey{}, &connInfo{})
		},
		ErrorLog: log.New(io.Discard, "", 0),
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatalf("refserver: %v", err)
	}
	fmt.Printf("PORT %d\n", ln.Addr().(*net.TCPAddr).Port)
	fmt.Printf("GOMAXPROCS %d\n", runtime.GOMAXPROCS(0))

	go func() {
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
		<-sig
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	}()
	if err := srv.ServeTLS(ln, "", ""); err != nil && err != http.ErrServerClosed {
		log.Fatalf("refserver: %v", err)
	}
}

func fail(w http.ResponseWriter, status int, msg string) {
	body := kmswire.AppendErrResponse(nil, msg)
	h := w.Header()
	h["Content-Type"] = []string{"application/octet-stream"}
	h["Content-Length"] = []string{strconv.Itoa(len(body))}
	w.WriteHeader(status)
	w.Write(body)
}

func (s *server) serveKMS(w http.ResponseWriter, r *http.Request) {
	ci, _ := r.Context().Value(ctxKey{}).(*connInfo)
	if ci == nil || r.TLS == nil {
		fail(w, http.StatusForbidden, "access denied: insufficient permissions")
		return
	}
	if ci.identity == "" && len(r.TLS.PeerCertificates) > 0 {
		ci.identity = kmswire.Identity(r.TLS.PeerCertificates[0].RawSubjectPublicKeyInfo)
	}
	if ci.identity == "" || !kmswire.SameIdentity(ci.identity, s.identity) {
		fail(w, http.StatusForbidden, "access denied: insufficient permissions")
		return
	}
	if r.PathValue("enclave") != s.enclave {
		fail(w, http.StatusNotFound, "enclave does not exist")
		return
	}
	if r.ContentLength < 0 || r.ContentLength > maxBody {
		fail(w, http.StatusRequestEntityTooLarge, "request body too large")
		return
	}
	body := make([]byte, r.ContentLength)
	if _, err := io.ReadFull(r.Body, body); err != nil {
		fail(w, http.StatusBadRequest, "cannot read request body")
		return
	}
	var frameBuf [8]kmswire.Frame
	frames, err := kmswire.ParseFrames(body, 10000, frameBuf[:0])
	if err != nil || len(frames) == 0 {
		fail(w, http.StatusBadRequest, "malformed request")
		return
	}
	out := make([]byte, 0, len(frames)*160)
	var msg []byte
	for _, f := range frames {
		if f.Code != frames[0].Code {
			fail(w, http.StatusBadRequest, "mixed commands in one request")
			return
		}
		msg = msg[:0]
		switch f.Code {
		case kmswire.KeyGenerate:
			var req kmswire.GenerateKeyRequest
			if req.Decode(f.Payload) != nil {
				fail(w, http.StatusBadRequest, "malformed request")
				return
			}
			if status, text := s.allowed(req.Name, req.Version); status != 0 {
				fail(w, status, text)
				return
			}
			n := req.Length
			if n == 0 {
				n = 32
			}
			if n > 1024 {
				fail(w, http.StatusBadRequest, "invalid key length")
				return
			}
			var dek [1024]byte
			rand.Read(dek[:n])
			ct, err := s.key.Seal(make([]byte, 0, int(n)+kmswire.Overhead), dek[:n], req.AssociatedData)
			if err != nil {
				fail(w, http.StatusInternalServerError, "internal error")
				return
			}
			resp := kmswire.GenerateKeyResponse{Version: 1, Plaintext: dek[:n], Ciphertext: ct}
			msg = resp.Append(msg)
			clear(dek[:n])
		case kmswire.KeyDecrypt:
			var req kmswire.DecryptRequest
			if req.Decode(f.Payload) != nil {
				fail(w, http.StatusBadRequest, "malformed request")
				return
			}
			if status, text := s.allowed(req.Name, req.Version); status != 0 {
				fail(w, status, text)
				return
			}
			pt, err := s.key.Open(nil, req.Ciphertext, req.AssociatedData)
			if err != nil {
				fail(w, http.StatusBadRequest, "invalid ciphertext")
				return
			}
			msg = kmswire.AppendDecryptResponse(msg, pt)
			clear(pt)
		default:
			fail(w, http.StatusBadRequest, "unsupported command")
			return
		}
		out = kmswire.AppendFrame(out, f.Code, msg)
	}
	h := w.Header()
	h["Content-Type"] = []string{"application/octet-stream"}
	h["Content-Length"] = []string{strconv.Itoa(len(out))}
	w.WriteHeader(http.StatusOK)
	w.Write(out)
}

// allowed checks the key name and version: the policy of the benchmark's User allows the data
// key commands on every key, and there is one key with one version.
func (s *server) allowed(name string, version uint32) (int, string) {
	if name != s.keyName || (version != 0 && version != 1) {
		if strings.TrimSpace(name) == "" {
			return http.StatusBadRequest, "invalid key name"
		}
		return http.StatusNotFound, "key does not exist"
	}
	return 0, ""
}
