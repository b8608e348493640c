package rawclient

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// A Go net/http server (HTTP/1.1 and HTTP/2): /echo answers with the request body,
// /status/N with status N and a short body, /chunked without a Content-Length.
func newServer(t *testing.T) (*httptest.Server, *Target) {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			w.WriteHeader(400)
			return
		}
		switch {
		case r.URL.Path == "/echo":
			if r.Header.Get("Content-Type") != "application/octet-stream" || r.ContentLength != int64(len(body)) {
				w.WriteHeader(400)
				return
			}
			w.Header().Set("Content-Length", strconv.Itoa(len(body)))
			w.Write(body)
		case strings.HasPrefix(r.URL.Path, "/status/"):
			code, _ := strconv.Atoi(strings.TrimPrefix(r.URL.Path, "/status/"))
			w.WriteHeader(code)
			fmt.Fprintf(w, "status %d", code)
		case r.URL.Path == "/chunked":
			w.Write([]byte("first "))
			w.(http.Flusher).Flush()
			w.Write([]byte("second"))
		}
	}))
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(srv.Close)
	pool := x509.NewCertPool()
	pool.AddCert(srv.Certificate())
	host, _, err := ParseURL(srv.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	return srv, &Target{Host: host, TLS: &tls.Config{RootCAs: pool}, Dials: new(atomic.Int64)}
}

func clients(tg *Target, path string) map[string]func() Conn {
	return map[string]func() Conn{
		"h1": func() Conn { t := *tg; t.Path = path; return NewH1(&t, false, 0) },
		"h2": func() Conn { t := *tg; t.Path = path; return NewH2(&t) },
	}
}

func TestEcho(t *testing.T) {
	_, tg := newServer(t)
	for name, mk := range clients(tg, "/echo") {
		t.Run(name, func(t *testing.T) {
			c := mk()
			defer c.Close()
			// Up to 1 MiB: beyond every flow-control window and frame size.
			for _, n := range []int{0, 1, 155, 16384, 16385, 70000, 1 << 20} {
				body := bytes.Repeat([]byte{byte(n)}, n)
				for range 3 {
					a, err := c.Do(body, nil)
					if err != nil {
						t.Fatalf("%d bytes: %v", n, err)
					}
					if a.Status != 200 || !bytes.Equal(a.Body, body) {
						t.Fatalf("%d bytes: status %d, %d bytes back", n, a.Status, len(a.Body))
					}
				}
			}
		})
	}
}

// Statuses through each HPACK representation Go's encoder uses: static entries (200, 404,
// 500), literals (403, 418) and Huffman-coded literals (210, 401: shorter in Huffman).
func TestStatus(t *testing.T) {
	_, tg := newServer(t)
	for _, code := range []int{200, 204, 210, 299, 401, 403, 404, 418, 500, 503} {
		for name, mk := range clients(tg, fmt.Sprintf("/status/%d", code)) {
			c := mk()
			for range 2 { // the second answer on a warm connection
				a, err := c.Do([]byte("x"), nil)
				if err != nil {
					t.Fatalf("%s %d: %v", name, code, err)
				}
				if a.Status != code {
					t.Fatalf("%s: status %d, want %d", name, a.Status, code)
				}
				if code != 204 && string(a.Body) != fmt.Sprintf("status %d", code) {
					t.Fatalf("%s %d: body %q", name, code, a.Body)
				}
			}
			c.Close()
		}
	}
}

func TestChunked(t *testing.T) {
	_, tg := newServer(t)
	c := clients(tg, "/chunked")["h1"]()
	defer c.Close()
	for range 2 {
		a, err := c.Do(nil, nil)
		if err != nil || a.Status != 200 || string(a.Body) != "first second" {
			t.Fatalf("%v %d %q", err, a.Status, a.Body)
		}
	}
}

// Many streams on one HTTP/2 connection at once, each with its own answer.
func TestConcurrentStreams(t *testing.T) {
	_, tg := newServer(t)
	tg.Dials.Store(0)
	c := clients(tg, "/echo")["h2"]()
	defer c.Close()
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for g := range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var buf []byte
			for i := range 50 {
				body := []byte(fmt.Sprintf("goroutine %d request %d %s", g, i, strings.Repeat("x", g*100)))
				a, err := c.Do(body, buf)
				if err != nil || a.Status != 200 || !bytes.Equal(a.Body, body) {
					errs <- fmt.Errorf("%d/%d: %v %d %q", g, i, err, a.Status, a.Body)
					return
				}
				buf = a.Body
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if n := tg.Dials.Load(); n != 1 {
		t.Fatalf("%d connections, want 1", n)
	}
}

func TestHuffmanDigits(t *testing.T) {
	// "401" = 011010 00000 00001 = 0x68 0x01 (16 bits, no padding).
	if v := huffmanDigits([]byte{0x68, 0x01}); v != 401 {
		t.Fatalf("got %d", v)
	}
	// "210" = 00010 00001 00000, then one bit of padding (1) = 0x10 0x41.
	if v := huffmanDigits([]byte{0x10, 0x41}); v != 210 {
		t.Fatalf("got %d", v)
	}
	// Padding with a zero bit, and too few digits, are refused.
	if v := huffmanDigits([]byte{0x10, 0x40}); v != 0 {
		t.Fatalf("got %d", v)
	}
	if v := huffmanDigits([]byte{0x07}); v != 0 {
		t.Fatalf("got %d", v)
	}
}
