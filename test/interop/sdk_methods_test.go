package interop

// TestSDKMethods calls every exported method of the pinned SDK's *kms.Client, with real
// arguments, against one etcd-backed node (so that the cluster membership methods do real
// work), records what each gave, and fails if a method was left out: the list is taken from
// the SDK itself by reflection, so a newer SDK with more methods fails here until they are
// called too.
//
// Configuration: MINKMS_CLUSTER_ENDPOINTS, MINKMS_CLUSTER_API_KEY, MINKMS_CLUSTER_CA_FILE (a
// node whose store is etcd). MINKMS_SDK_REPORT=FILE also writes the results as a Markdown
// table (test/interop/README.md holds the last one).

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"aead.dev/mtls"
	"github.com/minio/kms-go/kms"
	"github.com/minio/kms-go/kms/cmds"
)

// methodResults is what calling each SDK method gave.
type methodResults struct {
	mu      sync.Mutex
	results map[string]string
	failed  map[string]bool
}

// call runs f for the SDK method name and records its outcome: f returns what it checked.
func (m *methodResults) call(t *testing.T, name string, f func() (string, error)) {
	t.Helper()
	var (
		result string
		err    error
	)
	func() {
		defer func() {
			if r := recover(); r != nil {
				err = fmt.Errorf("SDK panicked: %v", r)
			}
		}()
		result, err = f()
	}()
	m.mu.Lock()
	defer m.mu.Unlock()
	if err != nil {
		t.Errorf("%s: %s", name, describe(err))
		m.results[name] = "FAIL: " + describe(err)
		m.failed[name] = true
		return
	}
	if prev, ok := m.results[name]; ok && !m.failed[name] {
		result = prev + "; " + result
	}
	m.results[name] = result
}

// knownSDKBug is the one failure that is the pinned SDK's and not the server's.
const knownSDKBug = "kms-go#30"

