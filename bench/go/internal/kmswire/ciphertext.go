package kmswire

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"hash"
	"sync"
)

// The ciphertext format of kms-wire.md §4, AES256 keys only:
//
//	ciphertext = AES-256-GCM(K, nonce, plaintext, associatedData) || iv (16) || nonce (12)
//	K          = HMAC-SHA256(masterKey, iv)
//
// the same shape as minkms (src/crypto/ciphertext.ts): a per-message key from a random iv, so
// random 96-bit nonces stay safe for the life of a key version.
const (
	IVLen    = 16
	NonceLen = 12
	TagLen   = 16
	Overhead = TagLen + IVLen + NonceLen
)

// ErrDecrypt is the one error of Open, whatever the cause (no oracle).
var ErrDecrypt = errors.New("invalid ciphertext")

// MasterKey is one AES256 key version, ready for concurrent use.
type MasterKey struct {
	// HMAC states keyed with the master key: hmac.New precomputes the ipad/opad blocks, and
	// Reset returns to them, so a pooled state derives a message key with two SHA-256
	// compressions and no allocation — what a careful Go implementation does.
	macs sync.Pool
}

// NewMasterKey copies key (32 bytes).
func NewMasterKey(key []byte) (*MasterKey, error) {
	if len(key) != 32 {
		return nil, errors.New("master key must be 32 bytes")
	}
	k := append([]byte(nil), key...)
	m := &MasterKey{}
	m.macs.New = func() any { return hmac.New(sha256.New, k) }
	return m, nil
}

func (m *MasterKey) aead(iv []byte) (cipher.AEAD, error) {
	mac := m.macs.Get().(hash.Hash)
	mac.Reset()
	mac.Write(iv)
	var k [32]byte
	mac.Sum(k[:0])
	m.macs.Put(mac)
	block, err := aes.NewCipher(k[:])
	clear(k[:])
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// Seal appends the ciphertext of plaintext to dst.
func (m *MasterKey) Seal(dst, plaintext, associatedData []byte) ([]byte, error) {
	var ivNonce [IVLen + NonceLen]byte
	rand.Read(ivNonce[:]) // never fails (crypto/rand, Go ≥ 1.24)
	return m.sealWith(ivNonce, dst, plaintext, associatedData)
}

// sealWith seals with a given iv and nonce (the test vectors).
func (m *MasterKey) sealWith(ivNonce [IVLen + NonceLen]byte, dst, plaintext, associatedData []byte) ([]byte, error) {
	aead, err := m.aead(ivNonce[:IVLen])
	if err != nil {
		return nil, err
	}
	dst = aead.Seal(dst, ivNonce[IVLen:], plaintext, associatedData)
	return append(dst, ivNonce[:]...), nil
}

// Open appends the plaintext of ciphertext to dst.
func (m *MasterKey) Open(dst, ciphertext, associatedData []byte) ([]byte, error) {
	if len(ciphertext) < Overhead {
		return nil, ErrDecrypt
	}
	n := len(ciphertext) - IVLen - NonceLen
	aead, err := m.aead(ciphertext[n : n+IVLen])
	if err != nil {
		return nil, ErrDecrypt
	}
	out, err := aead.Open(dst, ciphertext[n+IVLen:], ciphertext[:n], associatedData)
	if err != nil {
		return nil, ErrDecrypt
	}
	return out, nil
}

// Identity returns the h1: identity of a certificate's SubjectPublicKeyInfo (kms-wire.md §1.4).
func Identity(rawSPKI []byte) string {
	sum := sha256.Sum256(rawSPKI)
	return "h1:" + base64.RawURLEncoding.EncodeToString(sum[:])
}

// SameIdentity compares two identities in constant time.
func SameIdentity(a, b string) bool {
	return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}
