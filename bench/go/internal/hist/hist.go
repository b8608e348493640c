// Package hist is a fixed-size latency histogram with relative precision better than 1 %:
// recording is a few instructions and no allocation, so that the load generator spends its
// time sending requests, and histograms of many workers merge by adding counts.
package hist

import (
	"math"
	"math/bits"
	"time"
)

const (
	subBits  = 7 // 128 sub-buckets per power of two: < 0.8 % relative error
	sub      = 1 << subBits
	linear   = 2 * sub // values below this are exact (ns)
	maxShift = 64 - subBits - 1
	nBuckets = linear + maxShift*sub
)

// H counts durations in nanoseconds.
type H struct {
	counts [nBuckets]uint64
	n      uint64
	sum    uint64
	max    uint64
}

func index(v uint64) int {
	if v < linear {
		return int(v)
	}
	shift := bits.Len64(v) - subBits - 1 // v>>shift is in [sub, 2*sub)
	return linear + (shift-1)*sub + int(v>>shift) - sub
}

// lowest returns the smallest value of bucket i, and its width.
func lowest(i int) (uint64, uint64) {
	if i < linear {
		return uint64(i), 1
	}
	shift := (i-linear)/sub + 1
	m := uint64((i-linear)%sub + sub)
	return m << shift, 1 << shift
}

// Record adds one duration.
func (h *H) Record(d time.Duration) {
	v := uint64(max(d, 0))
	h.counts[index(v)]++
	h.n++
	h.sum += v
	if v > h.max {
		h.max = v
	}
}

// Merge adds the counts of o.
func (h *H) Merge(o *H) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
	h.sum += o.sum
	h.max = max(h.max, o.max)
}

// Reset empties the histogram.
func (h *H) Reset() { *h = H{} }

// Count is the number of recorded durations.
func (h *H) Count() uint64 { return h.n }

// Max is the largest recorded duration.
func (h *H) Max() time.Duration { return time.Duration(h.max) }

// Mean is the mean duration.
func (h *H) Mean() time.Duration {
	if h.n == 0 {
		return 0
	}
	return time.Duration(h.sum / h.n)
}

// Quantile returns the duration below which a fraction q of the recorded durations fall (the
// middle of the bucket that holds it; never above the maximum).
func (h *H) Quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	rank := min(max(uint64(math.Ceil(q*float64(h.n))), 1), h.n)
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			lo, w := lowest(i)
			return time.Duration(min(lo+w/2, h.max))
		}
	}
	return time.Duration(h.max)
}
