package rawclient

import (
	"bufio"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
)

// HTTP/2 (RFC 9113) frame types and flags used here.
const (
	frameData         = 0x0
	frameHeaders      = 0x1
	frameRSTStream    = 0x3
	frameSettings     = 0x4
	framePushPromise  = 0x5
	framePing         = 0x6
	frameGoAway       = 0x7
	frameWindowUpdate = 0x8
	frameContinuation = 0x9

	flagEndStream  = 0x1
	flagAck        = 0x1
	flagEndHeaders = 0x4
	flagPadded     = 0x8
	flagPriority   = 0x20

	settingHeaderTableSize   = 0x1
	settingEnablePush        = 0x2
	settingInitialWindowSize = 0x4
	settingMaxFrameSize      = 0x5

	preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

	// Our receive windows: large, so that the server never waits for us; the connection's
	// window is topped up after half of it was used.
	recvWindow = 1 << 30
)

// H2 is one HTTP/2 connection; Do may be called concurrently (one stream per call). It dials on
// first use and again after the connection failed.
type H2 struct {
	t *Target

	mu       sync.Mutex
	cond     *sync.Cond // flow-control waits
	conn     *tls.Conn
	bw       *bufio.Writer
	dead     error // why the current connection ended; nil while it is usable
	nextID   uint32
	streams  map[uint32]*h2stream
	connSend int64 // connection send window
	initSend int64 // the server's SETTINGS_INITIAL_WINDOW_SIZE
	maxFrame int   // the server's SETTINGS_MAX_FRAME_SIZE
	consumed int64 // received DATA not yet returned to the connection window
	hdr      []byte
	hprefix  []byte // the header block without content-length (constant)
}

type h2stream struct {
	send   int64
	status int
	body   []byte
	err    error
	done   chan struct{}
}

// NewH2 returns a connection that dials on first use.
func NewH2(t *Target) *H2 {
	c := &H2{t: t}
	c.cond = sync.NewCond(&c.mu)
	// Request headers as HPACK literals without indexing (static-table names), so that the
	// server's decoder state never depends on us: the same headers as the Go SDK (kms-go).
	p := []byte{0x83, 0x87} // :method POST, :scheme https
	p = appendLiteral(p, 4, c.t.Path)
	p = appendLiteral(p, 1, c.t.Host)
	p = appendLiteral(p, 31, "application/octet-stream") // content-type
	p = appendLiteral(p, 19, "application/*")            // accept
	p = appendLiteral(p, 58, "minkms-bench")             // user-agent
	c.hprefix = p
	return c
}

// appendLiteral appends "literal header field without indexing, indexed name" (RFC 7541 §6.2.2).
func appendLiteral(dst []byte, nameIndex int, value string) []byte {
	dst = appendHpackInt(dst, 4, 0x00, nameIndex)
	dst = appendHpackInt(dst, 7, 0x00, len(value))
	return append(dst, value...)
}

// appendHpackInt appends an HPACK integer with an n-bit prefix (RFC 7541 §5.1).
func appendHpackInt(dst []byte, n uint, flags byte, v int) []byte {
	limit := 1<<n - 1
	if v < limit {
		return append(dst, flags|byte(v))
	}
	dst = append(dst, flags|byte(limit))
	v -= limit
	for v >= 128 {
		dst = append(dst, byte(v%128+128))
		v /= 128
	}
	return append(dst, byte(v))
}

func appendFrameHeader(dst []byte, length int, typ, flags byte, stream uint32) []byte {
	dst = append(dst, byte(length>>16), byte(length>>8), byte(length), typ, flags)
	return binary.BigEndian.AppendUint32(dst, stream&0x7fffffff)
}

func (c *H2) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conn == nil {
		return nil
	}
	c.failLocked(errors.New("connection closed"))
	return nil
}

// connectLocked opens a connection: preface, our SETTINGS, a large connection window.
func (c *H2) connectLocked() error {
	conn, err := c.t.dial([]string{"h2"})
	if err != nil {
		return err
	}
	if p := conn.ConnectionState().NegotiatedProtocol; p != "h2" {
		conn.Close()
		return fmt.Errorf("the server did not negotiate HTTP/2 (ALPN %q)", p)
	}
	bw := bufio.NewWriterSize(conn, 32<<10)
	b := append([]byte(nil), preface...)
	b = appendFrameHeader(b, 18, frameSettings, 0, 0)
	// No dynamic table: response headers decode without state (only :status is read).
	b = binary.BigEndian.AppendUint16(b, settingHeaderTableSize)
	b = binary.BigEndian.AppendUint32(b, 0)
	b = binary.BigEndian.AppendUint16(b, settingEnablePush)
	b = binary.BigEndian.AppendUint32(b, 0)
	b = binary.BigEndian.AppendUint16(b, settingInitialWindowSize)
	b = binary.BigEndian.AppendUint32(b, recvWindow)
	b = appendFrameHeader(b, 4, frameWindowUpdate, 0, 0)
	b = binary.BigEndian.AppendUint32(b, recvWindow-65535)
	if _, err := bw.Write(b); err != nil {
		conn.Close()
		return err
	}
	if err := bw.Flush(); err != nil {
		conn.Close()
		return err
	}
	c.conn, c.bw, c.dead = conn, bw, nil
	c.nextID = 1
	c.streams = map[uint32]*h2stream{}
	c.connSend, c.initSend, c.maxFrame, c.consumed = 65535, 65535, 16384, 0
	go c.readLoop(conn)
	return nil
}

