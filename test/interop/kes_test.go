// The KES API of minkms, driven by the official KES client (github.com/minio/kms-go/kes v0.3.1,
// the version MinIO pins): every exported method of kes.Client, its typed errors, and the
// same keys, ciphertexts, identities and policies seen through the MinKMS SDK.
//
// Configuration: the variables of TestInterop plus
//
//	MINKMS_KES_ENCLAVE  the server's kes.enclave (the server runs with kes.enabled: true)
//
// Run from this directory: go test -count=1 -v -run TestKES ./...
package interop

import (
	"bufio"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"aead.dev/mtls"
	"github.com/minio/kms-go/kes"
	"github.com/minio/kms-go/kms"
	"github.com/minio/kms-go/kms/cmds"
)

// kesAPIKey spells a k1: API key as a KES API key: the same Ed25519 seed behind a type byte.
func kesAPIKey(t *testing.T, k1 string) kes.APIKey {
	t.Helper()
	seed, err := base64.RawURLEncoding.DecodeString(strings.TrimPrefix(k1, "k1:"))
	if err != nil || len(seed) != 32 {
		t.Fatalf("not a k1: API key: %v", err)
	}
	key, err := kes.ParseAPIKey("kes:v1:" + base64.StdEncoding.EncodeToString(append([]byte{0}, seed...)))
	if err != nil {
		t.Fatalf("kes.ParseAPIKey: %v", err)
	}
	return key
}

// h1 is the minkms spelling of a KES identity.
func h1(t *testing.T, id kes.Identity) mtls.Identity {
	t.Helper()
	b, err := hex.DecodeString(id.String())
	if err != nil || len(b) != 32 {
		t.Fatalf("not a KES identity: %q", id)
	}
	i, err := mtls.ParseIdentity("h1:" + base64.RawURLEncoding.EncodeToString(b))
	if err != nil {
		t.Fatalf("mtls.ParseIdentity: %v", err)
	}
	return i
}

func (c config) kesClient(t *testing.T, key kes.APIKey) *kes.Client {
	t.Helper()
	cl, err := kes.NewClient("https://"+c.endpoints[0], key)
	if err != nil {
		t.Fatalf("kes.NewClient: %v", err)
	}
	cl.HTTPClient.Transport.(*http.Transport).TLSClientConfig.RootCAs = c.roots
	return cl
}

func wantKESErr(t *testing.T, what string, err error, target kes.Error) {
	t.Helper()
	if err == nil {
		t.Errorf("%s: got no error, want %d %q", what, target.Status(), target.Error())
		return
	}
	if !errors.Is(err, target) {
		var e kes.Error
		if errors.As(err, &e) {
			t.Errorf("%s: got %d %q, want %d %q", what, e.Status(), e.Error(), target.Status(), target.Error())
		} else {
			t.Errorf("%s: got %v (%T), want %d %q", what, err, err, target.Status(), target.Error())
		}
	}
}

// kesCiphertext seals plaintext as KES's binary format does with an AES256 key:
// AES-256-GCM under HMAC-SHA256(key, iv), then ct‖tag ‖ iv ‖ nonce.
func kesCiphertext(key, plaintext, context []byte) (binary []byte, jsonForm []byte) {
	iv, nonce := randBytes(16), randBytes(12)
	mac := hmac.New(sha256.New, key)
	mac.Write(iv)
	block, _ := aes.NewCipher(mac.Sum(nil))
	gcm, _ := cipher.NewGCM(block)
	sealed := gcm.Seal(nil, nonce, plaintext, context)
	binary = append(append(append([]byte{}, sealed...), iv...), nonce...)
	jsonForm, _ = json.Marshal(map[string]any{"aead": "AES-256-GCM-HMAC-SHA-256", "id": randHex(16), "iv": iv, "nonce": nonce, "bytes": sealed})
	return binary, jsonForm
}

