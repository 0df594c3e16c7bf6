"""zerg.http: the request parsers, C and reference, on the same bytes.

The C ``parse_request_head`` and ``parse_request`` (native/httpfast.c) must
decide every request as the references ``py_parse_request_head`` and
``py_parse_request`` do: the same result or the same error (status and
message), and the reader left at the same position with the same
``examined``, however the bytes are cut into segments.
"""

from __future__ import annotations

import gc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import zerg
from zerg import http
from zerg._seqreader import PySequenceReader


def _cut(data: bytes, split: int) -> zerg.BufferSequence:
    return zerg.BufferSequence([data[i:i + split] for i in range(0, len(data), split)])


Outcome = tuple[object, ...]


def _decide(parse: object, sr: zerg.SequenceReader | PySequenceReader,
            **limits: int) -> list[Outcome]:
    """Heads parsed one after another (each body skipped), until None or an error."""
    seen: list[Outcome] = []
    while True:
        try:
            head = parse(sr, **limits)  # type: ignore[operator]
        except http.HttpError as err:
            seen.append(("error", err.status, str(err), sr.consumed, sr.examined))
            return seen
        if head is None:
            seen.append(("none", sr.consumed, sr.examined))
            return seen
        looked_up = [head.get(name) for name in _LOOKUPS]
        seen.append((head.method, head.target, head.path, head.version, looked_up, head.headers,
                     head.content_length, head.keep_alive, sr.consumed, sr.examined, repr(head)))
        if sr.try_read_exact(head.content_length) is None:
            return seen


_LOOKUPS = (b"host", b"HOST", b"Content-Length", b"connection", b"x", b"x-long", b"absent", b"")


def _reader_for(parse: object) -> type[zerg.SequenceReader] | type[PySequenceReader]:
    """The reader each parser is tested on: the C one for the C parser."""
    return zerg.SequenceReader if parse is http.parse_request_head else PySequenceReader


def _both(data: bytes, split: int, **limits: int) -> tuple[list[Outcome], list[Outcome]]:
    native = _decide(http.parse_request_head, zerg.SequenceReader(_cut(data, split)), **limits)
    ref = _decide(http.py_parse_request_head, PySequenceReader(_cut(data, split)), **limits)
    return native, ref


_REQUEST_LINE_SAMPLES: tuple[bytes, ...] = (
    b"GET / HTTP/1.1", b"POST /echo HTTP/1.0", b"HEAD /x?y HTTP/1.1", b"GET / HTTP/2.0",
    b"GET / HTTP/1.1x", b"GET  / HTTP/1.1", b"GET / HTTP/1.1 x", b"G@T / HTTP/1.1",
    b"GET /\x7f HTTP/1.1", b"", b"GET / HTTPS/1.1",
)
_REQUEST_LINES = st.sampled_from(_REQUEST_LINE_SAMPLES)
_FIELD_SAMPLES: tuple[bytes, ...] = (
    b"Host: t", b"host:t", b"HOST: \t t \t", b"Content-Length: 3", b"content-length:03",
    b"Content-Length: 4", b"Content-Length: x", b"Content-Length: ",
    b"Content-Length: 1234567890123456789", b"Content-Length: 12345678901234567890",
    b"Connection: close", b"connection: Keep-Alive", b"Connection: a, CLOSE ,b",
    b"Connection: keep-alive,close", b"Connection: closed", b"Transfer-Encoding: chunked",
    b"X: a\x00b", b"X:\x7f", b"X y: z", b": v", b"X-\xff: v", b"X: \xff\xfe", b"X:",
    b"X: a\rb", b"abc", b"X-Long: " + b"v" * 40,
)
_FIELDS = st.sampled_from(_FIELD_SAMPLES)
_EOLS = st.sampled_from([b"\r\n", b"\r\n", b"\r\n", b"\n", b"\n", b"\r", b""])


@st.composite
def _heads(draw: st.DrawFn) -> bytes:
    """Requests built line by line from good and bad parts, with mostly matching line
    ends, a body when they say so, and the last one often cut short."""
    out = []
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        eol = draw(st.sampled_from([b"\r\n", b"\n"]))
        first = draw(st.one_of(st.just(b"GET / HTTP/1.1"), _REQUEST_LINES))
        fields = draw(st.lists(st.one_of(st.just(b"Host: t"), _FIELDS), max_size=6))
        lines = [first, *fields, b""]
        for line in lines:
            out.append(line + (eol if draw(st.integers(0, 9)) else draw(_EOLS)))
        out.append(draw(st.sampled_from([b"", b"abc", b"abcd"])))
    raw = b"".join(out)
    return raw[:draw(st.integers(min_value=0, max_value=len(raw)))] if draw(st.booleans()) else raw


