#!/usr/bin/env python3
# SPDX-License-Identifier: MIT OR Apache-2.0
"""Zeroes, in a CUDA shared library, the device code for every GPU architecture but one, so the file compresses
to what one device call can carry (onnxruntime-gpu's CUDA provider: 284 MB, 218 MB of it cubins for sm_75, 80,
86, 89, 90 and 120; kept for sm_90 alone it zstd-compresses to ~54 MB).

The layout is untouched: each fatbin entry's header stays, only the payload bytes of the other architectures
become zeros. The CUDA driver picks the entry for the device's architecture by its header and never reads the
others, so the library works unchanged on that architecture (and fails to load kernels on any other).

  python3 scripts/gpu/prune_fatbin.py IN.so OUT.so [SM]      (SM default 90: H100/H200)
"""

import collections
import struct
import sys

FATBIN_MAGIC = 0xBA55ED50


def sections(f):
    shoff = struct.unpack_from("<Q", f, 0x28)[0]
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", f, 0x3A)
    raw = [struct.unpack_from("<IIQQQQ", f, shoff + i * shentsize) for i in range(shnum)]
    stro = raw[shstrndx][4]
    return {f[stro + r[0] : f.index(b"\0", stro + r[0])].decode(): (r[4], r[5]) for r in raw}


def entries(f):
    """(offset, kind, sm, header size, padded payload size) of every entry of every fatbin in .nv_fatbin."""
    off, size = sections(f)[".nv_fatbin"]
    pos, end, out = off, off + size, []
    while pos < end:
        magic, _ver, hsize, fsize = struct.unpack_from("<IHHQ", f, pos)
        if magic != FATBIN_MAGIC:
            pos += 8  # fatbins are 8-byte aligned; skip padding
            continue
        e, eend = pos + hsize, pos + hsize + fsize
        while e < eend:
            kind, _v, ehsize, padded = struct.unpack_from("<HHII", f, e)
            sm = struct.unpack_from("<I", f, e + 28)[0]
            out.append((e, kind, sm, ehsize, padded))
            e += ehsize + padded
        pos = eend
    return out


def main():
    src, dst = sys.argv[1], sys.argv[2]
    keep = int(sys.argv[3]) if len(sys.argv) > 3 else 90
    f = bytearray(open(src, "rb").read())
    ents = entries(f)
    by = collections.Counter()
    for _e, kind, sm, _h, padded in ents:
        by[("ptx" if kind == 1 else "elf", sm)] += padded
    print(f"{len(ents)} entries: " + ", ".join(f"{k}_{sm} {v / 1e6:.1f} MB" for (k, sm), v in sorted(by.items())))
    if not any(kind == 2 and sm == keep for _e, kind, sm, _h, _p in ents):
        sys.exit(f"no sm_{keep} code in {src}: refusing to zero everything")
    zeroed = 0
    for e, kind, sm, h, padded in ents:
        if not (kind == 2 and sm == keep):
            f[e + h : e + h + padded] = bytes(padded)
            zeroed += padded
    open(dst, "wb").write(f)
    print(f"kept sm_{keep}; zeroed {zeroed / 1e6:.1f} MB of other architectures -> {dst}")


if __name__ == "__main__":
    main()
