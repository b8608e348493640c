package interop

import (
	"bytes"
	"context"
	"os"
	"testing"
	"time"

	"github.com/minio/kms-go/kms"
)

// TestClusterFailover is run by test/cluster/cluster.test.ts against a three-node cluster
// with one node killed: the official SDK, given every endpoint, must carry on. It needs
// MINKMS_ENCLAVE and MINKMS_KEY (an existing key) besides the usual variables.
func TestClusterFailover(t *testing.T) {
	cfg := loadConfig(t)
	enclave, key := os.Getenv("MINKMS_ENCLAVE"), os.Getenv("MINKMS_KEY")
	if enclave == "" || key == "" {
		t.Fatal("cluster failover test is not configured: set MINKMS_ENCLAVE and MINKMS_KEY")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c := cfg.client(t, cfg.rootKey)
	for i := 0; i < 50; i++ {
		ad := []byte{byte(i)}
		g, err := c.GenerateKey(ctx, enclave, &kms.GenerateKeyRequest{Name: key, AssociatedData: ad})
		if err != nil {
			t.Fatalf("request %d: GenerateKey: %v", i, err)
		}
		d, err := c.Decrypt(ctx, enclave, &kms.DecryptRequest{Name: key, Version: g[0].Version, Ciphertext: g[0].Ciphertext, AssociatedData: ad})
		if err != nil {
			t.Fatalf("request %d: Decrypt: %v", i, err)
		}
		if !bytes.Equal(d[0].Plaintext, g[0].Plaintext) {
			t.Fatalf("request %d: decrypted data key differs", i)
		}
	}
	st, err := c.ClusterStatus(ctx, &kms.ClusterStatusRequest{})
	if err != nil {
		t.Fatalf("ClusterStatus: %v", err)
	}
	t.Logf("cluster status: %d nodes up, %d down", len(st.NodesUp), len(st.NodesDown))
	if len(st.NodesUp) != 2 || len(st.NodesDown) != 1 {
		t.Errorf("ClusterStatus: %d up and %d down, want 2 and 1", len(st.NodesUp), len(st.NodesDown))
	}
}
