package interop

// TestWireV06 speaks, on the wire, what the newer SDK generation (kms-go v0.6.0) adds or
// changes: the MAC, AddHSM and RemoveHSM commands, Restart (per host with ?self, and the
// whole cluster), the Encrypt response framed with its own code (205), the HSM fields of the
// node status, and the log request/record layout without the request fields. The Go module
// proxy serves only the SDK version MinIO pins, so the shapes here are written from the v0.6
// public API documentation and kms-wire.md (clean room: no SDK code is copied); the requests
// are built and the answers decoded with protowire.
//
// It restarts the node under test twice (its process re-executes itself), so it runs last.
// Configuration: MINKMS_CLUSTER_ENDPOINTS, MINKMS_CLUSTER_API_KEY, MINKMS_CLUSTER_CA_FILE.

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"aead.dev/mtls"
	"github.com/minio/kms-go/kms"
	"google.golang.org/protobuf/encoding/protowire"
)

// v0.6 command codes (kms-wire.md §2.3).
const (
	v06ClusterStatus = 3
	v06AddHSM        = 5
	v06RemoveHSM     = 6
	v06Encrypt       = 205
	v06Decrypt       = 206
	v06MAC           = 210
)

// v06Client is a bare HTTPS client with the API key's certificate, as the SDK builds it.
type v06Client struct {
	t    *testing.T
	http *http.Client
	host string
}

func newV06Client(t *testing.T, cfg config, key mtls.PrivateKey) *v06Client {
	t.Helper()
	cert, err := kms.GenerateCertificate(key, nil)
	if err != nil {
		t.Fatalf("client certificate: %v", err)
	}
	tr := &http.Transport{
		TLSClientConfig:   &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: cfg.roots, Certificates: []tls.Certificate{cert}},
		ForceAttemptHTTP2: true,
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &v06Client{t: t, http: &http.Client{Transport: tr}, host: cfg.endpoints[0]}
}

// do sends one request and returns status, content type and body.
func (c *v06Client) do(ctx context.Context, method, path string, body []byte, accept string) (int, string, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, "https://"+c.host+path, bytes.NewReader(body))
	if err != nil {
		return 0, "", nil, err
	}
	if body == nil {
		req.Body = nil
		req.ContentLength = 0
	} else {
		req.Header.Set("Content-Type", "application/octet-stream")
	}
	req.Header.Set("Accept", accept)
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, "", nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get("Content-Type"), data, err
}

// frames posts command frames of one code (v0.6 framing is unchanged) and splits the answer.
func (c *v06Client) frames(ctx context.Context, enclave string, code uint16, payloads ...[]byte) ([]uint16, [][]byte, error) {
	var body []byte
	for _, p := range payloads {
		body = binary.BigEndian.AppendUint16(body, code)
		body = binary.BigEndian.AppendUint32(body, uint32(len(p)))
		body = append(body, p...)
	}
	path := "/v1/kms"
	if enclave != "" {
		path += "/" + enclave
	}
	status, ctype, data, err := c.do(ctx, http.MethodPost, path, body, "application/*")
	if err != nil {
		return nil, nil, err
	}
	if status != http.StatusOK {
		return nil, nil, wireError(status, ctype, data)
	}
	var codes []uint16
	var out [][]byte
	for len(data) > 0 {
		if len(data) < 6 {
			return nil, nil, fmt.Errorf("truncated frame")
		}
		n := binary.BigEndian.Uint32(data[2:])
		if uint32(len(data)-6) < n {
			return nil, nil, fmt.Errorf("frame overruns the body")
		}
		codes = append(codes, binary.BigEndian.Uint16(data))
		out = append(out, data[6:6+n])
		data = data[6+n:]
	}
	return codes, out, nil
}

// wireError turns an error answer into a kms.Error, the way the SDK reads it (§3).
func wireError(status int, ctype string, body []byte) error {
	msg := string(body)
	switch ctype {
	case "application/json":
		var e struct {
			Message string `json:"message"`
		}
		if json.Unmarshal(body, &e) == nil {
			msg = e.Message
		}
	case "application/octet-stream":
		if f := fields(body); len(f[1]) > 0 {
			msg = string(f[1][0].bytes)
		}
	}
	return kms.Error{Code: status, Err: msg}
}

