package hist

import (
	"math"
	"testing"
	"time"
)

func TestQuantiles(t *testing.T) {
	var h H
	for i := 1; i <= 100000; i++ {
		h.Record(time.Duration(i) * time.Microsecond) // 1 µs … 100 ms, uniform
	}
	for _, q := range []float64{0.5, 0.9, 0.99, 0.999} {
		got := float64(h.Quantile(q))
		want := q * 100e6
		if math.Abs(got-want)/want > 0.01 {
			t.Errorf("q%.3f = %v, want %v ± 1 %%", q, time.Duration(got), time.Duration(want))
		}
	}
	if h.Max() != 100*time.Millisecond || h.Count() != 100000 {
		t.Fatal(h.Max(), h.Count())
	}
	var m H
	m.Merge(&h)
	m.Merge(&h)
	if m.Count() != 200000 || m.Quantile(0.5) != h.Quantile(0.5) {
		t.Fatal("merge")
	}
	// Every bucket's lower bound maps back to the bucket.
	for i := 0; i < nBuckets; i++ {
		lo, _ := lowest(i)
		if index(lo) != i {
			t.Fatalf("bucket %d: lowest %d maps to %d", i, lo, index(lo))
		}
	}
}
