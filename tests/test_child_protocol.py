"""The worker-child protocol: one framing both ways, typed requests and outcomes."""

from __future__ import annotations

import io
import json
import os
import socket
import struct
import threading

import pytest
import redis
from hypothesis import given
from hypothesis import strategies as st

from pyscheduler.dev.engine import free_port
from pyscheduler.runtime.allowlist import HandlerPolicy
from pyscheduler.runtime.child_protocol import (
    FRAME_BYTES_MAX,
    FRAME_PARTS_MAX,
    READ_BYTES_MAX,
    FrameError,
    FrameKind,
    FrameReader,
    FrameStream,
    Outcome,
    OutcomeKind,
    RunRequest,
    SocketReads,
    decode_frame,
    decode_outcome,
    decode_request,
    encode_outcome,
    encode_request,
    frame,
)
from pyscheduler.runtime.executor import Executor


def joined(pieces: list[bytes | memoryview]) -> bytes:
    return b"".join(bytes(piece) for piece in pieces)


def header(kind: int, sizes: list[int]) -> bytes:
    return struct.pack("!BB", kind, len(sizes)) + b"".join(struct.pack("!Q", s) for s in sizes)


texts = st.text(st.characters(blacklist_categories=["Cs"]), max_size=40)
requests = st.builds(
    RunRequest,
    queue=texts,
    job_id=texts,
    token=texts,
    record=st.binary(max_size=200),
    payload=st.binary(max_size=2000),
    checkpoint=st.none() | st.binary(max_size=200),
    lease_ms=st.integers(0, 2**62),
    timeout=st.floats(0, 1e9),
    may_defer=st.booleans(),
    seq=st.integers(-1, 2**62),
)
outcomes = st.builds(
    Outcome,
    seq=st.integers(-1, 2**62),
    kind=st.sampled_from(OutcomeKind),
    seconds=st.floats(0, 1e9),
    result=st.binary(max_size=2000),
    error=texts,
).map(lambda o: Outcome(o.seq, o.kind, o.seconds, o.result if o.ok else b"", o.error))


@given(requests)
def test_a_request_round_trips_through_its_frame(request: RunRequest) -> None:
    assert decode_request(*decode_frame(joined(encode_request(request)))) == request


@given(outcomes)
def test_an_outcome_round_trips_through_its_frame(outcome: Outcome) -> None:
    decoded = decode_outcome(*decode_frame(joined(encode_outcome(outcome))))
    expected_error = "" if outcome.ok else outcome.error
    assert decoded == Outcome(
        outcome.seq, outcome.kind, outcome.seconds, outcome.result, expected_error
    )


@pytest.mark.parametrize("kind", list(OutcomeKind), ids=lambda kind: kind.name)
def test_every_outcome_kind_round_trips(kind: OutcomeKind) -> None:
    if kind is OutcomeKind.OK:
        outcome = Outcome(7, kind, 0.25, result=b'{"a": [1, 2]}')
    else:
        outcome = Outcome(7, kind, 0.25, error="Boom\nline 2")
    assert decode_outcome(*decode_frame(joined(encode_outcome(outcome)))) == outcome
    assert outcome.ok is (kind is OutcomeKind.OK)


def test_the_failing_kinds_map_to_their_failures() -> None:
    for kind in (OutcomeKind.ERROR, OutcomeKind.REFUSED, OutcomeKind.TIMEOUT):
        assert kind.fail_kind.value == kind.name.lower()


def test_an_error_text_with_a_lone_surrogate_is_carried_escaped() -> None:
    outcome = Outcome(1, OutcomeKind.ERROR, error="bad \ud800 text")
    decoded = decode_outcome(*decode_frame(joined(encode_outcome(outcome))))
    assert decoded.error == "bad \\ud800 text"


@given(st.lists(requests, min_size=1, max_size=5), st.data())
def test_frames_fed_in_any_pieces_come_out_whole_and_in_order(
    sent: list[RunRequest], data: st.DataObject
) -> None:
    stream = b"".join(joined(encode_request(request)) for request in sent)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    reader = FrameReader()
    got = []
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        got += [decode_request(*framed) for framed in reader.feed(stream[start:end])]
    assert got == sent
    assert not reader.partial


