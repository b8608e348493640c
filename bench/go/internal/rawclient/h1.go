package rawclient

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"
)

// H1 is one HTTP/1.1 connection with one request in flight; not safe for concurrent use.
type H1 struct {
	t         *Target
	closeEach bool
	timeout   time.Duration
	conn      *tls.Conn
	br        *bufio.Reader
	wbuf      []byte
	reused    bool
}

// NewH1 returns a connection that dials on first use. closeEach sends `Connection: close` and
// opens a new connection (a full TLS handshake) for every request.
func NewH1(t *Target, closeEach bool, timeout time.Duration) *H1 {
	return &H1{t: t, closeEach: closeEach, timeout: timeout}
}

func (c *H1) Close() error {
	if c.conn == nil {
		return nil
	}
	err := c.conn.Close()
	c.conn = nil
	return err
}

func (c *H1) connect() error {
	conn, err := c.t.dial([]string{"http/1.1"})
	if err != nil {
		return err
	}
	c.conn = conn
	if c.br == nil {
		c.br = bufio.NewReaderSize(conn, 32<<10)
	} else {
		c.br.Reset(conn)
	}
	c.reused = false
	return nil
}

// errStale: a kept-alive connection was closed by the server before it answered.
var errStale = errors.New("connection closed before the response")

func (c *H1) Do(body []byte, buf []byte) (Answer, error) {
	a, err := c.do(body, buf)
	if err == errStale {
		a, err = c.do(body, buf) // once, on a new connection
	}
	return a, err
}

func (c *H1) do(body []byte, buf []byte) (Answer, error) {
	if c.conn == nil {
		if err := c.connect(); err != nil {
			return Answer{}, err
		}
	}
	reused := c.reused
	c.reused = true
	// The whole request in one buffer, one write: the headers of the Go SDK (kms-go).
	w := append(c.wbuf[:0], "POST "...)
	w = append(w, c.t.Path...)
	w = append(w, " HTTP/1.1\r\nHost: "...)
	w = append(w, c.t.Host...)
	w = append(w, "\r\nUser-Agent: minkms-bench\r\nContent-Type: application/octet-stream\r\nAccept: application/*\r\nContent-Length: "...)
	w = appendUint(w, len(body))
	if c.closeEach {
		w = append(w, "\r\nConnection: close"...)
	}
	w = append(w, "\r\n\r\n"...)
	w = append(w, body...)
	c.wbuf = w
	if c.timeout > 0 {
		c.conn.SetDeadline(time.Now().Add(c.timeout))
	}
	if _, err := c.conn.Write(w); err != nil {
		c.Close()
		if reused {
			return Answer{}, errStale
		}
		return Answer{}, err
	}
	a, keep, err := c.readResponse(buf)
	if err != nil {
		c.Close()
		if reused && err == io.EOF {
			return Answer{}, errStale
		}
		return Answer{}, err
	}
	if !keep || c.closeEach {
		c.Close()
	}
	return a, nil
}

func (c *H1) readResponse(buf []byte) (Answer, bool, error) {
	line, err := c.br.ReadSlice('\n')
	if err != nil {
		return Answer{}, false, err
	}
	// "HTTP/1.1 200 OK\r\n"
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) {
		return Answer{}, false, fmt.Errorf("malformed status line %q", line)
	}
	status, err := strconv.Atoi(string(line[9:12]))
	if err != nil {
		return Answer{}, false, fmt.Errorf("malformed status line %q", line)
	}
	keep := line[7] == '1' // HTTP/1.1 keeps the connection unless told otherwise
	length := -1
	chunked := false
	for {
		line, err = c.br.ReadSlice('\n')
		if err != nil {
			return Answer{}, false, err
		}
		if len(line) <= 2 { // the empty line
			break
		}
		colon := bytes.IndexByte(line, ':')
		if colon < 0 {
			continue
		}
		name := line[:colon]
		value := bytes.TrimSpace(line[colon+1:])
		switch {
		case asciiEqualFold(name, "content-length"):
			length, err = strconv.Atoi(string(value))
			if err != nil || length < 0 {
				return Answer{}, false, fmt.Errorf("malformed Content-Length %q", value)
			}
		case asciiEqualFold(name, "transfer-encoding"):
			chunked = asciiEqualFold(value, "chunked")
		case asciiEqualFold(name, "connection"):
			if asciiEqualFold(value, "close") {
				keep = false
			} else if asciiEqualFold(value, "keep-alive") {
				keep = true
			}
		}
	}
	buf = buf[:0]
	switch {
	case status == 204 || status == 304 || status < 200: // never a body (RFC 9112 §6.3)
	case chunked:
		buf, err = c.readChunked(buf)
	case length >= 0:
		buf = grow(buf, length)
		_, err = io.ReadFull(c.br, buf)
	default:
		keep = false // the body ends with the connection
		var all []byte
		all, err = io.ReadAll(c.br)
		buf = append(buf, all...)
	}
	if err != nil {
		return Answer{}, false, err
	}
	return Answer{Status: status, Body: buf}, keep, nil
}

func (c *H1) readChunked(buf []byte) ([]byte, error) {
	for {
		line, err := c.br.ReadSlice('\n')
		if err != nil {
			return buf, err
		}
		if i := bytes.IndexByte(line, ';'); i >= 0 {
			line = line[:i]
		}
		n, err := strconv.ParseUint(string(bytes.TrimSpace(line)), 16, 31)
		if err != nil {
			return buf, fmt.Errorf("malformed chunk size %q", line)
		}
		if n == 0 {
			for { // trailers, then the empty line
				line, err = c.br.ReadSlice('\n')
				if err != nil || len(line) <= 2 {
					return buf, err
				}
			}
		}
		start := len(buf)
		buf = grow(buf, start+int(n))
		if _, err := io.ReadFull(c.br, buf[start:]); err != nil {
			return buf, err
		}
		if _, err := c.br.Discard(2); err != nil {
			return buf, err
		}
	}
}

// grow returns buf with length n, reusing its array when it is large enough.
func grow(buf []byte, n int) []byte {
	if cap(buf) >= n {
		return buf[:n]
	}
	nb := make([]byte, n, max(n, 2*cap(buf)))
	copy(nb, buf)
	return nb
}

func asciiEqualFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range len(b) {
		x, y := b[i], s[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}
