// Package kmswire encodes and decodes the few MinIO KMS wire messages the benchmark needs
// (shared/spec/kms-wire.md §2.2–2.4): command frames and the proto3 messages of KEY:GENERATE,
// KEY:DECRYPT, KEY:CREATE and KEY:DELETE, written by hand so that the benchmark tools need
// nothing but Go's standard library.
package kmswire

import (
	"encoding/binary"
	"errors"
)

// Command codes (kms-wire.md §2.3).
const (
	KeyCreate   uint16 = 201
	KeyDelete   uint16 = 202
	KeyDecrypt  uint16 = 206
	KeyGenerate uint16 = 207
)

// FrameHeaderLen is the size of a frame header: uint16 code, uint32 length, big-endian.
const FrameHeaderLen = 6

// AppendFrame appends one command frame carrying msg.
func AppendFrame(dst []byte, code uint16, msg []byte) []byte {
	dst = binary.BigEndian.AppendUint16(dst, code)
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(msg)))
	return append(dst, msg...)
}

// Frame is one decoded command frame; Payload aliases the input.
type Frame struct {
	Code    uint16
	Payload []byte
}

// ErrFrame is returned for a body that is not a sequence of whole frames.
var ErrFrame = errors.New("malformed command frame")

// ParseFrames splits a body into frames, at most max of them.
func ParseFrames(body []byte, max int, out []Frame) ([]Frame, error) {
	for len(body) > 0 {
		if len(body) < FrameHeaderLen || len(out) >= max {
			return out, ErrFrame
		}
		code := binary.BigEndian.Uint16(body)
		n := binary.BigEndian.Uint32(body[2:])
		if uint64(n) > uint64(len(body)-FrameHeaderLen) {
			return out, ErrFrame
		}
		out = append(out, Frame{Code: code, Payload: body[FrameHeaderLen : FrameHeaderLen+int(n)]})
		body = body[FrameHeaderLen+int(n):]
	}
	return out, nil
}

// ---------------------------------------------------------------------------- proto3 encoding

func appendVarint(dst []byte, v uint64) []byte {
	for v >= 0x80 {
		dst = append(dst, byte(v)|0x80)
		v >>= 7
	}
	return append(dst, byte(v))
}

// AppendBytes appends a length-delimited field (string or bytes); empty values are omitted,
// as proto3 encoders do.
func AppendBytes(dst []byte, field int, b []byte) []byte {
	if len(b) == 0 {
		return dst
	}
	dst = appendVarint(dst, uint64(field)<<3|2)
	dst = appendVarint(dst, uint64(len(b)))
	return append(dst, b...)
}

// AppendUint appends a varint field; zero is omitted.
func AppendUint(dst []byte, field int, v uint64) []byte {
	if v == 0 {
		return dst
	}
	dst = appendVarint(dst, uint64(field)<<3)
	return appendVarint(dst, v)
}

// ErrMessage is returned for a protobuf message that cannot be decoded.
var ErrMessage = errors.New("malformed protobuf message")

// Field is one decoded protobuf field: Bytes for wire type 2, Uint for wire type 0.
type Field struct {
	Num   int
	Bytes []byte
	Uint  uint64
}

func readVarint(b []byte) (uint64, int) {
	var v uint64
	for i := 0; i < len(b) && i < 10; i++ {
		v |= uint64(b[i]&0x7f) << (7 * i)
		if b[i] < 0x80 {
			return v, i + 1
		}
	}
	return 0, 0
}

// Fields calls fn for every field of msg; unknown wire types 1 and 5 are skipped, as proto3
// decoders do with unknown fields.
func Fields(msg []byte, fn func(f Field) error) error {
	for len(msg) > 0 {
		key, n := readVarint(msg)
		if n == 0 {
			return ErrMessage
		}
		msg = msg[n:]
		f := Field{Num: int(key >> 3)}
		switch key & 7 {
		case 0:
			v, n := readVarint(msg)
			if n == 0 {
				return ErrMessage
			}
			f.Uint = v
			msg = msg[n:]
		case 1:
			if len(msg) < 8 {
				return ErrMessage
			}
			msg = msg[8:]
			continue
		case 2:
			l, n := readVarint(msg)
			if n == 0 || l > uint64(len(msg)-n) {
				return ErrMessage
			}
			f.Bytes = msg[n : n+int(l)]
			msg = msg[n+int(l):]
		case 5:
			if len(msg) < 4 {
				return ErrMessage
			}
			msg = msg[4:]
			continue
		default:
			return ErrMessage
		}
		if err := fn(f); err != nil {
			return err
		}
	}
	return nil
}