// failLocked ends the current connection and every stream on it.
func (c *H2) failLocked(err error) {
	if c.dead == nil {
		c.dead = err
	}
	for id, s := range c.streams {
		s.err = c.dead
		close(s.done)
		delete(c.streams, id)
	}
	if c.conn != nil {
		c.conn.Close()
	}
	c.cond.Broadcast()
}

func (c *H2) Do(body []byte, buf []byte) (Answer, error) {
	c.mu.Lock()
	if c.conn == nil || c.dead != nil {
		if err := c.connectLocked(); err != nil {
			c.mu.Unlock()
			return Answer{}, err
		}
	}
	if c.nextID > 1<<30 { // stream ids run out: a new connection
		c.failLocked(errors.New("stream ids exhausted"))
		if err := c.connectLocked(); err != nil {
			c.mu.Unlock()
			return Answer{}, err
		}
	}
	id := c.nextID
	c.nextID += 2
	s := &h2stream{send: c.initSend, body: buf[:0], done: make(chan struct{})}
	c.streams[id] = s

	block := append(c.hdr[:0], c.hprefix...)
	block = appendHpackInt(block, 4, 0x00, 28) // content-length
	var digits [20]byte
	d := appendUint(digits[:0], len(body))
	block = appendHpackInt(block, 7, 0x00, len(d))
	block = append(block, d...)
	c.hdr = block
	flags := byte(flagEndHeaders)
	if len(body) == 0 {
		flags |= flagEndStream
	}
	var fh [9]byte
	c.bw.Write(appendFrameHeader(fh[:0], len(block), frameHeaders, flags, id))
	c.bw.Write(block)
	rest := body
	for len(rest) > 0 && c.dead == nil {
		if c.connSend <= 0 || s.send <= 0 {
			// Out of window: send what we have and wait for the server's WINDOW_UPDATE.
			if err := c.bw.Flush(); err != nil {
				c.failLocked(err)
				break
			}
			c.cond.Wait()
			continue
		}
		n := int64(min(len(rest), c.maxFrame))
		n = min(n, c.connSend, s.send)
		f := byte(0)
		if int(n) == len(rest) {
			f = flagEndStream
		}
		c.bw.Write(appendFrameHeader(fh[:0], int(n), frameData, f, id))
		c.bw.Write(rest[:n])
		c.connSend -= n
		s.send -= n
		rest = rest[n:]
	}
	if c.dead == nil {
		if err := c.bw.Flush(); err != nil {
			c.failLocked(err)
		}
	}
	c.mu.Unlock()
	<-s.done
	if s.err != nil {
		return Answer{}, s.err
	}
	return Answer{Status: s.status, Body: s.body}, nil
}

// finishLocked completes a stream.
func (c *H2) finishLocked(id uint32, s *h2stream) {
	delete(c.streams, id)
	close(s.done)
}