type field struct {
	varint uint64
	bytes  []byte
}

// fields decodes one protobuf message into field number → values (repeated in order).
func fields(b []byte) map[protowire.Number][]field {
	out := map[protowire.Number][]field{}
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return out
		}
		b = b[n:]
		switch typ {
		case protowire.VarintType:
			v, m := protowire.ConsumeVarint(b)
			if m < 0 {
				return out
			}
			out[num] = append(out[num], field{varint: v})
			b = b[m:]
		case protowire.BytesType:
			v, m := protowire.ConsumeBytes(b)
			if m < 0 {
				return out
			}
			out[num] = append(out[num], field{bytes: v})
			b = b[m:]
		default:
			m := protowire.ConsumeFieldValue(num, typ, b)
			if m < 0 {
				return out
			}
			b = b[m:]
		}
	}
	return out
}

func pbBool(b []byte, num protowire.Number, v bool) []byte {
	if !v {
		return b
	}
	return protowire.AppendVarint(protowire.AppendTag(b, num, protowire.VarintType), 1)
}

func pbSint(b []byte, num protowire.Number, v int64) []byte {
	return protowire.AppendVarint(protowire.AppendTag(b, num, protowire.VarintType), protowire.EncodeZigZag(v))
}

func pbTime(b []byte, num protowire.Number, t time.Time) []byte {
	ts := pbUint(nil, 1, uint64(t.Unix()))
	return protowire.AppendBytes(protowire.AppendTag(b, num, protowire.BytesType), ts)
}

func wantWireErr(t *testing.T, what string, err error, status int, message string) {
	t.Helper()
	var e kms.Error
	if !errors.As(err, &e) || e.Code != status || e.Err != message {
		t.Errorf("%s: got %v, want %d %q", what, err, status, message)
	}
}

