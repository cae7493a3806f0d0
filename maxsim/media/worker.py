"""Decoding in a worker process: a native decoder that crashes or hangs on one file fails that file, never
the process that ingests (a batch of files, the HTTP server).

:func:`isolated_clips` runs :func:`~maxsim.media.clips.iter_clips` (decode, segment, sample) in a child
process and hands its clips back as they come, with the same results and errors as ``iter_clips`` in
this process. A child that dies (a segmentation fault, an abort inside FFmpeg or OpenCV) or stops
decoding for ``stall_timeout`` seconds is killed, and the file fails with a
:class:`~maxsim.errors.VideoError` saying so; the next file gets a fresh child.

Children are plain interpreters started with ``subprocess`` that import the media stage alone (not the
``maxsim`` package's ``__init__``, which loads torch and the engine): one starts in well under a second,
and an idle one is kept for the next file of this process. A child reads up to ``read_ahead`` clips
ahead of the consumer, so decoding overlaps encoding; frames travel pickled over a socket pair (a clip is
a few MB at the default sampling: milliseconds).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import pickle
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from multiprocessing.connection import Connection
from typing import Any

from maxsim.errors import VideoError
from maxsim.media.clips import iter_clips
from maxsim.media.frames import FrameSampler
from maxsim.media.progress import ProgressCallback, VideoProgress
from maxsim.media.segment import Segmenter, load_segmenter
from maxsim.types import Clip

logger = logging.getLogger("maxsim.media.worker")

STALL_TIMEOUT_S = 120.0  # no decoded frame for this long: the decoder is taken to hang on the file
TICK_S = 1.0  # a busy child reports its progress this often (so a long segment is not a stall)
MAX_IDLE = 2  # idle children kept for the next files of this process
# Tests make the child crash or hang on a file: "segv:NAME", "abort:NAME" or "hang:NAME" (NAME: a part of
# the file's path). Read in the parent when a file is sent, so a child started earlier obeys it too.
CRASH_ENV = "MAXSIM_DECODER_CRASH"
_SYS_PATH_ENV = "MAXSIM_WORKER_SYS_PATH"

# The child's entry point: the parent's import path, then the maxsim package registered without running
# its __init__ (which imports torch and every stage), then the worker loop on the inherited socket.
_BOOTSTRAP = """
import importlib.util, json, os, sys
sys.path[:] = json.loads(os.environ.pop("MAXSIM_WORKER_SYS_PATH"))
spec = importlib.util.find_spec("maxsim")
sys.modules["maxsim"] = importlib.util.module_from_spec(spec)
from maxsim.media.worker import serve
serve(int(sys.argv[1]))
"""


class _Child:
    """One worker process and the parent's end of its socket."""

    def __init__(self) -> None:
        parent, child = socket.socketpair()
        try:
            env = {**os.environ, _SYS_PATH_ENV: json.dumps([str(p) for p in sys.path])}
            self.proc = subprocess.Popen(
                [sys.executable, "-c", _BOOTSTRAP, str(child.fileno())], pass_fds=[child.fileno()],
                stdin=subprocess.DEVNULL, env=env, cwd=os.getcwd(),
            )
        except BaseException:
            parent.close()
            raise
        finally:
            child.close()
        self.conn = Connection(parent.detach())

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        with contextlib.suppress(OSError):
            self.proc.kill()
        with contextlib.suppress(Exception):
            self.proc.wait(timeout=10)
        self.conn.close()

    def stop(self) -> None:
        """Ask an idle child to exit (it also exits when the socket closes)."""
        with contextlib.suppress(OSError, ValueError):
            self.conn.send(None)
        self.conn.close()
        try:
            self.proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            self.kill()


_idle: list[_Child] = []
_lock = threading.Lock()


def _borrow() -> _Child:
    with _lock:
        while _idle:
            child = _idle.pop()
            if child.alive():
                return child
            child.kill()
    return _Child()


