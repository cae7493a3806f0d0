"""MP4 box surgery (ISO-BMFF) for tests: variable-frame-rate and fast-start videos without FFmpeg tools."""

from __future__ import annotations

import struct


def mp4_boxes(data: bytes, start: int = 0, end: int | None = None):
    """Yield ``(type, offset, header_size, size)`` of the boxes in ``data[start:end]``."""
    end = len(data) if end is None else end
    i = start
    while i < end:
        size, typ = struct.unpack(">I4s", data[i : i + 8])
        hdr = 8
        if size == 1:
            size, hdr = struct.unpack(">Q", data[i + 8 : i + 16])[0], 16
        elif size == 0:
            size = end - i
        yield typ, i, hdr, size
        i += size


_CONTAINERS = {b"moov", b"trak", b"mdia", b"minf", b"stbl", b"edts"}


def _parse(data: bytes) -> list:
    return [
        [t, _parse(data[i + h : i + s]) if t in _CONTAINERS else bytearray(data[i + h : i + s])]
        for t, i, h, s in mp4_boxes(data)
    ]


def _serialize(boxes: list) -> bytes:
    out = bytearray()
    for t, body in boxes:
        payload = _serialize(body) if isinstance(body, list) else bytes(body)
        out += struct.pack(">I4s", 8 + len(payload), t) + payload
    return bytes(out)


def retime_mp4(data: bytes, runs: list[tuple[int, float]]) -> bytes:
    """Give an OpenCV-written MP4 (index after the payload) variable frame durations: ``runs`` of
    ``(n_frames, seconds_per_frame)`` replace its constant-rate time-to-sample table."""
    boxes = _parse(data)

    def find(tree: list, typ: bytes) -> list:
        found = []
        for t, body in tree:
            if t == typ:
                found.append(body)
            if isinstance(body, list):
                found += find(body, typ)
        return found

    (mdhd,) = find(boxes, b"mdhd")
    assert mdhd[0] == 0, "version-0 mdhd expected"
    (timescale,) = struct.unpack(">I", mdhd[12:16])
    entries = [(n, round(dt * timescale)) for n, dt in runs]
    total = sum(n * d for n, d in entries)
    (stts,) = find(boxes, b"stts")
    stts[:] = struct.pack(">II", 0, len(entries)) + b"".join(struct.pack(">II", n, d) for n, d in entries)
    mdhd[16:20] = struct.pack(">I", total)
    ((mvhd),) = find(boxes, b"mvhd")
    (movie_scale,) = struct.unpack(">I", mvhd[12:16])
    movie_total = round(total / timescale * movie_scale)
    mvhd[16:20] = struct.pack(">I", movie_total)
    for tkhd in find(boxes, b"tkhd"):
        tkhd[20:24] = struct.pack(">I", movie_total)
    for elst in find(boxes, b"elst"):
        elst[8:12] = struct.pack(">I", movie_total)
    out = _serialize(boxes)
    assert [t for t, _ in boxes].index(b"mdat") < [t for t, _ in boxes].index(b"moov")  # offsets unchanged
    return out


def faststart(data: bytes) -> bytes:
    """Move an MP4's 'moov' index in front of its 'mdat' payload (fixing the chunk offsets)."""
    top = {t: (i, h, s) for t, i, h, s in mp4_boxes(data)}
    mi, mh, ms = top[b"moov"]
    moov = bytearray(data[mi : mi + ms])

    def patch(start: int, end: int) -> None:
        for t, i, h, s in mp4_boxes(moov, start, end):
            if t in (b"trak", b"mdia", b"minf", b"stbl"):
                patch(i + h, i + s)
            elif t in (b"stco", b"co64"):
                fmt, width = (">I", 4) if t == b"stco" else (">Q", 8)
                (n,) = struct.unpack(">I", moov[i + h + 4 : i + h + 8])
                for k in range(n):
                    o = i + h + 8 + k * width
                    moov[o : o + width] = struct.pack(fmt, struct.unpack(fmt, moov[o : o + width])[0] + ms)

    patch(mh, ms)
    out = bytearray()
    for t, i, _, s in mp4_boxes(data):
        if t == b"mdat":
            out += moov
        if t != b"moov":
            out += data[i : i + s]
    return bytes(out)
