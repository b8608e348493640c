/**
 * A minimal POSIX ustar archive writer and reader (IEEE Std 1003.1-2001, "pax"/ustar header
 * format), for the profiling results of `DELETE /v1/debug/pprof`: a handful of regular files,
 * written in memory. No dependency: the format is 512-byte blocks.
 *
 * Header block (offsets in bytes, numbers as NUL-terminated octal ASCII):
 *   0 name[100]  100 mode[8]  108 uid[8]  116 gid[8]  124 size[12]  136 mtime[12]
 *   148 chksum[8]  156 typeflag[1]  157 linkname[100]  257 magic[6] "ustar\0"  263 version[2] "00"
 *   265 uname[32]  297 gname[32]  329 devmajor[8]  337 devminor[8]  345 prefix[155]
 * The checksum is the sum of the header's bytes with the checksum field taken as 8 spaces. Each
 * file's data follows its header, padded with NULs to a multiple of 512; two zero blocks end
 * the archive.
 */

const BLOCK = 512;
/** Largest size the 11 octal digits of the size field hold (8 GiB - 1). */
const MAX_SIZE = 0o77777777777;

export interface TarEntry {
  /** Path inside the archive: at most 100 bytes, no `..` segments. */
  readonly name: string;
  readonly data: Uint8Array;
  /** Modification time (default: now). */
  readonly mtime?: Date;
  /** Permission bits (default 0o644). */
  readonly mode?: number;
}

function octal(buf: Buffer, offset: number, width: number, value: number): void {
  // width-1 digits, then NUL.
  const s = Math.floor(value)
    .toString(8)
    .padStart(width - 1, '0');
  if (s.length > width - 1) throw new RangeError(`tar: ${value} does not fit ${width - 1} octal digits`);
  buf.write(s, offset, 'ascii');
  buf[offset + width - 1] = 0;
}

function header(e: TarEntry): Buffer {
  const name = Buffer.from(e.name, 'utf8');
  if (name.length === 0 || name.length > 100) throw new RangeError(`tar: name '${e.name}' must be 1 to 100 bytes`);
  if (e.name.split('/').some((seg) => seg === '..') || e.name.startsWith('/')) throw new RangeError(`tar: unsafe name '${e.name}'`);
  if (e.data.length > MAX_SIZE) throw new RangeError('tar: entry too large');
  const h = Buffer.alloc(BLOCK);
  name.copy(h, 0);
  octal(h, 100, 8, e.mode ?? 0o644);
  octal(h, 108, 8, 0);
  octal(h, 116, 8, 0);
  octal(h, 124, 12, e.data.length);
  octal(h, 136, 12, Math.floor((e.mtime ?? new Date()).getTime() / 1000));
  h.fill(0x20, 148, 156); // checksum placeholder: spaces
  h[156] = 0x30; // '0': regular file
  h.write('ustar\0', 257, 'ascii');
  h.write('00', 263, 'ascii');
  h.write('minkms', 265, 'ascii');
  h.write('minkms', 297, 'ascii');
  octal(h, 329, 8, 0);
  octal(h, 337, 8, 0);
  let sum = 0;
  for (const b of h) sum += b;
  // Six digits, NUL, space (the historical layout every reader accepts).
  h.write(sum.toString(8).padStart(6, '0'), 148, 'ascii');
  h[154] = 0;
  h[155] = 0x20;
  return h;
}

/** The archive of `entries`, in order. */
export function writeTar(entries: readonly TarEntry[]): Buffer {
  const parts: Buffer[] = [];
  for (const e of entries) {
    parts.push(header(e), Buffer.from(e.data.buffer, e.data.byteOffset, e.data.byteLength));
    const pad = (BLOCK - (e.data.length % BLOCK)) % BLOCK;
    if (pad > 0) parts.push(Buffer.alloc(pad));
  }
  parts.push(Buffer.alloc(2 * BLOCK));
  return Buffer.concat(parts);
}

function readOctal(buf: Buffer, offset: number, width: number): number {
  const s = buf
    .subarray(offset, offset + width)
    .toString('ascii')
    .replace(/[\0 ]+$/g, '')
    .trim();
  if (!/^[0-7]*$/.test(s)) throw new Error(`tar: invalid number '${s}'`);
  return s === '' ? 0 : parseInt(s, 8);
}

/** The regular files of a ustar archive (for tests and tools): name → data. Verifies checksums. */
export function readTar(archive: Buffer): Map<string, Buffer> {
  const files = new Map<string, Buffer>();
  let off = 0;
  while (off + BLOCK <= archive.length) {
    const h = archive.subarray(off, off + BLOCK);
    if (h.every((b) => b === 0)) break;
    const stored = readOctal(h, 148, 8);
    let sum = 0;
    for (let i = 0; i < BLOCK; i++) sum += i >= 148 && i < 156 ? 0x20 : h[i]!;
    if (sum !== stored) throw new Error(`tar: bad header checksum at offset ${off}`);
    const nameEnd = h.indexOf(0, 0);
    let name = h.subarray(0, nameEnd < 0 || nameEnd > 100 ? 100 : nameEnd).toString('utf8');
    const prefixEnd = h.indexOf(0, 345);
    const prefix = h.subarray(345, prefixEnd < 0 || prefixEnd > 500 ? 500 : prefixEnd).toString('utf8');
    if (prefix !== '') name = `${prefix}/${name}`;
    const size = readOctal(h, 124, 12);
    const type = h[156];
    off += BLOCK;
    if (off + size > archive.length) throw new Error(`tar: entry '${name}' is truncated`);
    if (type === 0x30 || type === 0) files.set(name, Buffer.from(archive.subarray(off, off + size)));
    off += Math.ceil(size / BLOCK) * BLOCK;
  }
  return files;
}