_HEADISH = _heads()


@settings(max_examples=600, deadline=None)
@given(st.one_of(_HEADISH, st.binary(max_size=300)), st.integers(min_value=1, max_value=19))
def test_native_and_reference_decide_alike(data: bytes, split: int) -> None:
    native, ref = _both(data, split)
    assert native == ref


def _requests(parse: object, sr: zerg.SequenceReader | PySequenceReader,
              **limits: int) -> list[Outcome]:
    """parse_request's answers one after another, until an int or an error."""
    seen: list[Outcome] = []
    while True:
        try:
            got = parse(sr, **limits)  # type: ignore[operator]
        except http.HttpError as err:
            seen.append(("error", err.status, str(err), sr.consumed, sr.examined))
            return seen
        if isinstance(got, int):
            seen.append(("wait", got, sr.consumed, sr.examined))
            return seen
        head, body = got
        seen.append((head.method, head.path, head.headers, head.keep_alive, body.tobytes(),
                     len(list(body)), sr.consumed, sr.examined))


def _both_requests(data: bytes, split: int,
                   **limits: int) -> tuple[list[Outcome], list[Outcome]]:
    native = _requests(http.parse_request, zerg.SequenceReader(_cut(data, split)), **limits)
    ref = _requests(http.py_parse_request, PySequenceReader(_cut(data, split)), **limits)
    return native, ref


@settings(max_examples=400, deadline=None)
@given(st.one_of(_HEADISH, st.binary(max_size=300)), st.integers(min_value=1, max_value=19),
       st.sampled_from([{}, {"max_body": 0}, {"max_body": 3}, {"max_size": 20},
                        {"max_fields": 1, "max_body": 4}]))
def test_whole_requests_are_decided_alike(data: bytes, split: int,
                                          limits: dict[str, int]) -> None:
    """parse_request (head and body, C) against py_parse_request: the same requests,
    bodies (as zero-copy slices of as many segments), waits, errors and positions."""
    native, ref = _both_requests(data, split, **limits)
    assert native == ref