@given(requests)
def test_a_blocking_stream_reads_a_frame_and_then_its_end(request: RunRequest) -> None:
    stream = io.BytesIO(joined(encode_request(request)))
    frames = FrameStream(stream.read)
    framed = frames.next()
    assert framed is not None and decode_request(*framed) == request
    assert frames.next() is None


def test_socket_reads_take_only_what_arrived() -> None:
    ours, theirs = socket.socketpair()
    with ours, theirs:
        reads = SocketReads(ours)
        theirs.sendall(b"abc")
        assert bytes(reads.read()) == b"abc"
        theirs.close()
        assert len(reads.read()) == 0


def test_a_frame_bigger_than_one_read_crosses_a_socket_whole() -> None:
    payload = os.urandom(3 * READ_BYTES_MAX + 17)
    request = RunRequest("q", "j", "t", b"{}", payload, None, 1000, 1.0, seq=1)
    ours, theirs = socket.socketpair()
    with ours, theirs:
        sender = threading.Thread(target=lambda: theirs.sendall(joined(encode_request(request))))
        sender.start()
        framed = FrameStream(SocketReads(ours).read).next()
        sender.join()

    assert framed is not None and decode_request(*framed) == request


def test_a_truncated_frame_is_refused() -> None:
    data = joined(encode_request(RunRequest("q", "j", "t", b"{}", b"[]", None, 1000, 1.0)))
    for cut in (1, len(data) // 2, len(data) - 1):
        with pytest.raises(FrameError, match="truncated"):
            decode_frame(data[:cut])
        with pytest.raises(FrameError, match="ended inside a frame"):
            FrameStream(io.BytesIO(data[:cut]).read).next()
        reader = FrameReader()
        assert reader.feed(data[:cut]) == [] and reader.partial


def test_an_oversized_frame_is_refused_from_its_header_alone() -> None:
    claim = header(FrameKind.OUTCOME, [FRAME_BYTES_MAX, 1])
    with pytest.raises(FrameError, match="over the"):
        FrameReader().feed(claim)
    with pytest.raises(FrameError, match="over the"):
        FrameStream(io.BytesIO(claim).read).next()


def test_a_frame_of_too_many_parts_is_refused() -> None:
    too_many = [b""] * (FRAME_PARTS_MAX + 1)
    with pytest.raises(FrameError, match="parts"):
        frame(FrameKind.REQUEST, too_many)
    with pytest.raises(FrameError, match="parts"):
        FrameReader().feed(header(FrameKind.REQUEST, [0] * (FRAME_PARTS_MAX + 1)))


def test_a_frame_holding_no_request_is_refused_with_its_seq_when_readable() -> None:
    with pytest.raises(FrameError) as no_seq:
        decode_request(FrameKind.REQUEST, [b"short"])
    assert no_seq.value.seq is None
    good = encode_request(RunRequest("q", "j", "t", b"{}", b"[]", None, 1000, 1.0, seq=5))
    kind, parts = decode_frame(joined(good))
    parts[1] = b"\xff"  # the queue name, not UTF-8
    with pytest.raises(FrameError) as bad_name:
        decode_request(kind, parts)
    assert bad_name.value.seq == 5
    with pytest.raises(FrameError):
        decode_outcome(FrameKind.OUTCOME, [struct.pack("!qBd", 1, 200, 0.0), b""])


def test_a_child_answers_a_frame_holding_no_request_and_lives() -> None:
    record = json.dumps({"status": "active", "func": "tasks:add", "priority": 0}).encode()
    good = RunRequest(
        "q", "job-1", "0" * 32, record, b'{"args":[1,2],"kwargs":{}}', None, 10_000, 10
    )
    executor = Executor(HandlerPolicy(), redis.Redis(port=free_port()))
    try:
        os.write(executor.conn.fileno(), joined(frame(FrameKind.REQUEST, [b"not a request"])))
        refused = executor.receive()
        assert refused is not None and refused.kind is OutcomeKind.REFUSED, refused
        assert refused.seq == -1 and "not a request" in refused.error
        executor.number([good])
        executor.submit([good])
        answered = executor.receive()
        assert answered is not None and answered.ok and json.loads(answered.result) == 3
        assert executor.process.is_alive()
    finally:
        executor.kill()