func TestSDKMethods(t *testing.T) {
	cfg := loadConfigFrom(t, "MINKMS_CLUSTER_")
	root, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	step := func() context.Context { return ctxFor(t, root) }

	res := &methodResults{results: map[string]string{}, failed: map[string]bool{}}
	sys := cfg.client(t, cfg.rootKey)
	rootID := cfg.rootKey.Identity()
	host := cfg.endpoints[0]
	enclave := "sdk-" + randHex(4)

	res.call(t, "Hosts", func() (string, error) {
		if got := sys.Hosts(); !slices.Equal(got, cfg.endpoints) {
			return "", fmt.Errorf("Hosts() = %v, want %v", got, cfg.endpoints)
		}
		return "the configured endpoints", nil
	})
	res.call(t, "Version", func() (string, error) {
		vs, err := sys.Version(step(), &kms.VersionRequest{})
		if err != nil {
			return "", err
		}
		v := vs[0]
		if !regexp.MustCompile(`^\d+\.\d+\.\d+`).MatchString(v.Version) {
			return "", fmt.Errorf("Version = %q, want our semver", v.Version)
		}
		if !regexp.MustCompile(`^[0-9a-f]{40}(-dirty)?$`).MatchString(v.Commit) {
			return "", fmt.Errorf("Commit = %q, want the git commit of the build", v.Commit)
		}
		if v.APIVersion != "v1" {
			return "", fmt.Errorf("APIVersion = %q, want v1", v.APIVersion)
		}
		return fmt.Sprintf("version %s, commit %.12s…, api v1", v.Version, v.Commit), nil
	})
	res.call(t, "Live", func() (string, error) { return "200", sys.Live(step(), &kms.LivenessRequest{}) })
	res.call(t, "Ready", func() (string, error) {
		if err := sys.Ready(step(), &kms.ReadinessRequest{}); err != nil {
			return "", err
		}
		return "200 (also with Write)", sys.Ready(step(), &kms.ReadinessRequest{Write: true})
	})
	res.call(t, "ClusterStatus", func() (string, error) {
		st, err := sys.ClusterStatus(step(), &kms.ClusterStatusRequest{})
		if err != nil {
			return "", err
		}
		if len(st.NodesUp) != 1 || len(st.NodesDown) != 0 {
			return "", fmt.Errorf("%d up, %d down, want 1 and 0", len(st.NodesUp), len(st.NodesDown))
		}
		for _, n := range st.NodesUp {
			if n.Role != "Leader" || n.LeaderID != n.ID {
				return "", fmt.Errorf("role %q leader %d id %d", n.Role, n.LeaderID, n.ID)
			}
		}
		return "one node up, the leader", nil
	})

	// ---------------------------------------------------------------- enclaves and keys
	res.call(t, "CreateEnclave", func() (string, error) {
		if err := sys.CreateEnclave(step(), &kms.CreateEnclaveRequest{Name: enclave}); err != nil {
			return "", err
		}
		err := sys.CreateEnclave(step(), &kms.CreateEnclaveRequest{Name: enclave})
		if !errors.Is(err, kms.ErrEnclaveExists) {
			return "", fmt.Errorf("second CreateEnclave: %s, want ErrEnclaveExists", describe(err))
		}
		return "created; again: ErrEnclaveExists", nil
	})
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = sys.DeleteEnclave(ctx, &kms.DeleteEnclaveRequest{Name: enclave})
	})
	res.call(t, "EnclaveStatus", func() (string, error) {
		st, err := sys.EnclaveStatus(step(), &kms.EnclaveStatusRequest{Name: enclave})
		if err != nil {
			return "", err
		}
		if st[0].Name != enclave || st[0].CreatedBy != rootID {
			return "", fmt.Errorf("got %q created by %q", st[0].Name, st[0].CreatedBy)
		}
		return "name, created by the root identity", nil
	})
	res.call(t, "ListEnclaves", func() (string, error) {
		page, err := sys.ListEnclaves(step(), &kms.ListRequest{Prefix: "sdk-"})
		if err != nil {
			return "", err
		}
		if !slices.ContainsFunc(page.Items, func(e kms.EnclaveStatusResponse) bool { return e.Name == enclave }) {
			return "", fmt.Errorf("enclave %s not listed", enclave)
		}
		return "prefix listing", nil
	})
	res.call(t, "CreateKey", func() (string, error) {
		if err := sys.CreateKey(step(), enclave, &kms.CreateKeyRequest{Name: "aes", Type: kms.AES256}); err != nil {
			return "", err
		}
		if err := sys.CreateKey(step(), enclave, &kms.CreateKeyRequest{Name: "aes", AddVersion: true}); err != nil {
			return "", err
		}
		if err := sys.CreateKey(step(), enclave, &kms.CreateKeyRequest{Name: "aes"}); !errors.Is(err, kms.ErrKeyExists) {
			return "", fmt.Errorf("CreateKey of an existing key: %s, want ErrKeyExists", describe(err))
		}
		return "created, a second version added, ErrKeyExists", nil
	})
	res.call(t, "ImportKey", func() (string, error) {
		if err := sys.ImportKey(step(), enclave, &kms.ImportKeyRequest{Name: "imported", Type: kms.ChaCha20, Key: randBytes(32)}); err != nil {
			return "", err
		}
		return "32-byte ChaCha20 key imported", nil
	})
	res.call(t, "KeyStatus", func() (string, error) {
		st, err := sys.KeyStatus(step(), enclave, &kms.KeyStatusRequest{Name: "aes"}, &kms.KeyStatusRequest{Name: "imported"})
		if err != nil {
			return "", err
		}
		if st[0].Version != 2 || st[0].Type != kms.AES256 || st[1].Type != kms.ChaCha20 {
			return "", fmt.Errorf("got v%d %v and %v", st[0].Version, st[0].Type, st[1].Type)
		}
		return "batch of 2: versions and types", nil
	})
	res.call(t, "ListKeys", func() (string, error) {
		page, err := sys.ListKeys(step(), &kms.ListRequest{Enclave: enclave})
		if err != nil {
			return "", err
		}
		if len(page.Items) != 2 {
			return "", fmt.Errorf("%d keys listed, want 2", len(page.Items))
		}
		return "both keys", nil
	})
	var dek *kms.GenerateKeyResponse
	ad := []byte(`{"bucket":"b"}`)
	res.call(t, "GenerateKey", func() (string, error) {
		g, err := sys.GenerateKey(step(), enclave, &kms.GenerateKeyRequest{Name: "aes", AssociatedData: ad, Length: 32})
		if err != nil {
			return "", err
		}
		dek = g[0]
		if len(dek.Plaintext) != 32 || dek.Version != 2 {
			return "", fmt.Errorf("%d-byte key of version %d", len(dek.Plaintext), dek.Version)
		}
		return "32-byte data key of the latest version", nil
	})
	res.call(t, "Decrypt", func() (string, error) {
		if dek == nil {
			return "", errors.New("no data key (GenerateKey failed)")
		}
		d, err := sys.Decrypt(step(), enclave, &kms.DecryptRequest{Name: "aes", Version: dek.Version, Ciphertext: dek.Ciphertext, AssociatedData: ad})
		if err != nil {
			return "", err
		}
		if !bytes.Equal(d[0].Plaintext, dek.Plaintext) {
			return "", errors.New("plaintext differs")
		}
		_, err = sys.Decrypt(step(), enclave, &kms.DecryptRequest{Name: "aes", Version: dek.Version, Ciphertext: dek.Ciphertext, AssociatedData: []byte("x")})
		if !errors.Is(err, kms.ErrDecrypt) {
			return "", fmt.Errorf("wrong associated data: %s, want ErrDecrypt", describe(err))
		}
		return "data key back; wrong AD: ErrDecrypt", nil
	})
	res.call(t, "Encrypt", func() (string, error) {
		enc, err := sys.Encrypt(step(), enclave, &kms.EncryptRequest{Name: "aes", Plaintext: []byte("hello")})
		var de *cmds.DecodeError
		if err != nil && errors.As(err, &de) && strings.Contains(err.Error(), "received command KEY:ENCRYPT") {
			// The server frames the answer with the request's code (205), as every newer SDK
			// expects; the pinned one wants 204. Not a server failure: recorded as the SDK's.
			t.Logf("Encrypt: the pinned SDK's bug %s: %v", knownSDKBug, err)
			return "SDK bug " + knownSDKBug + ": the pinned SDK expects the response framed as 204; the server answers 205 like v0.6", nil
		}
		if err != nil {
			return "", err
		}
		return fmt.Sprintf("ciphertext of version %d", enc[0].Version), nil
	})

	// ---------------------------------------------------------------- policies and identities
	user := newAPIKey(t)
	res.call(t, "CreatePolicy", func() (string, error) {
		return "allow KEY:GENERATE and KEY:DECRYPT on aes*", sys.CreatePolicy(step(), enclave, &kms.CreatePolicyRequest{
			Name:  "app",
			Allow: map[cmds.Command]kms.RuleSet{cmds.KeyGenerate: {"aes*": {}}, cmds.KeyDecrypt: {"aes*": {}}},
			Deny:  map[cmds.Command]kms.RuleSet{cmds.KeyGenerate: {"aes-secret": {}}},
		})
	})
	res.call(t, "GetPolicy", func() (string, error) {
		p, err := sys.GetPolicy(step(), enclave, &kms.PolicyRequest{Name: "app"})
		if err != nil {
			return "", err
		}
		if _, ok := p[0].Allow[cmds.KeyGenerate]["aes*"]; !ok {
			return "", fmt.Errorf("allow rules %v", p[0].Allow)
		}
		return "allow and deny rules back", nil
	})
	res.call(t, "PolicyStatus", func() (string, error) {
		p, err := sys.PolicyStatus(step(), enclave, &kms.PolicyRequest{Name: "app"})
		if err != nil {
			return "", err
		}
		if p[0].Name != "app" || p[0].CreatedBy != rootID {
			return "", fmt.Errorf("got %q by %q", p[0].Name, p[0].CreatedBy)
		}
		return "name, created by", nil
	})
	res.call(t, "ListPolicies", func() (string, error) {
		page, err := sys.ListPolicies(step(), &kms.ListRequest{Enclave: enclave})
		if err != nil {
			return "", err
		}
		if len(page.Items) != 1 {
			return "", fmt.Errorf("%d policies", len(page.Items))
		}
		return "one policy", nil
	})
	res.call(t, "CreateIdentity", func() (string, error) {
		return "a User with a tag", sys.CreateIdentity(step(), enclave, &kms.CreateIdentityRequest{
			Identity: user.Identity(), Privilege: kms.User, Tags: map[string]string{"app": "sdk-test"},
		})
	})
	res.call(t, "AssignPolicy", func() (string, error) {
		if err := sys.AssignPolicy(step(), enclave, &kms.AssignPolicyRequest{Policy: "app", Identity: user.Identity()}); err != nil {
			return "", err
		}
		// The policy works: the user may generate with aes, not create keys.
		uc := cfg.client(t, user)
		if _, err := uc.GenerateKey(step(), enclave, &kms.GenerateKeyRequest{Name: "aes"}); err != nil {
			return "", fmt.Errorf("user GenerateKey: %s", describe(err))
		}
		if err := uc.CreateKey(step(), enclave, &kms.CreateKeyRequest{Name: "aes-2"}); !errors.Is(err, kms.ErrPermission) {
			return "", fmt.Errorf("user CreateKey: %s, want ErrPermission", describe(err))
		}
		return "assigned; the user may generate, not create", nil
	})
	res.call(t, "GetIdentity", func() (string, error) {
		id, err := sys.GetIdentity(step(), enclave, &kms.IdentityRequest{Identity: user.Identity()})
		if err != nil {
			return "", err
		}
		if id[0].Policy != "app" || id[0].Privilege != kms.User || id[0].Tags["app"] != "sdk-test" {
			return "", fmt.Errorf("policy %q privilege %v tags %v", id[0].Policy, id[0].Privilege, id[0].Tags)
		}
		return "policy, privilege, tags", nil
	})
	res.call(t, "ListIdentities", func() (string, error) {
		page, err := sys.ListIdentities(step(), &kms.ListRequest{Enclave: enclave})
		if err != nil {
			return "", err
		}
		if !slices.ContainsFunc(page.Items, func(i kms.IdentityResponse) bool { return i.Identity == user.Identity() }) {
			return "", errors.New("the user is not listed")
		}
		return "the user listed", nil
	})
	res.call(t, "Send", func() (string, error) {
		msg := pbBytes(pbString(nil, 1, "aes"), 3, []byte("message"))
		codes, frames, err := sendRaw(t, step(), sys, enclave, cmdKeyMAC, msg)
		if err != nil {
			return "", err
		}
		if len(frames) != 1 || codes[0] != cmdKeyMAC {
			return "", fmt.Errorf("%d frames, codes %v", len(frames), codes)
		}
		return "a raw KEY:MAC frame (the pinned SDK has no MAC method)", nil
	})

	// ---------------------------------------------------------------- logs
	res.call(t, "Logs", func() (string, error) { return checkLogs(t, root, sys, rootID, enclave) })

	// ---------------------------------------------------------------- profiling
	res.call(t, "StartProfiling", func() (string, error) {
		err := sys.StartProfiling(step(), &kms.ProfileRequest{Host: host, CPU: true, Heap: true, Goroutine: true, Thread: true, BlockRate: 1_000_000})
		if err != nil {
			return "", err
		}
		again := sys.StartProfiling(step(), &kms.ProfileRequest{Host: host, CPU: true})
		if !isStatus(again, 409) {
			return "", fmt.Errorf("a second session: %s, want 409", describe(again))
		}
		return "cpu, heap, thread=all, block=1ms; a second one: 409", nil
	})
	res.call(t, "ProfilingStatus", func() (string, error) {
		st, err := sys.ProfilingStatus(step(), &kms.ProfileRequest{Host: host})
		if err != nil {
			return "", err
		}
		if !st.CPU || !st.Heap || !st.Goroutine || !st.Thread || st.BlockRate != 1_000_000 || time.Since(st.Started) > time.Minute {
			return "", fmt.Errorf("status %+v", st)
		}
		return "what runs, since when", nil
	})
	for i := range 100 {
		if _, err := sys.GenerateKey(step(), enclave, &kms.GenerateKeyRequest{Name: "aes", AssociatedData: []byte{byte(i)}}); err != nil {
			t.Errorf("load while profiling: %s", describe(err))
			break
		}
	}
	res.call(t, "StopProfiling", func() (string, error) { return checkProfile(t, step(), sys, host) })
	res.call(t, "StartProfiling", func() (string, error) {
		err := sys.StartProfiling(step(), &kms.ProfileRequest{Host: host, CPU: true, MutexFraction: 5})
		if !isStatus(err, 400) || !strings.Contains(err.Error(), "mutex") {
			return "", fmt.Errorf("mutex profiling: %s, want 400 naming mutex", describe(err))
		}
		return "MutexFraction: 400 (no mutexes in Node.js)", nil
	})

	// ---------------------------------------------------------------- backup and restore
	var snapshot []byte
	res.call(t, "ReadDB", func() (string, error) {
		db, err := sys.ReadDB(step(), &kms.ReadDBRequest{})
		if err != nil {
			return "", err
		}
		defer db.Close()
		snapshot, err = io.ReadAll(db)
		if err != nil {
			return "", err
		}
		return fmt.Sprintf("a %d-byte snapshot", len(snapshot)), nil
	})
	res.call(t, "WriteDB", func() (string, error) {
		if snapshot == nil {
			return "", errors.New("no snapshot (ReadDB failed)")
		}
		if err := sys.CreateKey(step(), enclave, &kms.CreateKeyRequest{Name: "after-backup"}); err != nil {
			return "", err
		}
		if err := sys.WriteDB(step(), &kms.WriteDBRequest{Host: host, Body: bytes.NewReader(snapshot)}); err != nil {
			return "", err
		}
		_, err := sys.KeyStatus(step(), enclave, &kms.KeyStatusRequest{Name: "after-backup"})
		if !errors.Is(err, kms.ErrKeyNotFound) {
			return "", fmt.Errorf("key created after the backup: %s, want ErrKeyNotFound after the restore", describe(err))
		}
		return "restored: a key made after the backup is gone", nil
	})

	// ---------------------------------------------------------------- cluster membership
	// A client of its own: AddNode appends the host to the client's endpoints.
	members := cfg.client(t, cfg.rootKey)
	res.call(t, "AddNode", func() (string, error) {
		if err := members.AddNode(step(), &kms.AddClusterNodeRequest{Host: "127.0.0.1:1"}); err != nil {
			return "", err
		}
		id, err := downNode(step(), members, "127.0.0.1:1")
		if err != nil {
			return "", err
		}
		return fmt.Sprintf("registered as node %d (down until it starts)", id), nil
	})
	res.call(t, "RemoveNode", func() (string, error) {
		if err := members.RemoveNode(step(), &kms.RemoveClusterNodeRequest{Host: "127.0.0.1:1"}); err != nil {
			return "", err
		}
		if _, err := downNode(step(), members, "127.0.0.1:1"); err == nil {
			return "", errors.New("still a member")
		}
		return "deregistered", nil
	})
	res.call(t, "EditCluster", func() (string, error) {
		if err := members.AddNode(step(), &kms.AddClusterNodeRequest{Host: "127.0.0.1:2"}); err != nil {
			return "", err
		}
		id, err := downNode(step(), members, "127.0.0.1:2")
		if err != nil {
			return "", err
		}
		if err := members.EditCluster(step(), &kms.EditClusterRequest{Host: host, Remove: []int{id}}); err != nil {
			return "", err
		}
		if _, err := downNode(step(), members, "127.0.0.1:2"); err == nil {
			return "", errors.New("still a member")
		}
		return fmt.Sprintf("node %d removed from the definition", id), nil
	})

	// ---------------------------------------------------------------- clean up
	res.call(t, "DeleteIdentity", func() (string, error) {
		return "deleted", sys.DeleteIdentity(step(), enclave, &kms.DeleteIdentityRequest{Identity: user.Identity()})
	})
	res.call(t, "DeletePolicy", func() (string, error) {
		if err := sys.DeletePolicy(step(), enclave, &kms.DeletePolicyRequest{Name: "app"}); err != nil {
			return "", err
		}
		_, err := sys.GetPolicy(step(), enclave, &kms.PolicyRequest{Name: "app"})
		if !errors.Is(err, kms.ErrPolicyNotFound) {
			return "", fmt.Errorf("GetPolicy after delete: %s", describe(err))
		}
		return "deleted; then ErrPolicyNotFound", nil
	})
	res.call(t, "DeleteKey", func() (string, error) {
		if err := sys.DeleteKey(step(), enclave, &kms.DeleteKeyRequest{Name: "aes", Version: 1}); err != nil {
			return "", err
		}
		if err := sys.DeleteKey(step(), enclave, &kms.DeleteKeyRequest{Name: "aes", AllVersions: true}); err != nil {
			return "", err
		}
		return "one version, then all", nil
	})
	res.call(t, "DeleteEnclave", func() (string, error) {
		if err := sys.DeleteEnclave(step(), &kms.DeleteEnclaveRequest{Name: enclave}); err != nil {
			return "", err
		}
		_, err := sys.EnclaveStatus(step(), &kms.EnclaveStatusRequest{Name: enclave})
		if !errors.Is(err, kms.ErrEnclaveNotFound) {
			return "", fmt.Errorf("EnclaveStatus after delete: %s", describe(err))
		}
		return "deleted; then ErrEnclaveNotFound", nil
	})

	// ---------------------------------------------------------------- coverage
	typ := reflect.TypeOf(&kms.Client{})
	var all, missing []string
	for i := range typ.NumMethod() {
		name := typ.Method(i).Name
		all = append(all, name)
		if _, ok := res.results[name]; !ok {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		t.Errorf("exported *kms.Client methods not called: %v", missing)
	}
	report := sdkReport(all, res)
	t.Logf("%d exported methods of *kms.Client, results:\n%s", len(all), report)
	if file := os.Getenv("MINKMS_SDK_REPORT"); file != "" {
		if err := os.WriteFile(file, []byte(report), 0o644); err != nil {
			t.Errorf("write %s: %v", file, err)
		}
	}
}

