package kmswire

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"os"
	"testing"
)

// The AES256 golden vector of test/vectors/ciphertext.json: the Go reference server makes
// exactly the ciphertexts minkms makes (kms-wire.md §4), and opens them.
func TestCiphertextVector(t *testing.T) {
	data, err := os.ReadFile("../../../../test/vectors/ciphertext.json")
	if err != nil {
		t.Fatal(err)
	}
	var v struct {
		MasterKey, IV, Nonce string
		PlaintextUtf8        string
		AssociatedDataUtf8   string
		Vectors              []struct{ Type, Ciphertext string }
	}
	if err := json.Unmarshal(data, &v); err != nil {
		t.Fatal(err)
	}
	key, _ := hex.DecodeString(v.MasterKey)
	iv, _ := hex.DecodeString(v.IV)
	nonce, _ := hex.DecodeString(v.Nonce)
	mk, err := NewMasterKey(key)
	if err != nil {
		t.Fatal(err)
	}
	var ivNonce [IVLen + NonceLen]byte
	copy(ivNonce[:], iv)
	copy(ivNonce[IVLen:], nonce)
	found := false
	for _, vec := range v.Vectors {
		if vec.Type != "AES256" {
			continue
		}
		found = true
		want, _ := hex.DecodeString(vec.Ciphertext)
		got, err := mk.sealWith(ivNonce, nil, []byte(v.PlaintextUtf8), []byte(v.AssociatedDataUtf8))
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("seal: %x, %v; want %x", got, err, want)
		}
		pt, err := mk.Open(nil, want, []byte(v.AssociatedDataUtf8))
		if err != nil || string(pt) != v.PlaintextUtf8 {
			t.Fatalf("open: %q, %v", pt, err)
		}
		want[0] ^= 1
		if _, err := mk.Open(nil, want, []byte(v.AssociatedDataUtf8)); err != ErrDecrypt {
			t.Fatalf("tampered ciphertext: %v", err)
		}
	}
	if !found {
		t.Fatal("no AES256 vector")
	}
}

func TestMessagesRoundTrip(t *testing.T) {
	g := GenerateKeyRequest{Name: "k", Version: 3, AssociatedData: MinIOContext(), Length: 32}
	body := AppendFrame(nil, KeyGenerate, g.Append(nil))
	body = AppendFrame(body, KeyGenerate, g.Append(nil))
	frames, err := ParseFrames(body, 10, nil)
	if err != nil || len(frames) != 2 {
		t.Fatal(len(frames), err)
	}
	var back GenerateKeyRequest
	if err := back.Decode(frames[1].Payload); err != nil || back.Name != "k" || back.Version != 3 || back.Length != 32 || !bytes.Equal(back.AssociatedData, MinIOContext()) {
		t.Fatalf("%+v %v", back, err)
	}
	if _, err := ParseFrames(body[:len(body)-1], 10, nil); err == nil {
		t.Fatal("a truncated frame was accepted")
	}
	if len(MinIOContext()) < 100 {
		t.Fatal("context too short")
	}
}
