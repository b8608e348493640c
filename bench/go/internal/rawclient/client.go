// Package rawclient is a minimal HTTP/1.1 and HTTP/2 client over crypto/tls for one job: POST
// pre-encoded bodies to one URL as cheaply as possible, so that a load generator on the same
// machine as the server stays far below the server's CPU per request.
//
// Go's net/http client hands every request through several goroutines, channels and
// allocations; here a request is one write (headers and body in one buffer) and the reads of
// its response. HTTP/2 keeps what correctness needs (flow control in both directions,
// SETTINGS, PING, GOAWAY, RST_STREAM, CONTINUATION, padding) and nothing more: no server push,
// no priorities, and HPACK without a dynamic table (SETTINGS_HEADER_TABLE_SIZE = 0, so response
// headers decode without state; only :status is read).
package rawclient

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/url"
	"sync/atomic"
	"time"
)

// Answer is one response: the status (0 if unknown), the body (in the caller's buffer).
type Answer struct {
	Status int
	Body   []byte
}

// Conn sends one request at a time per caller; HTTP/2 connections accept concurrent callers.
type Conn interface {
	// Do sends body and returns the answer, with the body appended to buf[:0].
	Do(body []byte, buf []byte) (Answer, error)
	Close() error
}

// Target is where requests go and how to reach it.
type Target struct {
	Host string // host:port, for the TCP dial and the Host / :authority header
	Path string // path and query
	TLS  *tls.Config
	// Dials counts TCP connections opened (to check that connections are reused).
	Dials *atomic.Int64
}

// ParseURL splits an https:// URL into host:port and path.
func ParseURL(raw string) (host, path string, err error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", "", err
	}
	if u.Scheme != "https" {
		return "", "", errors.New("only https:// URLs")
	}
	host = u.Host
	if u.Port() == "" {
		host = net.JoinHostPort(u.Hostname(), "443")
	}
	return host, u.RequestURI(), nil
}

func (t *Target) dial(protos []string) (*tls.Conn, error) {
	if t.Dials != nil {
		t.Dials.Add(1)
	}
	d := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	cfg := t.TLS.Clone()
	cfg.NextProtos = protos
	if cfg.ServerName == "" {
		h, _, _ := net.SplitHostPort(t.Host)
		cfg.ServerName = h
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	raw, err := d.DialContext(ctx, "tcp", t.Host)
	if err != nil {
		return nil, err
	}
	// Requests are single small writes: send them at once.
	raw.(*net.TCPConn).SetNoDelay(true)
	c := tls.Client(raw, cfg)
	if err := c.HandshakeContext(ctx); err != nil {
		raw.Close()
		return nil, err
	}
	return c, nil
}

// appendUint appends the decimal digits of v.
func appendUint(dst []byte, v int) []byte {
	var b [20]byte
	i := len(b)
	for {
		i--
		b[i] = byte('0' + v%10)
		v /= 10
		if v == 0 {
			break
		}
	}
	return append(dst, b[i:]...)
}