func sdkReport(all []string, res *methodResults) string {
	sort.Strings(all)
	var b strings.Builder
	b.WriteString("| method | result |\n|---|---|\n")
	for _, name := range all {
		r := res.results[name]
		if r == "" {
			r = "NOT CALLED"
		}
		fmt.Fprintf(&b, "| `%s` | %s |\n", name, strings.ReplaceAll(r, "|", `\|`))
	}
	return b.String()
}

// isStatus tells whether err is a kms.Error with the HTTP status code.
func isStatus(err error, code int) bool {
	var e kms.Error
	return errors.As(err, &e) && e.Code == code
}

// downNode returns the id of the member at host listed down in the cluster status.
func downNode(ctx context.Context, c *kms.Client, host string) (int, error) {
	st, err := c.ClusterStatus(ctx, &kms.ClusterStatusRequest{})
	if err != nil {
		return 0, err
	}
	for id, h := range st.NodesDown {
		if h == host {
			return id, nil
		}
	}
	return 0, fmt.Errorf("%s is not a member (down: %v)", host, st.NodesDown)
}

// checkLogs reads the node's log through the pinned SDK: every record must decode (this SDK
// generation needs each record's request, field 5), records made for a request carry it, the
// others the unspecified address; and the request filters of this SDK generation work.
func checkLogs(t *testing.T, root context.Context, c *kms.Client, rootID mtls.Identity, enclave string) (string, error) {
	ctx, cancel := context.WithTimeout(root, 10*time.Second)
	defer cancel()
	logs, err := c.Logs(ctx, &kms.LogRequest{Level: slog.LevelDebug, Since: time.Now().Add(-time.Hour), TraceLevel: slog.LevelError})
	if err != nil {
		return "", err
	}
	var (
		n                     int
		withReq, withoutReq   int
		sawCommand, sawServer bool
	)
	for !(sawCommand && sawServer) {
		rec, ok := logs.Next()
		if !ok {
			break
		}
		n++
		if rec.Method == "" {
			withoutReq++
			if !rec.IP.IsValid() || !rec.IP.IsUnspecified() || rec.Path != "" || !rec.Identity.IsZero() {
				return "", fmt.Errorf("record %q without a request: ip %v path %q identity %q", rec.Message, rec.IP, rec.Path, rec.Identity)
			}
			sawServer = true
			continue
		}
		withReq++
		if !rec.IP.IsValid() || rec.IP.IsUnspecified() {
			return "", fmt.Errorf("record %q of %s %s: ip %v, want the client's", rec.Message, rec.Method, rec.Path, rec.IP)
		}
		if rec.Method == "POST" && rec.Path == "/v1/kms/"+enclave && rec.Identity == rootID {
			if rec.IP != netip.MustParseAddr("127.0.0.1") && rec.IP != netip.MustParseAddr("::ffff:127.0.0.1") {
				return "", fmt.Errorf("record %q: ip %v, want 127.0.0.1", rec.Message, rec.IP)
			}
			sawCommand = true
		}
	}
	if err := logs.Close(); err != nil && !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
		return "", fmt.Errorf("after %d records: %w", n, err)
	}
	if !sawCommand || !sawServer {
		return "", fmt.Errorf("%d records (%d with a request): no command record of %s on %s, or no server record", n, withReq, rootID, enclave)
	}

	// This SDK generation's filters (LogRequest fields 4–7): only the root's commands on the enclave.
	fctx, fcancel := context.WithTimeout(root, 5*time.Second)
	defer fcancel()
	filtered, err := c.Logs(fctx, &kms.LogRequest{
		Level: slog.LevelDebug, Since: time.Now().Add(-time.Hour),
		Method: "POST", Path: "/v1/kms/" + enclave, Identity: rootID, IP: netip.MustParseAddr("127.0.0.1"),
	})
	if err != nil {
		return "", err
	}
	matched := 0
	for matched < 3 {
		rec, ok := filtered.Next()
		if !ok {
			break
		}
		if rec.Method != "POST" || rec.Path != "/v1/kms/"+enclave || rec.Identity != rootID {
			return "", fmt.Errorf("filtered stream: record %q of %s %s by %s", rec.Message, rec.Method, rec.Path, rec.Identity)
		}
		matched++
	}
	filtered.Close()
	if matched == 0 {
		return "", errors.New("filtered stream: no record")
	}
	return fmt.Sprintf("%d records decoded (%d with a request, %d without: ip 0.0.0.0); method/path/identity/ip filters", n, withReq, withoutReq), nil
}

