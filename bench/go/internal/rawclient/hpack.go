package rawclient

import "errors"

var errHpack = errors.New("malformed HPACK header block")

// readHpackInt reads an HPACK integer with an n-bit prefix (RFC 7541 §5.1).
func readHpackInt(b []byte, n uint) (int, int, error) {
	if len(b) == 0 {
		return 0, 0, errHpack
	}
	limit := 1<<n - 1
	v := int(b[0]) & limit
	if v < limit {
		return v, 1, nil
	}
	m := uint(0)
	for i := 1; i < len(b) && i < 6; i++ {
		v += int(b[i]&0x7f) << m
		m += 7
		if b[i]&0x80 == 0 {
			return v, i + 1, nil
		}
	}
	return 0, 0, errHpack
}

// readHpackString returns a string literal's raw bytes and whether they are Huffman-coded.
func readHpackString(b []byte) ([]byte, bool, int, error) {
	if len(b) == 0 {
		return nil, false, 0, errHpack
	}
	huff := b[0]&0x80 != 0
	l, n, err := readHpackInt(b, 7)
	if err != nil || l > len(b)-n {
		return nil, false, 0, errHpack
	}
	return b[n : n+l], huff, n + l, nil
}

// staticStatus maps the static table's :status entries (RFC 7541 Appendix A, 8–14).
func staticStatus(index int) int {
	switch index {
	case 8:
		return 200
	case 9:
		return 204
	case 10:
		return 206
	case 11:
		return 304
	case 12:
		return 400
	case 13:
		return 404
	case 14:
		return 500
	}
	return 0
}

// decodeStatus finds :status in a response header block encoded without a dynamic table (we
// announce SETTINGS_HEADER_TABLE_SIZE = 0). It returns 0 if the block has no :status it can
// read; callers treat that as "not 200".
func decodeStatus(block []byte) (int, error) {
	for len(block) > 0 {
		b := block[0]
		var prefix uint
		switch {
		case b&0x80 != 0: // indexed field
			idx, n, err := readHpackInt(block, 7)
			if err != nil {
				return 0, err
			}
			if s := staticStatus(idx); s != 0 {
				return s, nil
			}
			block = block[n:]
			continue
		case b&0xe0 == 0x20: // dynamic table size update
			_, n, err := readHpackInt(block, 5)
			if err != nil {
				return 0, err
			}
			block = block[n:]
			continue
		case b&0xc0 == 0x40: // literal with incremental indexing
			prefix = 6
		default: // literal without indexing, or never indexed
			prefix = 4
		}
		idx, n, err := readHpackInt(block, prefix)
		if err != nil {
			return 0, err
		}
		block = block[n:]
		if idx == 0 { // a literal name
			_, _, n, err := readHpackString(block)
			if err != nil {
				return 0, err
			}
			block = block[n:]
		}
		value, huff, n, err := readHpackString(block)
		if err != nil {
			return 0, err
		}
		block = block[n:]
		if idx >= 8 && idx <= 14 { // the :status name
			if huff {
				return huffmanDigits(value), nil
			}
			return asciiStatus(value), nil
		}
	}
	return 0, nil
}

func asciiStatus(v []byte) int {
	if len(v) != 3 {
		return 0
	}
	s := 0
	for _, c := range v {
		if c < '0' || c > '9' {
			return 0
		}
		s = s*10 + int(c-'0')
	}
	return s
}

// huffmanDigits decodes a Huffman-coded three-digit status. Only digits are needed: in the
// HPACK code (RFC 7541 Appendix B) '0'–'2' are the 5-bit codes 00000–00010 and '3'–'9' the
// 6-bit codes 011001–011111; the end is padded with ones (a prefix of EOS). Anything else
// returns 0.
func huffmanDigits(b []byte) int {
	var acc uint64
	nbits, pos, v, digits := 0, 0, 0, 0
	for {
		for nbits < 6 && pos < len(b) {
			acc = acc<<8 | uint64(b[pos])
			pos++
			nbits += 8
		}
		if nbits < 5 {
			break
		}
		if c := (acc >> (nbits - 5)) & 0x1f; c <= 2 {
			v, digits, nbits = v*10+int(c), digits+1, nbits-5
			continue
		}
		if nbits < 6 {
			break
		}
		if c := (acc >> (nbits - 6)) & 0x3f; c >= 0x19 && c <= 0x1f {
			v, digits, nbits = v*10+int(c-0x19+3), digits+1, nbits-6
			continue
		}
		break
	}
	rest := acc & (1<<nbits - 1)
	if pos != len(b) || nbits >= 8 || rest != 1<<nbits-1 || digits != 3 {
		return 0
	}
	return v
}