func (c *H2) readLoop(conn *tls.Conn) {
	br := bufio.NewReaderSize(conn, 64<<10)
	var hdr [9]byte
	payload := make([]byte, 16384)
	var block []byte   // header block being assembled (HEADERS + CONTINUATION)
	var blockID uint32 // its stream
	blockEnd := false  // its HEADERS carried END_STREAM
	fail := func(err error) {
		c.mu.Lock()
		if c.conn == conn {
			c.failLocked(err)
		}
		c.mu.Unlock()
	}
	for {
		if _, err := io.ReadFull(br, hdr[:]); err != nil {
			fail(err)
			return
		}
		length := int(hdr[0])<<16 | int(hdr[1])<<8 | int(hdr[2])
		typ, flags := hdr[3], hdr[4]
		id := binary.BigEndian.Uint32(hdr[5:]) & 0x7fffffff
		if length > len(payload) {
			if length > 1<<24 {
				fail(errors.New("frame too large"))
				return
			}
			payload = make([]byte, length)
		}
		p := payload[:length]
		if _, err := io.ReadFull(br, p); err != nil {
			fail(err)
			return
		}
		if blockID != 0 && typ != frameContinuation {
			fail(errors.New("protocol error: header block interrupted"))
			return
		}
		switch typ {
		case frameData:
			data, err := unpad(p, flags)
			if err != nil {
				fail(err)
				return
			}
			c.mu.Lock()
			if s := c.streams[id]; s != nil {
				s.body = append(s.body, data...)
				if flags&flagEndStream != 0 {
					c.finishLocked(id, s)
				}
			}
			c.consumed += int64(length)
			if c.consumed >= recvWindow/2 {
				var b [13]byte
				w := appendFrameHeader(b[:0], 4, frameWindowUpdate, 0, 0)
				w = binary.BigEndian.AppendUint32(w, uint32(c.consumed))
				c.consumed = 0
				c.bw.Write(w)
				c.bw.Flush()
			}
			c.mu.Unlock()
		case frameHeaders:
			frag, err := unpad(p, flags)
			if err == nil && flags&flagPriority != 0 {
				if len(frag) < 5 {
					err = errors.New("short HEADERS frame")
				} else {
					frag = frag[5:]
				}
			}
			if err != nil {
				fail(err)
				return
			}
			block = append(block[:0], frag...)
			blockEnd = flags&flagEndStream != 0
			if flags&flagEndHeaders == 0 {
				blockID = id
				continue
			}
			c.headers(id, block, blockEnd)
		case frameContinuation:
			if id != blockID {
				fail(errors.New("protocol error: unexpected CONTINUATION"))
				return
			}
			block = append(block, p...)
			if flags&flagEndHeaders != 0 {
				blockID = 0
				c.headers(id, block, blockEnd)
			}
		case frameRSTStream:
			code := uint32(0)
			if len(p) >= 4 {
				code = binary.BigEndian.Uint32(p)
			}
			c.mu.Lock()
			if s := c.streams[id]; s != nil {
				s.err = fmt.Errorf("stream reset by the server (error code %d)", code)
				c.finishLocked(id, s)
			}
			c.mu.Unlock()
		case frameSettings:
			if flags&flagAck != 0 {
				continue
			}
			c.mu.Lock()
			for i := 0; i+6 <= len(p); i += 6 {
				v := binary.BigEndian.Uint32(p[i+2:])
				switch binary.BigEndian.Uint16(p[i:]) {
				case settingInitialWindowSize:
					delta := int64(v) - c.initSend
					for _, s := range c.streams {
						s.send += delta
					}
					c.initSend = int64(v)
				case settingMaxFrameSize:
					c.maxFrame = int(v)
				}
			}
			var b [9]byte
			c.bw.Write(appendFrameHeader(b[:0], 0, frameSettings, flagAck, 0))
			c.bw.Flush()
			c.cond.Broadcast()
			c.mu.Unlock()
		case framePing:
			if flags&flagAck != 0 || len(p) != 8 {
				continue
			}
			c.mu.Lock()
			var b [17]byte
			w := appendFrameHeader(b[:0], 8, framePing, flagAck, 0)
			c.bw.Write(append(w, p...))
			c.bw.Flush()
			c.mu.Unlock()
		case frameWindowUpdate:
			if len(p) < 4 {
				continue
			}
			inc := int64(binary.BigEndian.Uint32(p) & 0x7fffffff)
			c.mu.Lock()
			if id == 0 {
				c.connSend += inc
			} else if s := c.streams[id]; s != nil {
				s.send += inc
			}
			c.cond.Broadcast()
			c.mu.Unlock()
		case frameGoAway:
			code := uint32(0)
			if len(p) >= 8 {
				code = binary.BigEndian.Uint32(p[4:])
			}
			fail(fmt.Errorf("GOAWAY from the server (error code %d)", code))
			return
		case framePushPromise:
			fail(errors.New("protocol error: PUSH_PROMISE although push is disabled"))
			return
		}
	}
}

// headers handles a complete response header block.
func (c *H2) headers(id uint32, block []byte, endStream bool) {
	status, err := decodeStatus(block)
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.streams[id]
	if s == nil {
		return
	}
	if err != nil {
		s.err = err
		c.finishLocked(id, s)
		return
	}
	if s.status == 0 { // the first block; a second one is trailers
		s.status = status
	}
	if endStream {
		c.finishLocked(id, s)
	}
}

func unpad(p []byte, flags byte) ([]byte, error) {
	if flags&flagPadded == 0 {
		return p, nil
	}
	if len(p) < 1 || int(p[0]) >= len(p) {
		return nil, errors.New("protocol error: bad padding")
	}
	return p[1 : len(p)-int(p[0])], nil
}