def _give_back(child: _Child) -> None:
    with _lock:
        if len(_idle) < MAX_IDLE and child.alive():
            _idle.append(child)
            return
    child.stop()


def warm_up() -> None:
    """Start a worker process now, if none is idle, so that its imports overlap the caller's own work."""
    with _lock:
        if _idle:
            return
    try:
        child = _Child()
    except OSError:  # reported when a file needs one (isolated_clips)
        return
    _give_back(child)


@atexit.register
def _stop_idle() -> None:
    with _lock:
        children, _idle[:] = list(_idle), []
    for child in children:
        child.stop()


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "stopped answering"
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


def isolated_clips(
    path: str | os.PathLike,
    segmenter: Segmenter | str = "scenes",
    sampler: FrameSampler | None = None,
    prefetch: int = 8,
    read_ahead: int = 8,
    stall_timeout: float = STALL_TIMEOUT_S,
    progress: VideoProgress | None = None,
    on_progress: ProgressCallback | None = None,
) -> Iterator[tuple[Clip, bytes]]:
    """:func:`~maxsim.media.clips.iter_clips` of ``path`` run in a worker process (see the module
    docstring): the same ``(clip, jpeg_thumbnail)`` pairs and errors, plus a
    :class:`~maxsim.errors.VideoError` when the worker dies on the file or decodes no frame for
    ``stall_timeout`` seconds. A segmenter or sampler that cannot be pickled runs in this process (with
    a warning): it could not be sent to a worker.

    ``progress`` (when given) is kept current: the timeline the container announces, the seconds decoded
    (reported by the worker every ``TICK_S``) and the clips received; ``on_progress(progress)`` is called
    after each change.
    """
    spath = os.fspath(path)
    segmenter = load_segmenter(segmenter)
    sampler = sampler if sampler is not None else FrameSampler()
    job = {"path": spath, "segmenter": segmenter, "sampler": sampler, "prefetch": int(prefetch),
           "read_ahead": max(1, int(read_ahead)), "crash": os.environ.get(CRASH_ENV, "")}
    try:
        data = pickle.dumps(job, protocol=pickle.HIGHEST_PROTOCOL)
        child = _borrow()
    except Exception as e:  # a user's segmenter or sampler that cannot travel, or no process to be had
        what = (f"{type(segmenter).__name__} cannot be sent to a decode worker" if not isinstance(e, OSError)
                else "no decode worker process can be started")
        logger.warning("%s (%s: %s); decoding in this process, without protection against a crashing "
                       "decoder", what, type(e).__name__, e)
        yield from local_clips(spath, segmenter, sampler, prefetch, progress, on_progress)
        return
    finished = False
    try:
        try:
            child.conn.send_bytes(data)
        except OSError:  # died while idle (e.g. the OOM killer): a fresh one takes the job
            child.kill()
            child = _Child()
            child.conn.send_bytes(data)
        while True:
            if not child.conn.poll(stall_timeout):
                child.kill()
                raise VideoError(spath, f"decoding stalled: no frame was decoded for {stall_timeout:g} s "
                                        "(the decoder hung on this file; it was stopped)")
            try:
                msg = child.conn.recv()
            except (EOFError, OSError):
                try:
                    code = child.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    code = None
                child.kill()
                raise VideoError(
                    spath, f"the video decoder crashed on this file (its worker process "
                    f"{_describe_exit(code)}); other files are not affected") from None
            kind = msg[0]
            if progress is not None and kind in ("clip", "tick", "start"):
                _note(progress, msg)
                if on_progress is not None:
                    on_progress(progress)
            if kind == "clip":
                yield msg[1], msg[2]
            elif kind == "done":
                finished = True
                return
            elif kind == "error":
                finished = True
                raise msg[1]
            # "tick", "start": the worker is decoding; nothing to do but wait again
    finally:
        if finished:
            _give_back(child)
        elif child.conn.closed:
            pass
        else:  # abandoned mid-file (or failed): the child may be mid-send, start afresh next time
            child.kill()