// checkProfile stops profiling and opens the archive the SDK hands out: a tar whose CPU
// profile has samples and whose heap profile has a root.
func checkProfile(t *testing.T, ctx context.Context, c *kms.Client, host string) (string, error) {
	p, err := c.StopProfiling(ctx, &kms.ProfileRequest{Host: host})
	if err != nil {
		return "", err
	}
	defer p.Close()
	tr := tar.NewReader(p)
	files := map[string][]byte{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return "", fmt.Errorf("the archive is no tar: %w", err)
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			return "", err
		}
		files[h.Name] = data
	}
	var cpu struct {
		Nodes   []json.RawMessage `json:"nodes"`
		Samples []int             `json:"samples"`
	}
	if err := json.Unmarshal(files["cpu.cpuprofile"], &cpu); err != nil {
		return "", fmt.Errorf("cpu.cpuprofile: %w", err)
	}
	if len(cpu.Samples) == 0 || len(cpu.Nodes) == 0 {
		return "", fmt.Errorf("cpu.cpuprofile: %d samples, %d nodes", len(cpu.Samples), len(cpu.Nodes))
	}
	var heap struct {
		Head json.RawMessage `json:"head"`
	}
	if err := json.Unmarshal(files["heap.heapprofile"], &heap); err != nil || len(heap.Head) == 0 {
		return "", fmt.Errorf("heap.heapprofile: no head (%v)", err)
	}
	for _, f := range []string{"resources.json", "report.json", "eventloop.json", "profile.json", "README.txt"} {
		if len(files[f]) == 0 {
			return "", fmt.Errorf("%s missing from the archive", f)
		}
	}
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	t.Logf("profile archive: %v; %d CPU samples", names, len(cpu.Samples))
	if _, err := c.StopProfiling(ctx, &kms.ProfileRequest{Host: host}); !isStatus(err, 409) {
		return "", fmt.Errorf("a second stop: %s, want 409", describe(err))
	}
	return fmt.Sprintf("a tar of %d files; cpu.cpuprofile with %d samples; again: 409", len(files), len(cpu.Samples)), nil
}
