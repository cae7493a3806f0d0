"""What a video file's container structure says before any frame is decoded: MP4/QuickTime boxes cut short
or missing their index, signatures of the other containers, MPEG transport streams that end inside a
packet or inside a PES packet of known length, and text files FFmpeg would render as video.

Every check reads the file through an open descriptor (``os.pread``), never by name: a name is only ever
given to the operating system, which cannot choke on bytes that are not UTF-8.
"""

from __future__ import annotations

import os

ISOBMFF_EXT = {".mp4", ".m4v", ".mov", ".3gp", ".3g2", ".mj2", ".qt"}
TS_EXT = {".ts", ".m2ts", ".mts", ".m2t", ".tsv", ".tsa"}
_ISOBMFF_TOP = {
    b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot", b"uuid", b"styp", b"sidx", b"moof",
    b"mfra", b"meta", b"pdin", b"prft", b"emsg", b"junk", b"PICT", b"\0\0\0\0",
}
SIGNATURES = {  # extension -> (offset, magic, container name)
    ".mkv": (0, b"\x1a\x45\xdf\xa3", "Matroska"),
    ".webm": (0, b"\x1a\x45\xdf\xa3", "WebM"),
    ".avi": (8, b"AVI ", "AVI"),
    ".flv": (0, b"FLV", "FLV"),
}
# Codecs FFmpeg uses to render text files (ANSI art, NFO, ...) as "video": never a real video.
TEXT_CODECS = {b"ansi", b"bint", b"xbin", b"idf\0"}

TS_SYNC = 0x47
TS_TAIL_PACKETS = 4096  # packets read from the end of a transport stream to find the last PES packets


def _read(fd: int, n: int, offset: int) -> bytes:
    return os.pread(fd, n, offset)


def isobmff_problem(fd: int, size: int) -> str | None:
    """Why an MP4/MOV file is unusable judging by its top-level boxes, or None if they look sound."""
    pos, seen = 0, []
    while pos + 8 <= size:
        head = _read(fd, 16, pos)
        box_size, typ = int.from_bytes(head[:4], "big"), head[4:8]
        if not seen and typ not in _ISOBMFF_TOP:
            return (
                "not an MP4/QuickTime file (no 'ftyp' header box: damaged, cut at the start, or another "
                "format with the wrong extension)"
            )
        if box_size == 1:
            box_size = int.from_bytes(head[8:16], "big")
        elif box_size == 0:  # box extends to the end of the file
            box_size = size - pos
        if box_size < 8:
            return f"corrupt MP4: invalid size of box '{typ.decode('latin1')}' at byte {pos}"
        seen.append(typ)
        if pos + box_size > size:
            return (
                f"truncated video: the file ends at byte {size}, inside its '{typ.decode('latin1')}' box "
                f"which should end at byte {pos + box_size}"
            )
        pos += box_size
    if pos < 8:
        return "not an MP4/QuickTime file (shorter than one box header)"
    if b"moov" not in seen and b"moof" not in seen:
        return "incomplete MP4: no 'moov' index box (the recording was not finalised or the file was cut)"
    return None


def ts_layout(head: bytes) -> tuple[int, int] | None:
    """(packet size, offset of the sync byte in a packet) of an MPEG transport stream starting with
    ``head`` (188-byte packets, or 192 with a 4-byte time code as in M2TS), or None."""
    for size, off in ((188, 0), (192, 4), (204, 0)):
        if len(head) >= off + 2 * size + 1 and all(head[off + k * size] == TS_SYNC for k in range(3)):
            return size, off
    return None


def ts_problem(fd: int, size: int, head: bytes) -> str | None:
    """Why an MPEG transport stream is incomplete where the stream itself says so, or None.

    A transport stream announces no duration, so a cut file looks like a shorter video. Two things give
    a cut away: a file that ends inside a packet (every packet has the same size), and a PES packet whose
    declared length runs past the end of the file (audio and most data streams declare it; video
    streams usually do not, so a video-only stream cut exactly at a packet boundary cannot be told from
    a shorter one).
    """
    layout = ts_layout(head)
    if layout is None:
        return ("not a valid MPEG transport stream (no 0x47 sync byte every 188 bytes: damaged, cut at the "
                "start, or another kind of file with a .ts extension)")
    psize, off = layout
    extra = size % psize
    if extra:
        return (f"truncated MPEG-TS: the file ends {extra} bytes into a {psize}-byte transport packet "
                "(the recording or the copy was cut)")
    n = size // psize
    first = max(0, n - TS_TAIL_PACKETS)
    tail = _read(fd, (n - first) * psize, first * psize)
    if tail[len(tail) - psize + off] != TS_SYNC:
        return "corrupt MPEG-TS: its last packet has no sync byte (the end of the file is damaged)"
    pending: dict[int, list[int]] = {}  # pid -> [declared PES bytes, bytes seen] of its last PES packet
    for i in range(0, len(tail), psize):
        pkt = tail[i + off : i + off + 188]
        if len(pkt) < 188 or pkt[0] != TS_SYNC:
            continue
        pid = ((pkt[1] & 0x1F) << 8) | pkt[2]
        if pid == 0x1FFF:  # null packets
            continue
        start, afc = pkt[1] & 0x40, (pkt[3] >> 4) & 0x3
        if not afc & 0x1:  # no payload
            continue
        p = 4 + (1 + pkt[4] if afc & 0x2 else 0)
        payload = pkt[p:188] if p < 188 else b""
        if start:
            if payload[:3] == b"\x00\x00\x01" and len(payload) >= 6:
                declared = int.from_bytes(payload[4:6], "big")
                pending[pid] = [declared, len(payload) - 6] if declared else [0, 0]
            else:
                pending.pop(pid, None)  # PSI tables, not PES
        elif pid in pending:
            pending[pid][1] += len(payload)
    for pid, (declared, seen) in sorted(pending.items()):
        if declared and seen < declared:
            return (f"truncated MPEG-TS: the last PES packet of stream 0x{pid:X} ends after {seen} of its "
                    f"{declared} bytes (the recording or the copy was cut)")
    return None


def container_problem(fd: int, size: int, ext: str) -> str | None:
    """Why the file open at ``fd`` (``size`` bytes, name ending in ``ext``) is not a usable video judging
    by its container structure, or None when nothing is wrong there (decoding may still find more)."""
    head = _read(fd, 3 * 204 + 8, 0)
    ext = ext.lower()
    if ext in ISOBMFF_EXT or head[4:8] == b"ftyp":
        return isobmff_problem(fd, size)
    if ext in SIGNATURES:
        offset, magic, name = SIGNATURES[ext]  # every signature lies within the first 12 bytes
        if head[offset : offset + len(magic)] != magic:
            return (f"not a valid {name} file (its signature is missing: damaged, cut at the start, or "
                    "another format with the wrong extension)")
        return None
    if ext in TS_EXT or ts_layout(head) is not None:
        return ts_problem(fd, size, head)
    return None