func TestKES(t *testing.T) {
	cfg := loadConfig(t)
	enclave := strings.TrimSpace(os.Getenv("MINKMS_KES_ENCLAVE"))
	if enclave == "" {
		t.Fatal("MINKMS_KES_ENCLAVE (the server's kes.enclave) is not set")
	}
	root, cancel := context.WithTimeout(context.Background(), totalTimeout)
	defer cancel()

	// The root API key in both spellings: one identity.
	rootKey := kesAPIKey(t, os.Getenv("MINKMS_API_KEY"))
	if got, want := h1(t, rootKey.Identity()), cfg.rootKey.Identity(); got != want {
		t.Fatalf("kes:v1 spelling of the root key has identity %v, want %v", got, want)
	}
	minkms := cfg.client(t, cfg.rootKey)
	ctx := ctxFor(t, root)
	if err := minkms.CreateEnclave(ctx, &kms.CreateEnclaveRequest{Name: enclave}); err != nil && !errors.Is(err, kms.ErrEnclaveExists) {
		t.Fatalf("CreateEnclave: %s", describe(err))
	}
	c := cfg.kesClient(t, rootKey)

	// A User of the enclave (a KES API key registered through the MinKMS API) and its policy.
	userKey, err := kes.GenerateAPIKey(nil)
	must(t, "GenerateAPIKey", err)
	must(t, "CreateIdentity", minkms.CreateIdentity(ctx, enclave, &kms.CreateIdentityRequest{Identity: h1(t, userKey.Identity()), Privilege: kms.User}))
	must(t, "CreatePolicy", minkms.CreatePolicy(ctx, enclave, &kms.CreatePolicyRequest{
		Name: "app",
		Allow: map[cmds.Command]kms.RuleSet{
			cmds.KeyGenerate: {"app-*": {}},
			cmds.KeyDecrypt:  {"app-*": {}},
			cmds.KeyList:     {"app-*": {}},
			cmds.KeyStatus:   {"app-*": {}},
		},
		Deny: map[cmds.Command]kms.RuleSet{cmds.KeyDecrypt: {"app-secret": {}}},
	}))
	must(t, "AssignPolicy", minkms.AssignPolicy(ctx, enclave, &kms.AssignPolicyRequest{Policy: "app", Identity: h1(t, userKey.Identity())}))
	user := cfg.kesClient(t, userKey)

	t.Run("Version, IsReady, Status, APIs, Metrics", func(t *testing.T) {
		ctx := ctxFor(t, root)
		v, err := c.Version(ctx)
		must(t, "Version", err)
		versions, err := minkms.Version(ctx, &kms.VersionRequest{})
		must(t, "kms Version", err)
		if v == "" || v != versions[0].Version {
			t.Errorf("KES Version %q, MinKMS Version %q: the same /version must answer both", v, versions[0].Version)
		}
		ready, err := c.IsReady(ctx)
		if err != nil || !ready {
			t.Errorf("IsReady: %v %v", ready, err)
		}
		st, err := c.Status(ctx)
		must(t, "Status", err)
		if st.Version != v || st.UpTime <= 0 || st.CPUs < 1 || st.Arch == "" || st.OS == "" || !st.KeyStoreReachable || !st.KeystoreAvailable {
			t.Errorf("Status: %+v", st)
		}
		if _, err := user.Status(ctx); err != nil {
			t.Errorf("a User of the enclave may read the status: %v", err)
		}
		apis, err := c.APIs(ctx)
		must(t, "APIs", err)
		var paths []string
		for _, a := range apis {
			paths = append(paths, a.Method+" "+a.Path)
			if a.Path == "/v1/key/generate/" && (a.MaxBody != 1<<20 || a.Timeout <= 0) {
				t.Errorf("APIs: generate: %+v", a)
			}
		}
		for _, want := range []string{"GET /version", "GET /v1/status", "POST /v1/key/generate/", "POST /v1/key/decrypt/", "PUT /v1/key/hmac/", "GET /v1/identity/self/describe", "GET /v1/log/audit"} {
			if !slices.Contains(paths, want) {
				t.Errorf("APIs: %q missing from %q", want, paths)
			}
		}
		// The client reads the uptime in whole seconds: 0 in the server's first second.
		var m kes.Metric
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(100 * time.Millisecond) {
			m, err = c.Metrics(ctx)
			must(t, "Metrics", err)
			if m.UpTime > 0 || time.Now().After(deadline) {
				break
			}
		}
		if m.RequestOK == 0 || m.RequestN() < m.RequestOK || m.UpTime <= 0 || m.CPUs < 1 || len(m.LatencyHistogram) == 0 || m.HeapAlloc == 0 {
			t.Errorf("Metrics: %+v", m)
		}
		_, err = user.Metrics(ctx)
		wantKESErr(t, "a User scrapes /v1/metrics", err, kes.ErrNotAllowed)
	})

	t.Run("keys: create, describe, list, generate, encrypt, decrypt, HMAC, delete", func(t *testing.T) {
		ctx := ctxFor(t, root)
		for _, name := range []string{"app-1", "app-2", "app-secret", "other"} {
			must(t, "CreateKey "+name, c.CreateKey(ctx, name))
		}
		wantKESErr(t, "CreateKey twice", c.CreateKey(ctx, "app-1"), kes.ErrKeyExists)
		info, err := c.DescribeKey(ctx, "app-1")
		must(t, "DescribeKey", err)
		if info.Name != "app-1" || info.Algorithm != kes.AES256 || info.CreatedAt.IsZero() || info.CreatedBy != rootKey.Identity() {
			t.Errorf("DescribeKey: %+v (created by want %v)", info, rootKey.Identity())
		}
		_, err = c.DescribeKey(ctx, "missing")
		wantKESErr(t, "DescribeKey missing", err, kes.ErrKeyNotFound)

		names, next, err := c.ListKeys(ctx, "app-", 0)
		must(t, "ListKeys", err)
		if !slices.Equal(names, []string{"app-1", "app-2", "app-secret"}) || next != "" {
			t.Errorf("ListKeys app-: %q %q", names, next)
		}
		all, _, err := c.ListKeys(ctx, "", 0)
		must(t, "ListKeys all", err)
		if !slices.Equal(all, []string{"app-1", "app-2", "app-secret", "other"}) {
			t.Errorf("ListKeys: %q", all)
		}
		// The iterator pages with the server's continuation tokens.
		it := kes.ListIter[string]{NextFunc: c.ListKeys}
		first, err := it.SeekTo(ctx, "app-")
		must(t, "ListIter.SeekTo", err)
		var iterated []string
		for name := first; err == nil; name, err = it.Next(ctx) {
			iterated = append(iterated, name)
		}
		if !errors.Is(err, io.EOF) || !slices.Equal(iterated, []string{"app-1", "app-2", "app-secret"}) {
			t.Errorf("ListIter: %q, %v", iterated, err)
		}
		visible, _, err := user.ListKeys(ctx, "", 0)
		must(t, "user ListKeys", err)
		if !slices.Equal(visible, []string{"app-1", "app-2", "app-secret"}) {
			t.Errorf("a User lists only what KEY:LIST allows: %q", visible)
		}

		dek, err := c.GenerateKey(ctx, "app-1", []byte("ctx"))
		must(t, "GenerateKey", err)
		if len(dek.Plaintext) != 32 || len(dek.Ciphertext) != 32+44 {
			t.Errorf("GenerateKey: %d-byte plaintext, %d-byte ciphertext", len(dek.Plaintext), len(dek.Ciphertext))
		}
		pt, err := c.Decrypt(ctx, "app-1", dek.Ciphertext, []byte("ctx"))
		must(t, "Decrypt", err)
		if string(pt) != string(dek.Plaintext) {
			t.Error("Decrypt: not the generated plaintext")
		}
		_, err = c.Decrypt(ctx, "app-1", dek.Ciphertext, []byte("other context"))
		wantKESErr(t, "Decrypt with another context", err, kes.ErrDecrypt)
		_, err = c.Decrypt(ctx, "app-2", dek.Ciphertext, []byte("ctx"))
		wantKESErr(t, "Decrypt with another key", err, kes.ErrDecrypt)
		_, err = c.GenerateKey(ctx, "missing", nil)
		wantKESErr(t, "GenerateKey missing", err, kes.ErrKeyNotFound)

		ct, err := c.Encrypt(ctx, "app-2", []byte("hello"), nil)
		must(t, "Encrypt", err)
		pt, err = c.Decrypt(ctx, "app-2", ct, nil)
		must(t, "Decrypt of Encrypt", err)
		if string(pt) != "hello" {
			t.Errorf("Decrypt of Encrypt: %q", pt)
		}
		mac1, err := c.HMAC(ctx, "app-1", []byte("message"))
		must(t, "HMAC", err)
		mac2, err := c.HMAC(ctx, "app-1", []byte("message"))
		must(t, "HMAC again", err)
		mac3, err := c.HMAC(ctx, "app-2", []byte("message"))
		must(t, "HMAC other key", err)
		if len(mac1) != 32 || string(mac1) != string(mac2) || string(mac1) == string(mac3) {
			t.Errorf("HMAC: %x %x %x", mac1, mac2, mac3)
		}

		// A User: what its policy allows, nothing else.
		udek, err := user.GenerateKey(ctx, "app-1", nil)
		must(t, "user GenerateKey", err)
		_, err = user.Decrypt(ctx, "app-1", udek.Ciphertext, nil)
		must(t, "user Decrypt", err)
		_, err = user.GenerateKey(ctx, "other", nil)
		wantKESErr(t, "user GenerateKey outside the policy", err, kes.ErrNotAllowed)
		sdek, err := user.GenerateKey(ctx, "app-secret", nil)
		must(t, "user GenerateKey app-secret", err)
		_, err = user.Decrypt(ctx, "app-secret", sdek.Ciphertext, nil)
		wantKESErr(t, "user Decrypt denied", err, kes.ErrNotAllowed)
		wantKESErr(t, "user CreateKey", user.CreateKey(ctx, "app-3"), kes.ErrNotAllowed)
		_, err = user.Encrypt(ctx, "app-1", []byte("x"), nil)
		wantKESErr(t, "user Encrypt", err, kes.ErrNotAllowed)

		must(t, "DeleteKey", c.DeleteKey(ctx, "app-2"))
		_, err = c.DescribeKey(ctx, "app-2")
		wantKESErr(t, "DescribeKey after DeleteKey", err, kes.ErrKeyNotFound)
		wantKESErr(t, "DeleteKey twice", c.DeleteKey(ctx, "app-2"), kes.ErrKeyNotFound)

		// A stranger (a valid key no enclave knows) is not authorized for anything.
		stranger, _ := kes.GenerateAPIKey(nil)
		_, err = cfg.kesClient(t, stranger).GenerateKey(ctx, "app-1", nil)
		wantKESErr(t, "stranger GenerateKey", err, kes.ErrNotAllowed)
	})

	t.Run("one key, two APIs: ciphertexts decrypt through the other, across versions", func(t *testing.T) {
		ctx := ctxFor(t, root)
		must(t, "kms CreateKey", minkms.CreateKey(ctx, enclave, &kms.CreateKeyRequest{Name: "shared"}))
		viaKES, err := c.GenerateKey(ctx, "shared", []byte("object-1"))
		must(t, "KES GenerateKey", err)
		viaKMS, err := minkms.GenerateKey(ctx, enclave, &kms.GenerateKeyRequest{Name: "shared", AssociatedData: []byte("object-2")})
		must(t, "kms GenerateKey", err)
		// Rotate through the MinKMS API: the KES API knows no versions and uses the latest.
		must(t, "kms CreateKey AddVersion", minkms.CreateKey(ctx, enclave, &kms.CreateKeyRequest{Name: "shared", AddVersion: true}))
		afterKES, err := c.GenerateKey(ctx, "shared", []byte("object-3"))
		must(t, "KES GenerateKey after rotation", err)

		out, err := minkms.Decrypt(ctx, enclave, &kms.DecryptRequest{Name: "shared", Version: 1, Ciphertext: viaKES.Ciphertext, AssociatedData: []byte("object-1")})
		must(t, "kms Decrypt of a KES data key (version 1)", err)
		if string(out[0].Plaintext) != string(viaKES.Plaintext) {
			t.Error("kms Decrypt of a KES data key: wrong plaintext")
		}
		out, err = minkms.Decrypt(ctx, enclave, &kms.DecryptRequest{Name: "shared", Version: 2, Ciphertext: afterKES.Ciphertext, AssociatedData: []byte("object-3")})
		must(t, "kms Decrypt of a KES data key after rotation (version 2)", err)
		if string(out[0].Plaintext) != string(afterKES.Plaintext) {
			t.Error("kms Decrypt after rotation: wrong plaintext")
		}
		pt, err := c.Decrypt(ctx, "shared", viaKMS[0].Ciphertext, []byte("object-2"))
		must(t, "KES Decrypt of a MinKMS data key (older version)", err)
		if string(pt) != string(viaKMS[0].Plaintext) {
			t.Error("KES Decrypt of a MinKMS data key: wrong plaintext")
		}
		st, err := minkms.KeyStatus(ctx, enclave, &kms.KeyStatusRequest{Name: "shared"})
		must(t, "kms KeyStatus", err)
		info, err := c.DescribeKey(ctx, "shared")
		must(t, "KES DescribeKey", err)
		if st[0].Version != 2 || !info.CreatedAt.Equal(st[0].CreatedAt) {
			t.Errorf("DescribeKey shows the latest version: %+v vs %+v", info, st[0])
		}
	})

	t.Run("ImportKey, and KES's ciphertext formats", func(t *testing.T) {
		ctx := ctxFor(t, root)
		material := randBytes(32)
		must(t, "ImportKey", c.ImportKey(ctx, "imported", &kes.ImportKeyRequest{Key: material, Cipher: kes.AES256}))
		wantKESErr(t, "ImportKey twice", c.ImportKey(ctx, "imported", &kes.ImportKeyRequest{Key: material, Cipher: kes.AES256}), kes.ErrKeyExists)
		binary, jsonForm := kesCiphertext(material, []byte("secret"), []byte("ctx"))
		for what, ct := range map[string][]byte{"binary": binary, "JSON": jsonForm} {
			pt, err := c.Decrypt(ctx, "imported", ct, []byte("ctx"))
			if err != nil || string(pt) != "secret" {
				t.Errorf("KES Decrypt of a %s ciphertext: %q %v", what, pt, err)
			}
			out, err := minkms.Decrypt(ctx, enclave, &kms.DecryptRequest{Name: "imported", Ciphertext: ct, AssociatedData: []byte("ctx")})
			if err != nil || string(out[0].Plaintext) != "secret" {
				t.Errorf("kms Decrypt of a %s ciphertext: %s", what, describe(err))
			}
		}
		info, err := c.DescribeKey(ctx, "imported")
		must(t, "DescribeKey imported", err)
		if info.Algorithm != kes.AES256 {
			t.Errorf("DescribeKey imported: %+v", info)
		}
	})

	t.Run("policies: described, read and listed as KES paths", func(t *testing.T) {
		ctx := ctxFor(t, root)
		pi, err := c.DescribePolicy(ctx, "app")
		must(t, "DescribePolicy", err)
		if pi.Name != "app" || pi.CreatedAt.IsZero() || pi.CreatedBy != rootKey.Identity() {
			t.Errorf("DescribePolicy: %+v", pi)
		}
		p, err := c.GetPolicy(ctx, "app")
		must(t, "GetPolicy", err)
		var allow, deny []string
		for path := range p.Allow {
			allow = append(allow, path)
		}
		for path := range p.Deny {
			deny = append(deny, path)
		}
		slices.Sort(allow)
		slices.Sort(deny)
		wantAllow := []string{"/v1/key/bulk/decrypt/app-*", "/v1/key/decrypt/app-*", "/v1/key/describe/app-*", "/v1/key/generate/app-*", "/v1/key/list/app-*"}
		if !slices.Equal(allow, wantAllow) || !slices.Equal(deny, []string{"/v1/key/bulk/decrypt/app-secret", "/v1/key/decrypt/app-secret"}) {
			t.Errorf("GetPolicy: allow %q deny %q", allow, deny)
		}
		// KES's own check of the paths agrees with what the server enforces.
		req, _ := http.NewRequest(http.MethodPost, "https://host/v1/key/generate/app-9", nil)
		if err := p.Verify(req); err != nil {
			t.Errorf("Policy.Verify generate app-9: %v", err)
		}
		req, _ = http.NewRequest(http.MethodPost, "https://host/v1/key/decrypt/app-secret", nil)
		if err := p.Verify(req); !errors.Is(err, kes.ErrNotAllowed) {
			t.Errorf("Policy.Verify decrypt app-secret: %v", err)
		}
		names, _, err := c.ListPolicies(ctx, "", 0)
		must(t, "ListPolicies", err)
		if !slices.Contains(names, "app") {
			t.Errorf("ListPolicies: %q", names)
		}
		_, err = c.DescribePolicy(ctx, "missing")
		wantKESErr(t, "DescribePolicy missing", err, kes.ErrPolicyNotFound)
		_, err = c.GetPolicy(ctx, "missing")
		wantKESErr(t, "GetPolicy missing", err, kes.ErrPolicyNotFound)
		_, err = user.GetPolicy(ctx, "app")
		wantKESErr(t, "user GetPolicy", err, kes.ErrNotAllowed)
		_, _, err = user.ListPolicies(ctx, "", 0)
		wantKESErr(t, "user ListPolicies", err, kes.ErrNotAllowed)
	})

	t.Run("identities: described and listed in KES's spelling", func(t *testing.T) {
		ctx := ctxFor(t, root)
		info, err := c.DescribeIdentity(ctx, userKey.Identity())
		must(t, "DescribeIdentity", err)
		if info.Identity != userKey.Identity() || info.IsAdmin || info.Policy != "app" || info.CreatedBy != rootKey.Identity() || info.CreatedAt.IsZero() {
			t.Errorf("DescribeIdentity: %+v", info)
		}
		rootInfo, err := c.DescribeIdentity(ctx, rootKey.Identity())
		must(t, "DescribeIdentity root", err)
		if !rootInfo.IsAdmin {
			t.Errorf("the root identity is a KES admin: %+v", rootInfo)
		}
		unknown, _ := kes.GenerateAPIKey(nil)
		_, err = c.DescribeIdentity(ctx, unknown.Identity())
		wantKESErr(t, "DescribeIdentity unknown", err, kes.ErrIdentityNotFound)

		self, policy, err := user.DescribeSelf(ctx)
		must(t, "DescribeSelf", err)
		if self.Identity != userKey.Identity() || self.IsAdmin || self.Policy != "app" || policy == nil || len(policy.Allow) != 5 || len(policy.Deny) != 2 {
			t.Errorf("DescribeSelf: %+v %+v", self, policy)
		}
		rootSelf, rootPolicy, err := c.DescribeSelf(ctx)
		must(t, "DescribeSelf root", err)
		if !rootSelf.IsAdmin || rootSelf.Identity != rootKey.Identity() || (rootPolicy != nil && len(rootPolicy.Allow) > 0) {
			t.Errorf("DescribeSelf root: %+v %+v", rootSelf, rootPolicy)
		}
		ids, next, err := c.ListIdentities(ctx, "", 0)
		must(t, "ListIdentities", err)
		if !slices.Contains(ids, userKey.Identity()) || next != "" {
			t.Errorf("ListIdentities: %q %q", ids, next)
		}
		prefix := userKey.Identity().String()[:6]
		ids, _, err = c.ListIdentities(ctx, prefix, 0)
		must(t, "ListIdentities prefix", err)
		if len(ids) == 0 || !strings.HasPrefix(ids[0].String(), prefix) {
			t.Errorf("ListIdentities %s: %q", prefix, ids)
		}
		_, err = user.DescribeIdentity(ctx, rootKey.Identity())
		wantKESErr(t, "user DescribeIdentity of another", err, kes.ErrNotAllowed)
	})

	t.Run("an identity with a client certificate (NewClientWithConfig)", func(t *testing.T) {
		ctx := ctxFor(t, root)
		cert, err := kes.GenerateCertificate(userKey)
		must(t, "GenerateCertificate", err)
		cl := kes.NewClientWithConfig("https://"+cfg.endpoints[0], &tls.Config{RootCAs: cfg.roots, Certificates: []tls.Certificate{cert}})
		self, _, err := cl.DescribeSelf(ctx)
		must(t, "DescribeSelf with a certificate", err)
		if self.Identity != userKey.Identity() {
			t.Errorf("DescribeSelf with a certificate: %v", self.Identity)
		}
	})

	t.Run("log streams: audit and error events as they happen", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(root, callTimeout)
		defer cancel()
		audit, err := c.AuditLog(ctx)
		must(t, "AuditLog", err)
		defer audit.Close()
		errs, err := c.ErrorLog(ctx)
		must(t, "ErrorLog", err)
		defer errs.Close()
		// A denied request is an audit event and a warning (an error event).
		_, err = user.GenerateKey(ctx, "other", nil)
		wantKESErr(t, "user GenerateKey other", err, kes.ErrNotAllowed)
		found := false
		for !found && audit.Next() {
			e := audit.Event()
			found = e.APIPath == "/v1/key/generate/other" && e.ClientIdentity == userKey.Identity() && e.StatusCode == http.StatusForbidden && e.ResponseTime > 0 && e.ClientIP != nil
		}
		if !found {
			t.Errorf("AuditLog: no event of the denied request (%v)", audit.Close())
		}
		if !errs.Next() || !strings.Contains(errs.Message(), "access denied") {
			t.Errorf("ErrorLog: %q (%v)", errs.Message(), errs.Close())
		}
		_, err = user.AuditLog(ctx)
		wantKESErr(t, "user AuditLog", err, kes.ErrNotAllowed)
		_, err = user.ErrorLog(ctx)
		wantKESErr(t, "user ErrorLog", err, kes.ErrNotAllowed)
	})

	t.Run("what is not served answers KES's 501, and connection errors are ConnErrors", func(t *testing.T) {
		ctx := ctxFor(t, root)
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "https://"+cfg.endpoints[0]+"/v1/secret/create/s", strings.NewReader(`{"bytes":"AA=="}`))
		resp, err := c.HTTPClient.Do(req)
		must(t, "POST /v1/secret/create", err)
		body, _ := io.ReadAll(bufio.NewReader(resp.Body))
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotImplemented || !strings.Contains(string(body), "not implemented") {
			t.Errorf("POST /v1/secret/create: %d %s", resp.StatusCode, body)
		}
		dead := cfg.kesClient(t, rootKey)
		dead.Endpoints = []string{"https://127.0.0.1:1"}
		short, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		_, err = dead.Version(short)
		if _, ok := kes.IsConnError(err); !ok {
			t.Errorf("Version of a closed port: %v (%T), want a ConnError", err, err)
		}
	})
}
