"""What the worker and its children say to each other: one framing, typed records.

Both ways, every message is one frame:

    kind (1 byte) | part count n (1 byte) | n part sizes (8 bytes each, big-endian) | parts

The parts are raw bytes, so a job's record, payload and checkpoint go to the child exactly as
they were read from Redis, and a result comes back as the JSON text the handler's value was
encoded to: no JSON inside JSON, nothing escaped twice, and a big payload or result is copied
a fixed number of times (time in proportion to its size). A frame that claims more than
`FRAME_BYTES_MAX` bytes or more than `FRAME_PARTS_MAX` parts, or that ends early, is refused
with `FrameError` before anything is allocated for it.

Requests (`RunRequest`, worker to child) and outcomes (`Outcome`, child to worker) are
dataclasses; what an outcome says is one `OutcomeKind`. A frame whose framing holds but whose
record does not (a bad fixed part, text that is not UTF-8) is refused by `decode_request`
with the request's seq when it can be read, so the child answers it with an outcome and lives.
"""

from __future__ import annotations

import enum
import socket
import struct
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from ..store.protocol import SIZE_LIMIT_MAX, FailKind

# What a read hands the frame reader: bytes, or a view of a reused buffer.
Chunk = bytes | bytearray | memoryview

# A payload, a result or a checkpoint is at most SIZE_LIMIT_MAX bytes; a frame carries one of
# them with a record and a few names, so a frame of more than this is a framing error.
FRAME_BYTES_MAX = 4 * SIZE_LIMIT_MAX
FRAME_PARTS_MAX = 8

_HEAD = struct.Struct("!BB")
# Most bytes one read of a socket takes: a batch of a few hundred small frames; a big frame
# takes several reads. Each reader keeps a buffer of this size (one per child in the worker).
READ_BYTES_MAX = 64 * 1024
_SIZE = struct.Struct("!Q")
# The part sizes of a frame of n parts, packed and unpacked in one call.
_SIZES = tuple(struct.Struct("!" + "Q" * n) for n in range(FRAME_PARTS_MAX + 1))
# A frame up to this size is written as one joined piece (one write instead of one per part);
# a bigger one as views of its parts, so a big payload is not copied to be sent.
_JOINED_FRAME_MAX = 64 * 1024
# A request's fixed part: seq, lease (ms), timeout (s), flags.
_REQUEST_FIXED = struct.Struct("!qqdB")
_MAY_DEFER, _HAS_CHECKPOINT = 1, 2
_REQUEST_PARTS = 7  # fixed, queue, id, token, record, payload, checkpoint
# An outcome's fixed part: seq, outcome kind, run time (s).
_OUTCOME_FIXED = struct.Struct("!qBd")


class FrameError(ValueError):
    """Bytes that are not a frame (oversized, truncated) or not the record a frame should hold.
    `seq` is the request's number when it could be read (the child answers that request)."""

    def __init__(self, message: str, seq: int | None = None) -> None:
        super().__init__(message)
        self.seq = seq


class FrameKind(enum.IntEnum):
    REQUEST = 1
    OUTCOME = 2


class OutcomeKind(enum.IntEnum):
    """What became of a request."""

    OK = 0  # the handler returned: `result` is its value as JSON text
    ERROR = 1  # it raised (or could not be prepared for reasons of this worker): retries apply
    REFUSED = 2  # the job may not run here (a forged record, a refused handler): never retried
    TIMEOUT = 3  # cancelled at its deadline (on the event loop)
    SUSPENDED = 4  # the job paused or split: already recorded, nothing to report
    LOST = 5  # its lease was lost: nothing to report
    DEFER = 6  # an `async def` handler sent to a sync child: run it on the event loop
    SYNC = 7  # a plain handler sent to the event loop: run it in a sync child
    UNSTARTED = 8  # not started: its lease was not known held (see executor.py)
    FINAL = 9  # it raised an error its job's retry_on does not list: fails now, no retry

    @property
    def fail_kind(self) -> FailKind:
        """The failure this outcome reports: its own for ERROR, REFUSED and TIMEOUT; an error
        for a kind that does not belong where it came (the child is not to be believed)."""
        return _FAIL_KINDS.get(self, FailKind.ERROR)


_FAIL_KINDS = {
    OutcomeKind.ERROR: FailKind.ERROR,
    OutcomeKind.FINAL: FailKind.ERROR,
    OutcomeKind.REFUSED: FailKind.REFUSED,
    OutcomeKind.TIMEOUT: FailKind.TIMEOUT,
}