// ---------------------------------------------------------------------------- messages

// GenerateKeyRequest: 1 Name, 2 Version, 3 AssociatedData, 4 Length.
type GenerateKeyRequest struct {
	Name           string
	Version        uint32
	AssociatedData []byte
	Length         uint32
}

func (m *GenerateKeyRequest) Append(dst []byte) []byte {
	dst = AppendBytes(dst, 1, []byte(m.Name))
	dst = AppendUint(dst, 2, uint64(m.Version))
	dst = AppendBytes(dst, 3, m.AssociatedData)
	return AppendUint(dst, 4, uint64(m.Length))
}

func (m *GenerateKeyRequest) Decode(b []byte) error {
	*m = GenerateKeyRequest{}
	return Fields(b, func(f Field) error {
		switch f.Num {
		case 1:
			m.Name = string(f.Bytes)
		case 2:
			m.Version = uint32(f.Uint)
		case 3:
			m.AssociatedData = f.Bytes
		case 4:
			m.Length = uint32(f.Uint)
		}
		return nil
	})
}

// GenerateKeyResponse: 1 Version, 2 Plaintext, 3 Ciphertext.
type GenerateKeyResponse struct {
	Version    uint32
	Plaintext  []byte
	Ciphertext []byte
}

func (m *GenerateKeyResponse) Append(dst []byte) []byte {
	dst = AppendUint(dst, 1, uint64(m.Version))
	dst = AppendBytes(dst, 2, m.Plaintext)
	return AppendBytes(dst, 3, m.Ciphertext)
}

func (m *GenerateKeyResponse) Decode(b []byte) error {
	*m = GenerateKeyResponse{}
	return Fields(b, func(f Field) error {
		switch f.Num {
		case 1:
			m.Version = uint32(f.Uint)
		case 2:
			m.Plaintext = f.Bytes
		case 3:
			m.Ciphertext = f.Bytes
		}
		return nil
	})
}

// DecryptRequest: 1 Name, 2 Version, 3 Ciphertext, 4 AssociatedData.
type DecryptRequest struct {
	Name           string
	Version        uint32
	Ciphertext     []byte
	AssociatedData []byte
}

func (m *DecryptRequest) Append(dst []byte) []byte {
	dst = AppendBytes(dst, 1, []byte(m.Name))
	dst = AppendUint(dst, 2, uint64(m.Version))
	dst = AppendBytes(dst, 3, m.Ciphertext)
	return AppendBytes(dst, 4, m.AssociatedData)
}

func (m *DecryptRequest) Decode(b []byte) error {
	*m = DecryptRequest{}
	return Fields(b, func(f Field) error {
		switch f.Num {
		case 1:
			m.Name = string(f.Bytes)
		case 2:
			m.Version = uint32(f.Uint)
		case 3:
			m.Ciphertext = f.Bytes
		case 4:
			m.AssociatedData = f.Bytes
		}
		return nil
	})
}

// AppendDecryptResponse appends DecryptResponse {1 Plaintext}.
func AppendDecryptResponse(dst, plaintext []byte) []byte { return AppendBytes(dst, 1, plaintext) }

// AppendCreateKeyRequest appends CreateKeyRequest {1 Name}.
func AppendCreateKeyRequest(dst []byte, name string) []byte { return AppendBytes(dst, 1, []byte(name)) }

// AppendDeleteKeyRequest appends DeleteKeyRequest {1 Name, 3 AllVersions = true}.
func AppendDeleteKeyRequest(dst []byte, name string) []byte {
	dst = AppendBytes(dst, 1, []byte(name))
	return AppendUint(dst, 3, 1)
}

// AppendErrResponse appends ErrResponse {1 Message}.
func AppendErrResponse(dst []byte, msg string) []byte { return AppendBytes(dst, 1, []byte(msg)) }

// DecodeErrResponse returns the message of an ErrResponse, or "" if b is not one.
func DecodeErrResponse(b []byte) string {
	var msg string
	if Fields(b, func(f Field) error {
		if f.Num == 1 {
			msg = string(f.Bytes)
		}
		return nil
	}) != nil {
		return ""
	}
	return msg
}

// MinIOContext is the associated data MinIO binds a data key to: its JSON crypto context naming
// bucket and object, about 150 bytes (the same bytes as bench/workload.ts minioContext(0)).
func MinIOContext() []byte {
	return []byte(`{"x-minio-internal-server-side-encryption-context":"analytics-eu-west-1-bucket/photos/2025/12/31/camera-roll/IMG_020000.heic"}`)
}