@pytest.mark.parametrize("parse", [http.parse_request, http.py_parse_request])
def test_a_request_with_its_body(parse: object) -> None:
    """A body is a zero-copy slice; a request not all there is an int (NEED_HEAD, or
    the body bytes missing) with the reader where it was; a body over max_body is a
    413 as soon as the head says so."""
    reader = zerg.SequenceReader if parse is http.parse_request else PySequenceReader
    post = b"POST /echo?x=1 HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\n"
    sr = reader(zerg.BufferSequence([post + b"hel", b"lo", b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"]))
    head, body = parse(sr)  # type: ignore[operator]
    assert (head.path, body.tobytes(), len(list(body))) == (b"/echo", b"hello", 2)
    head, body = parse(sr)  # type: ignore[operator]
    assert (head.method, len(body)) == (b"GET", 0)
    assert parse(sr) == http.NEED_HEAD == 0  # type: ignore[operator]
    sr = reader(zerg.BufferSequence(post + b"he"))
    assert parse(sr) == 3  # type: ignore[operator]
    assert (sr.consumed, sr.examined) == (0, len(post) + 2)
    with pytest.raises(http.HttpError, match="body too large") as err:
        parse(sr, max_body=4)  # type: ignore[operator]
    assert err.value.status == 413 and sr.consumed == 0
    with pytest.raises(ValueError, match=r"parse_request\(\): max_body must be >= 0, not -1"):
        parse(sr, max_body=-1)  # type: ignore[operator]
    with pytest.raises(TypeError, match="max_body must be an int, not str"):
        parse(sr, max_body="4")  # type: ignore[operator]
    with pytest.raises(TypeError, match="unexpected keyword argument 'max_nope'"):
        parse(sr, max_nope=4)  # type: ignore[operator]


def test_the_native_request_parser_names_the_reference_for_other_readers() -> None:
    other = PySequenceReader(zerg.BufferSequence(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"))
    if http.parse_request is http.py_parse_request:
        assert not isinstance(http.parse_request(other), int)
        return
    with pytest.raises(TypeError, match="py_parse_request reads any"):
        http.parse_request(other)


def test_every_line_of_the_samples_is_decided_alike() -> None:
    """Each sample request line, and each sample field after a good request line and
    Host, on its own: a rule that differs shows here without luck."""
    cases = [rl + eol + b"Host: t" + eol + eol for rl in _REQUEST_LINE_SAMPLES
             for eol in (b"\r\n", b"\n")]
    cases += [b"GET / HTTP/1.1" + eol + b"Host: t" + eol + f + eol + eol
              for f in _FIELD_SAMPLES
              for eol in (b"\r\n", b"\n")]
    for raw in cases:
        for split in (1, 3, len(raw)):
            native, ref = _both(raw, split)
            assert native == ref, raw


def test_the_size_bound_is_decided_alike_at_every_edge() -> None:
    """max_size around a head's length, byte by byte: both refuse at the same size."""
    for eol in (b"\r\n", b"\n"):
        for fields in ([], [b"Host: t"], [b"Host: t", b"X: 12345"]):
            raw = eol.join([b"GET / HTTP/1.0", *fields, b"", b""])
            decided = set()
            for max_size in range(len(raw) - 12, len(raw) + 3):
                for max_fields in (len(fields) - 1, len(fields)):
                    if max_size < 0 or max_fields < 0:
                        continue
                    native, ref = _both(raw, 5, max_size=max_size, max_fields=max_fields)
                    assert native == ref, (raw, max_size, max_fields)
                    decided.add(native[0][0])
            assert decided >= {"error", b"GET"}, (raw, decided)


@settings(max_examples=300, deadline=None)
@given(_HEADISH, st.integers(min_value=1, max_value=11), st.integers(min_value=0, max_value=60),
       st.integers(min_value=0, max_value=4))
def test_native_and_reference_bound_alike(data: bytes, split: int, max_size: int,
                                          max_fields: int) -> None:
    native, ref = _both(data, split, max_size=max_size, max_fields=max_fields)
    assert native == ref


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([b"GET", b"POST", b"DELETE", b"M-SEARCH"]),
                          st.binary(min_size=1, max_size=20).map(
                              lambda b: bytes(0x21 + x % 94 for x in b)),
                          st.lists(st.tuples(
                              st.text("abcXYZ-_0", min_size=1, max_size=8).map(str.encode),
                              st.binary(max_size=12).map(
                                  lambda b: bytes(0x20 + x % 95 for x in b))),
                              max_size=5)),
                min_size=1, max_size=4),
       st.booleans(), st.integers(min_value=1, max_value=31))
def test_well_formed_heads_parse_alike(requests: list[tuple[bytes, bytes,
                                                             list[tuple[bytes, bytes]]]],
                                       crlf: bool, split: int) -> None:
    """Valid heads (any method, target and fields) come back field for field."""
    eol = b"\r\n" if crlf else b"\n"
    raw = b"".join(m + b" " + t + b" HTTP/1.1" + eol + b"Host: h" + eol
                   + b"".join(n + b": " + v + eol for n, v in fields) + eol
                   for m, t, fields in requests)
    native, ref = _both(raw, split)
    assert native == ref
    assert len(native) == len(requests) + 1 and native[-1][0] == "none"
    for got, (m, t, fields) in zip(native, requests, strict=False):
        assert got[:3] == (m, t, t.split(b"?", 1)[0])
        assert got[5] == [(b"Host", b"h"), *((n, v.strip(b" \t")) for n, v in fields)]


@pytest.mark.parametrize("parse", [http.parse_request_head, http.py_parse_request_head])
@pytest.mark.parametrize(("raw", "status", "why"), [
    (b"GET / HTTP/1.1\r\n\r\n", 400, "an HTTP/1.1 request needs exactly one Host"),
    (b"GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n", 400,
     "an HTTP/1.1 request needs exactly one Host"),
    (b"GET / HTTP/3.0\r\n", 505, "unsupported HTTP version"),
    (b"GET / HTTPS/1.1\r\n", 400, "malformed HTTP version"),
    (b"GET /\r\n", 400, "malformed request line"),
    (b"G(T / HTTP/1.1\r\n", 400, "malformed request line"),
    (b"GET / HTTP/1.1\r\nHost: a\n", 400, "mixed line ends"),
    (b"GET / HTTP/1.1\r\nX: a\rContent-Length: 5\r\n", 400, "malformed header field"),
    (b"GET / HTTP/1.1\nX: a\r\n", 400, "malformed header field"),
    (b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n", 400,
     "bad Content-Length"),
    (b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n", 501,
     "Transfer-Encoding is not supported"),
    (b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 101, 431, "too many header fields"),
    (b"GET / HTTP/1.1\r\nX: " + b"y" * 9000 + b"\r\n", 431, "header block too large"),
    (b"GET / HTTP/1.1\r\nX: " + b"y" * 9000, 431, "header block too large"),
])
def test_refusals_name_the_problem(parse: object, raw: bytes, status: int, why: str) -> None:
    """Each refusal carries its status and reason, raised as soon as the bytes show it
    (the last two before the line or head is complete), and moves nothing."""
    reader = _reader_for(parse)
    sr = reader(zerg.BufferSequence(b"xx" + raw))
    sr.advance(2)
    with pytest.raises(http.HttpError, match=why) as info:
        parse(sr)  # type: ignore[operator]
    assert info.value.status == status and sr.consumed == 2


@pytest.mark.parametrize("parse", [http.parse_request_head, http.py_parse_request_head])
def test_a_head_and_what_it_says(parse: object) -> None:
    reader = _reader_for(parse)
    data = (b"POST /echo?x=1 HTTP/1.0\r\nHost: \t h \r\nConnection: foo, Keep-Alive\r\n"
            b"Content-Length: 005\r\n\r\nhello")
    sr = reader(zerg.BufferSequence(data))
    head = parse(sr)  # type: ignore[operator]
    assert (head.method, head.target, head.version) == (b"POST", b"/echo?x=1", b"HTTP/1.0")
    assert head.path == b"/echo"
    assert head.headers == [(b"Host", b"h"), (b"Connection", b"foo, Keep-Alive"),
                            (b"Content-Length", b"005")]
    assert head.content_length == 5 and head.keep_alive is True
    assert sr.unread.tobytes() == b"hello"
    assert repr(head) == ("<RequestHead b'POST' b'/echo?x=1' b'HTTP/1.0' fields=3 "
                          "content_length=5 keep_alive=True>")
    # Incomplete: None, nothing moved, everything examined.
    sr = reader(zerg.BufferSequence(data[:30]))
    assert parse(sr) is None  # type: ignore[operator]
    assert (sr.consumed, sr.examined) == (0, 30)


@pytest.mark.parametrize("parse", [http.parse_request_head, http.py_parse_request_head])
def test_fields_are_looked_up_by_name_in_any_case(parse: object) -> None:
    reader = _reader_for(parse)
    data = b"GET / HTTP/1.1\r\nHost: h\r\nX-A: 1\r\nx-a: 2\r\nEmpty:\r\n\r\n"
    head = parse(reader(zerg.BufferSequence(data)))  # type: ignore[operator]
    assert head.get(b"x-a") == b"1" and head.get(b"X-A") == b"1"     # the first one
    assert head.path is head.target         # no query: the target itself, no copy
    assert head.get(b"empty") == b"" and head.get(b"nope") is None
    assert head.get(b"nope", b"d") == b"d"
    with pytest.raises(TypeError, match="as bytes, not str"):
        head.get("host")
    # The list, once made, is the head's: the same object each time, and get() reads it.
    assert head.headers is head.headers
    head.headers.append((b"Late", b"3"))
    assert head.get(b"late") == b"3"
    assert repr(head).endswith("fields=5 content_length=0 keep_alive=True>")


@pytest.mark.parametrize("parse", [http.parse_request_head, http.py_parse_request_head])
def test_bad_limits_are_refused(parse: object) -> None:
    reader = _reader_for(parse)
    sr = reader(zerg.BufferSequence(b"GET / HTTP/1.1\r\n"))
    with pytest.raises(ValueError, match="max_size must be >= 0, not -1"):
        parse(sr, max_size=-1)  # type: ignore[operator]
    with pytest.raises(TypeError, match="max_fields must be an int, not str"):
        parse(sr, max_fields="3")  # type: ignore[operator]


def test_the_native_parser_names_the_reference_for_other_readers() -> None:
    """The C parser reads the C reader only, and says which function reads the
    others; the reference (all there is with ZERG_NO_EXTENSIONS) reads any."""
    other = PySequenceReader(zerg.BufferSequence(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"))
    if http.parse_request_head is http.py_parse_request_head:
        assert http.parse_request_head(other) is not None
        return
    with pytest.raises(TypeError, match="py_parse_request_head"):
        http.parse_request_head(other)
    assert http.py_parse_request_head(other) is not None


def test_a_head_can_be_made_and_collected() -> None:
    """A cycle through a head's list is found by the collector, for a head made from
    a list and for one the parser made (whose list is made on first use)."""
    made = http.RequestHead(b"GET", b"/", b"HTTP/1.1", [], 0, True)
    assert (made.path, made.keep_alive) == (b"/", True)
    assert http.RequestHead(b"GET", b"/a?b?c", b"HTTP/1.1", [], 0, False).path == b"/a"
    parsed = http.parse_request_head(zerg.SequenceReader(zerg.BufferSequence(
        b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")))
    assert parsed is not None
    for head in (made, parsed):
        head.headers.append((b"self", head))  # type: ignore[arg-type]  # a cycle
    kinds, ids = {type(made), type(parsed)}, {id(made), id(parsed)}
    del head, made, parsed
    gc.collect()
    assert not [o for o in gc.get_objects() if type(o) in kinds and id(o) in ids]