@dataclass(slots=True)
class RunRequest:
    """A job for a child to run, its stored bytes as read from Redis."""

    queue: str
    job_id: str
    token: str
    record: bytes
    payload: bytes
    checkpoint: bytes | None
    lease_ms: int
    timeout: float
    may_defer: bool = False  # a sync child hands an `async def` job back (DEFER)
    seq: int = -1  # set by `ChildProcess.number`: the order the child takes requests in


@dataclass(slots=True)
class Outcome:
    seq: int
    kind: OutcomeKind
    seconds: float = 0.0
    result: bytes = b""  # OK: the value as JSON text
    error: str = ""  # ERROR, REFUSED, TIMEOUT: the reason, with a traceback when there is one

    @property
    def ok(self) -> bool:
        return self.kind is OutcomeKind.OK


# -- frames -----------------------------------------------------------------------------------


def frame(kind: FrameKind, parts: list[bytes]) -> list[bytes | memoryview]:
    """The pieces of one frame, to be written in order (the parts are not copied)."""
    if len(parts) > FRAME_PARTS_MAX:
        raise FrameError(f"a frame has at most {FRAME_PARTS_MAX} parts, not {len(parts)}")
    total = sum(map(len, parts))
    if total > FRAME_BYTES_MAX:
        raise FrameError(f"a frame of {total} bytes is over the {FRAME_BYTES_MAX} bytes limit")
    head = _HEAD.pack(kind, len(parts)) + _SIZES[len(parts)].pack(*map(len, parts))
    if total <= _JOINED_FRAME_MAX:
        return [b"".join([head, *parts])]
    return [head, *(memoryview(part) for part in parts)]


def _check_head(data: Chunk, pos: int) -> tuple[int, tuple[int, ...]] | None:
    """(kind, part sizes) of the frame starting at `pos`, None while its header is partial."""
    if len(data) - pos < _HEAD.size:
        return None
    kind, count = _HEAD.unpack_from(data, pos)
    if count > FRAME_PARTS_MAX:
        raise FrameError(f"a frame has at most {FRAME_PARTS_MAX} parts, not {count}")
    if len(data) - pos < _HEAD.size + count * _SIZE.size:
        return None
    sizes = _SIZES[count].unpack_from(data, pos + _HEAD.size)
    if sum(sizes) > FRAME_BYTES_MAX:
        raise FrameError(f"a frame of {sum(sizes)} bytes is over the {FRAME_BYTES_MAX} limit")
    return kind, sizes