def _note(progress: VideoProgress, msg: tuple) -> None:
    """Update ``progress`` from a worker's message."""
    kind = msg[0]
    if kind == "start":
        progress.duration = float(msg[1])
    elif kind == "tick":
        progress.decoded_s = max(progress.decoded_s, float(msg[2]))
    else:  # a clip: decoding has reached its end at least
        progress.segments_decoded += 1
        progress.decoded_s = max(progress.decoded_s, float(msg[1].end))


def local_clips(path: str, segmenter: Segmenter, sampler: FrameSampler, prefetch: int,
                progress: VideoProgress | None, on_progress: ProgressCallback | None
                ) -> Iterator[tuple[Clip, bytes]]:
    """:func:`~maxsim.media.clips.iter_clips` in this process, keeping ``progress`` as :func:`isolated_clips`
    does."""
    if progress is None:
        yield from iter_clips(path, segmenter, sampler, prefetch=prefetch)
        return
    last = [0.0]

    def tell(msg: tuple) -> None:
        _note(progress, msg)
        now = time.monotonic()
        if on_progress is not None and (msg[0] != "tick" or now - last[0] >= TICK_S):
            last[0] = now
            on_progress(progress)

    for clip, thumb in iter_clips(path, segmenter, sampler, prefetch=prefetch,
                                  on_frame=lambda t: tell(("tick", 0, t)),
                                  on_start=lambda s: tell(("start", s))):
        tell(("clip", clip))
        yield clip, thumb


# -- the child's side ------------------------------------------------------------------------------------
def serve(fd: int) -> None:
    """The worker loop: run each job received on socket ``fd`` until it closes (child processes only)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle; it stops us
    conn = Connection(fd)
    while True:
        try:
            data = conn.recv_bytes()
        except (EOFError, OSError):
            return
        job = pickle.loads(data)
        if job is None:
            return
        _run(conn, job)


def _crash_here(spec: str, path: str) -> None:
    how, _, name = spec.partition(":")
    if not name or name not in path:
        return
    if how == "segv":
        os.kill(os.getpid(), signal.SIGSEGV)
    elif how == "abort":
        os.abort()
    elif how == "hang":
        time.sleep(3600)


def _run(conn: Connection, job: dict[str, Any]) -> None:
    out: queue.Queue = queue.Queue(maxsize=job["read_ahead"])
    progress = [0, 0.0]  # frames decoded, time of the last one
    stop = threading.Event()

    def on_frame(t: float) -> None:
        progress[0] += 1
        progress[1] = t

    def ticker() -> None:
        seen = 0
        while not stop.wait(TICK_S):
            if progress[0] != seen:
                seen = progress[0]
                with contextlib.suppress(queue.Full):
                    out.put_nowait(("tick", seen, progress[1]))

    def sender() -> None:
        while True:
            msg = out.get()
            try:
                conn.send(msg)
            except (OSError, ValueError):  # the parent is gone
                os._exit(0)
            if msg[0] in ("done", "error"):
                return

    threads = [threading.Thread(target=ticker, daemon=True), threading.Thread(target=sender, daemon=True)]
    for t in threads:
        t.start()
    try:
        _crash_here(job["crash"], job["path"])
        for clip, thumb in iter_clips(job["path"], job["segmenter"], job["sampler"], prefetch=job["prefetch"],
                                      on_frame=on_frame, on_start=lambda s: out.put(("start", s))):
            out.put(("clip", clip, thumb))
        out.put(("done",))
    except BaseException as e:  # handed to the parent, which raises it for this file
        out.put(("error", _portable(e)))
    finally:
        stop.set()
        threads[1].join()


def _portable(e: BaseException) -> BaseException:
    """``e`` if it survives pickling, else a RuntimeError carrying its type and message."""
    try:
        pickle.loads(pickle.dumps(e))
        return e
    except Exception:
        return RuntimeError(f"{type(e).__name__}: {e}")


__all__ = ["CRASH_ENV", "STALL_TIMEOUT_S", "isolated_clips", "local_clips", "warm_up"]