// waitRestarted waits until the node's process is younger than `since` and it serves.
func waitRestarted(t *testing.T, ctx context.Context, c *kms.Client, since time.Time) time.Duration {
	t.Helper()
	for {
		st, err := c.ClusterStatus(ctx, &kms.ClusterStatusRequest{})
		if err == nil && len(st.NodesUp) == 1 {
			for _, n := range st.NodesUp {
				if n.UpTime < time.Since(since) && c.Ready(ctx, &kms.ReadinessRequest{}) == nil {
					return time.Since(since)
				}
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("the node did not come back after its restart: %v (last error: %v)", ctx.Err(), err)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func TestWireV06(t *testing.T) {
	cfg := loadConfigFrom(t, "MINKMS_CLUSTER_")
	root, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	step := func() context.Context { return ctxFor(t, root) }
	sys := cfg.client(t, cfg.rootKey)
	wire := newV06Client(t, cfg, cfg.rootKey)
	enclave := "v06-" + randHex(4)
	must(t, "CreateEnclave", sys.CreateEnclave(step(), &kms.CreateEnclaveRequest{Name: enclave}))
	must(t, "CreateKey", sys.CreateKey(step(), enclave, &kms.CreateKeyRequest{Name: "k", Type: kms.AES256}))

	t.Run("MAC", func(t *testing.T) {
		// v0.6: MAC(ctx, enclave, reqs ...*MACRequest{Name, Version, Message}) → []*MACResponse{Version, MAC}.
		req := func(m string) []byte { return pbBytes(pbString(nil, 1, "k"), 3, []byte(m)) }
		codes, frames, err := wire.frames(step(), enclave, v06MAC, req("a"), req("a"), req("b"))
		must(t, "KEY:MAC", err)
		if len(frames) != 3 || slices.ContainsFunc(codes, func(c uint16) bool { return c != v06MAC }) {
			t.Fatalf("KEY:MAC: %d frames with codes %v, want 3 with code 210", len(frames), codes)
		}
		f0, f1, f2 := fields(frames[0]), fields(frames[1]), fields(frames[2])
		if f0[1][0].varint != 1 || len(f0[2][0].bytes) != 32 {
			t.Errorf("MACResponse: version %d, %d-byte MAC, want 1 and 32 (HMAC-SHA256)", f0[1][0].varint, len(f0[2][0].bytes))
		}
		if !bytes.Equal(f0[2][0].bytes, f1[2][0].bytes) || bytes.Equal(f0[2][0].bytes, f2[2][0].bytes) {
			t.Errorf("MACs: same message must give the same MAC, another message another one")
		}
	})

	t.Run("EncryptResponseCode", func(t *testing.T) {
		// v0.6 decodes Encrypt responses framed with KEY:ENCRYPT (205), the bug kms-go#30 fixed.
		msg := pbBytes(pbBytes(pbString(nil, 1, "k"), 3, []byte("plaintext")), 4, []byte("ad"))
		codes, frames, err := wire.frames(step(), enclave, v06Encrypt, msg)
		must(t, "KEY:ENCRYPT", err)
		if len(codes) != 1 || codes[0] != v06Encrypt {
			t.Fatalf("KEY:ENCRYPT response codes %v, want [205]", codes)
		}
		f := fields(frames[0])
		dec := pbBytes(pbBytes(pbUint(pbString(nil, 1, "k"), 2, f[1][0].varint), 3, f[2][0].bytes), 4, []byte("ad"))
		codes, frames, err = wire.frames(step(), enclave, v06Decrypt, dec)
		must(t, "KEY:DECRYPT", err)
		if codes[0] != v06Decrypt || string(fields(frames[0])[1][0].bytes) != "plaintext" {
			t.Errorf("KEY:DECRYPT of the Encrypt output: code %d, plaintext %q", codes[0], fields(frames[0])[1][0].bytes)
		}
	})

	t.Run("AddHSM", func(t *testing.T) {
		// v0.6: AddHSM(ctx, *AddHSMRequest{Name, Overwrite}).
		_, _, err := wire.frames(step(), "", v06AddHSM, pbBool(pbString(nil, 1, softHSM), 2, true))
		must(t, "CLUSTER:ADDHSM (overwrite: reseal)", err)
		_, _, err = wire.frames(step(), "", v06AddHSM, pbString(nil, 1, softHSM))
		wantWireErr(t, "CLUSTER:ADDHSM of an HSM with an entry", err, 409, "hsm already has a sealed root key entry")
		_, _, err = wire.frames(step(), "", v06AddHSM, pbString(nil, 1, "hsm:minio:nowhere"))
		wantWireErr(t, "CLUSTER:ADDHSM of an unconfigured HSM", err, 400, "hsm is not configured")
	})

	t.Run("RemoveHSM", func(t *testing.T) {
		// v0.6: RemoveHSM(ctx, *RemoveHSMRequest{Name}). The node has one HSM: its entry stays.
		_, _, err := wire.frames(step(), "", v06RemoveHSM, pbString(nil, 1, "hsm:minio:nowhere"))
		wantWireErr(t, "CLUSTER:REMOVEHSM of an unknown HSM", err, 404, "hsm does not exist")
		_, _, err = wire.frames(step(), "", v06RemoveHSM, pbString(nil, 1, softHSM))
		wantWireErr(t, "CLUSTER:REMOVEHSM of the last entry", err, 400, "cannot remove the last hsm entry")
	})

	t.Run("ServerStatusHSMs", func(t *testing.T) {
		// v0.6 reads ServerStatusResponse 19 (HSMs) and 20 (ConfiguredHSMs) as typed fields.
		_, frames, err := wire.frames(step(), "", v06ClusterStatus, nil)
		must(t, "CLUSTER:STATUS", err)
		for _, entry := range fields(frames[0])[1] {
			node := fields(fields(entry.bytes)[2][0].bytes)
			var hsms, configured []string
			for _, f := range node[19] {
				hsms = append(hsms, string(f.bytes))
			}
			for _, f := range node[20] {
				configured = append(configured, string(f.bytes))
			}
			if !slices.Contains(hsms, softHSM) || !slices.Contains(configured, softHSM) {
				t.Errorf("node status: HSMs %q, ConfiguredHSMs %q, want both to hold %q", hsms, configured, softHSM)
			}
		}
	})

	t.Run("Logs", func(t *testing.T) {
		// A WARN record: a user of the enclave without a policy is refused a command.
		user := newAPIKey(t)
		must(t, "CreateIdentity", sys.CreateIdentity(step(), enclave, &kms.CreateIdentityRequest{Identity: user.Identity(), Privilege: kms.User}))
		err := cfg.client(t, user).CreateKey(step(), enclave, &kms.CreateKeyRequest{Name: "denied"})
		wantErr(t, "CreateKey without a policy", err, kms.ErrPermission)

		// v0.6 LogRequest: 1 Level, 2 Message, 3 Since, 4 TraceLevel (sint32). Records: 1–4
		// (field 5, the request, is unknown to v0.6 and skipped).
		read := func(traceLevel int64) (found, traced bool) {
			ctx, cancel := context.WithTimeout(root, 10*time.Second)
			defer cancel()
			body := pbSint(pbTime(pbSint(nil, 1, 4), 3, time.Now().Add(-time.Hour)), 4, traceLevel)
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "https://"+wire.host+"/v1/debug/log", bytes.NewReader(body))
			req.Header.Set("Content-Type", "application/octet-stream")
			req.Header.Set("Accept", "application/octet-stream")
			resp, err := wire.http.Do(req)
			if err != nil {
				t.Fatalf("log stream: %v", err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/octet-stream" {
				t.Fatalf("log stream: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
			}
			buf := make([]byte, 4096)
			for {
				if _, err := io.ReadFull(resp.Body, buf[:4]); err != nil {
					return false, false
				}
				n := binary.BigEndian.Uint32(buf)
				if n > 4096 {
					t.Fatalf("log record of %d bytes", n)
				}
				if _, err := io.ReadFull(resp.Body, buf[:n]); err != nil {
					return false, false
				}
				f := fields(buf[:n])
				if len(f[1]) == 0 || len(f[2]) == 0 || len(f[3]) == 0 {
					t.Fatalf("log record without level, time or message: % x", buf[:n])
				}
				level := protowire.DecodeZigZag(f[1][0].varint)
				if level < 4 {
					t.Errorf("log record of level %d in a stream of WARN and above", level)
				}
				if level == 4 && strings.HasPrefix(string(f[3][0].bytes), "KEY:CREATE") {
					return true, len(f[4]) > 0
				}
			}
		}
		if found, traced := read(4); !found || !traced {
			t.Errorf("TraceLevel WARN: denied KEY:CREATE record found %v, with a trace %v; want both", found, traced)
		}
		if found, traced := read(8); !found || traced {
			t.Errorf("TraceLevel ERROR: denied KEY:CREATE record found %v, with a trace %v; want found without", found, traced)
		}
	})

	t.Run("RestartRefusedToOthers", func(t *testing.T) {
		user := newV06Client(t, cfg, newAPIKey(t))
		status, ctype, body, err := user.do(step(), http.MethodPost, "/v1/debug/restart?self", nil, "application/*")
		must(t, "restart by a stranger", err)
		wantWireErr(t, "restart by a stranger", wireError(status, ctype, body), 403, "access denied: insufficient permissions")
	})

	t.Run("RestartSelf", func(t *testing.T) {
		// v0.6: Restart with explicit hosts → POST /v1/debug/restart?self to each, status only.
		since := time.Now()
		status, ctype, body, err := wire.do(step(), http.MethodPost, "/v1/debug/restart?self", nil, "application/*")
		must(t, "restart ?self", err)
		if status != 200 {
			t.Fatalf("restart ?self: %v", wireError(status, ctype, body))
		}
		ctx, cancel := context.WithTimeout(root, 60*time.Second)
		defer cancel()
		t.Logf("back after %v", waitRestarted(t, ctx, sys, since))
		if _, err := sys.KeyStatus(step(), enclave, &kms.KeyStatusRequest{Name: "k"}); err != nil {
			t.Errorf("after the restart: %s", describe(err))
		}
	})

	t.Run("RestartCluster", func(t *testing.T) {
		// v0.6: Restart without hosts → POST /v1/debug/restart: the whole cluster, here one node.
		since := time.Now()
		status, ctype, body, err := wire.do(step(), http.MethodPost, "/v1/debug/restart", nil, "application/*")
		must(t, "restart", err)
		if status != 200 {
			t.Fatalf("restart: %v", wireError(status, ctype, body))
		}
		ctx, cancel := context.WithTimeout(root, 60*time.Second)
		defer cancel()
		t.Logf("back after %v", waitRestarted(t, ctx, sys, since))
		must(t, "DeleteEnclave after the restarts", sys.DeleteEnclave(step(), &kms.DeleteEnclaveRequest{Name: enclave}))
	})
}