class FrameReader:
    """Frames out of a byte stream fed in pieces of any size (a non-blocking pipe's reads).

    Bytes are appended to one buffer and cut once per `feed`, so many small frames in one read
    and one big frame over many reads both cost time in proportion to their size."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    @property
    def partial(self) -> bool:
        """Bytes of a frame not complete yet are held (at the end of the stream: truncated)."""
        return bool(self._buffer)

    def feed(self, data: Chunk) -> list[tuple[int, list[bytes]]]:
        """Take in `data` (not kept: a view of a reused buffer will do); the (kind, parts) of
        every frame it completes. FrameError when the stream holds something that is not a
        frame (it cannot be read on from there)."""
        buffer = self._buffer
        # Bytes that start on a frame boundary (most reads) are cut where they are; only what
        # is left of a partial frame is kept in the buffer.
        if buffer:
            buffer += data
            frames, pos = _cut_frames(buffer)
            if pos:
                del buffer[:pos]
        else:
            frames, pos = _cut_frames(data)
            buffer += memoryview(data)[pos:]
        return frames


def _cut_frames(data: Chunk) -> tuple[list[tuple[int, list[bytes]]], int]:
    """The frames complete in `data`, and where the bytes after them start."""
    frames: list[tuple[int, list[bytes]]] = []
    pos = 0
    with memoryview(data) as view:
        while (head := _check_head(data, pos)) is not None:
            kind, sizes = head
            start = pos + _HEAD.size + len(sizes) * _SIZE.size
            end = start + sum(sizes)
            if len(data) < end:
                break
            parts = []
            for size in sizes:
                parts.append(bytes(view[start : start + size]))
                start += size
            frames.append((kind, parts))
            pos = end
    return frames, pos


class SocketReads:
    """Reads of one socket into a buffer kept for them. `recv(n)` allocates n bytes on every
    call, which for a large n costs more than reading and handling a small frame (16 us
    against 3 for 1 MiB here); `recv_into` costs what arrived."""

    __slots__ = ("_buffer", "_socket", "_view")

    def __init__(self, sock: socket.socket) -> None:
        self._socket = sock
        self._buffer = bytearray(READ_BYTES_MAX)
        self._view = memoryview(self._buffer)

    def read(self, limit: int = READ_BYTES_MAX, flags: int = 0) -> memoryview:
        """What one read took, at most `limit` bytes (empty at the end of the stream); valid
        until the next read. BlockingIOError with MSG_DONTWAIT when nothing is there."""
        return self._view[: self._socket.recv_into(self._view[:limit], 0, flags)]


class FrameStream:
    """Frames from a blocking stream (`read(n)` returns up to n bytes, empty at its end), read
    in large pieces: a batch of small requests costs one read, not one per part."""

    def __init__(self, read: Callable[[int], Chunk]) -> None:
        self._read = read
        self._reader = FrameReader()
        self._ready: deque[tuple[int, list[bytes]]] = deque()

    def next(self) -> tuple[int, list[bytes]] | None:
        """The next frame; None when the stream ends between frames, FrameError when it ends
        inside one or holds no frame."""
        while not self._ready:
            data = self._read(READ_BYTES_MAX)
            if not data:
                if self._reader.partial:
                    raise FrameError("the stream ended inside a frame")
                return None
            self._ready.extend(self._reader.feed(data))
        return self._ready.popleft()


def decode_frame(data: bytes) -> tuple[int, list[bytes]]:
    """The one frame `data` holds; FrameError when it holds less or more."""
    reader = FrameReader()
    frames = reader.feed(data)
    if len(frames) != 1 or reader.partial:
        raise FrameError(
            "truncated frame" if not frames else f"{len(frames)} frames where one was expected"
        )
    return frames[0]


# -- records ----------------------------------------------------------------------------------


def encode_request(request: RunRequest) -> list[bytes | memoryview]:
    flags = (_MAY_DEFER if request.may_defer else 0) | (
        _HAS_CHECKPOINT if request.checkpoint is not None else 0
    )
    fixed = _REQUEST_FIXED.pack(request.seq, request.lease_ms, request.timeout, flags)
    names = [request.queue, request.job_id, request.token]
    parts = [fixed, *(name.encode() for name in names), request.record, request.payload]
    return frame(FrameKind.REQUEST, [*parts, request.checkpoint or b""])


def decode_request(kind: int, parts: list[bytes]) -> RunRequest:
    """The request a frame holds; FrameError (with the seq when readable) when it holds none."""
    if kind != FrameKind.REQUEST or len(parts) != _REQUEST_PARTS:
        raise FrameError(f"not a request frame (kind {kind}, {len(parts)} parts)")
    if len(parts[0]) != _REQUEST_FIXED.size:
        raise FrameError(f"a request's fixed part has {len(parts[0])} bytes")
    seq, lease_ms, timeout, flags = _REQUEST_FIXED.unpack(parts[0])
    try:
        queue, job_id, token = (part.decode() for part in parts[1:4])
    except UnicodeDecodeError:
        raise FrameError("a request's queue, id or token is not UTF-8", seq) from None
    return RunRequest(
        queue,
        job_id,
        token,
        parts[4],
        parts[5],
        parts[6] if flags & _HAS_CHECKPOINT else None,
        lease_ms,
        timeout,
        may_defer=bool(flags & _MAY_DEFER),
        seq=seq,
    )


def encode_outcome(outcome: Outcome) -> list[bytes | memoryview]:
    fixed = _OUTCOME_FIXED.pack(outcome.seq, outcome.kind, outcome.seconds)
    # An error text may hold lone surrogates (from a handler's message): written as escapes.
    body = outcome.result if outcome.ok else outcome.error.encode("utf-8", "backslashreplace")
    return frame(FrameKind.OUTCOME, [fixed, body])


def decode_outcome(kind: int, parts: list[bytes]) -> Outcome:
    if kind != FrameKind.OUTCOME or len(parts) != 2 or len(parts[0]) != _OUTCOME_FIXED.size:
        raise FrameError(f"not an outcome frame (kind {kind}, {len(parts)} parts)")
    seq, outcome_kind, seconds = _OUTCOME_FIXED.unpack(parts[0])
    try:
        what = OutcomeKind(outcome_kind)
    except ValueError:
        raise FrameError(f"unknown outcome kind {outcome_kind}", seq) from None
    if what is OutcomeKind.OK:
        return Outcome(seq, what, seconds, result=parts[1])
    return Outcome(seq, what, seconds, error=parts[1].decode("utf-8", "replace"))
