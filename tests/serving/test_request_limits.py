"""Request bodies are bounded: over max_body_bytes is a 413 naming the limit (with or without a
Content-Length), a 422 lists a bounded number of errors with short echoes, and bodies the JSON parser
cannot read (not UTF-8, nested too deeply) get the documented 422 with the reason.

Real Redis online store, real MLflow registry (the session serving world).
"""

from __future__ import annotations

import dataclasses
import json
import socket
from typing import Iterator

import pytest

from serving.app import ECHO_CHARS, MAX_LISTED_ERRORS, create_app
from serving.options import ServingOptions
from tests.serving.conftest import FAST
from tests.serving.world import served

pytestmark = pytest.mark.slow

JSON = {"content-type": "application/json"}
DEFAULT_LIMIT = ServingOptions().max_body_bytes


def _chunks(parts: list[bytes]):
    """`parts` as a streamed body: httpx sends it chunked, without a Content-Length."""
    yield from parts


# ---------------------------------------------------------------- 413

def test_the_default_limit_holds_a_full_batch_of_the_longest_ids():
    longest = {"market_id": "\u00e9" * 128, "market_price": 0.12345678901234567}
    body = json.dumps({"items": [longest] * ServingOptions().max_batch_size})  # ASCII-escaped: 6 bytes a char
    assert len(body.encode()) < DEFAULT_LIMIT


@pytest.mark.parametrize("path, body", [
    ("/predict", b'{"market_id": "' + b"a" * 2_000_000 + b'"}'),
    ("/predict/batch", b'{"items": [' + b",".join([b'{"market_id": "", "z": 1}'] * 100_000) + b"]}"),
])
def test_a_body_over_the_limit_is_413_naming_the_limit(client, online, path, body):
    r = client.post(path, content=body, headers=JSON)  # httpx sends its Content-Length
    assert r.status_code == 413, r.text[:500]
    detail = r.json()["detail"]
    assert f"{len(body)} bytes" in detail and f"at most {DEFAULT_LIMIT} bytes" in detail
    assert "max_body_bytes" in detail and len(r.content) < 500
    assert f'pm_serving_requests_total{{endpoint="{path}",status="413"}} 1.0' in client.get("/metrics").text
    assert client.get("/health").status_code == 200


@pytest.fixture
def live_port(serving_settings, online) -> Iterator[int]:
    with served(create_app(serving_settings, dataclasses.replace(FAST, max_body_bytes=4096))) as port:
        yield port


def _response(sock: socket.socket) -> tuple[int, dict]:
    """Status and JSON body of one HTTP/1.1 response read from `sock`."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before a response: {data!r}"
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    while len(body) < int(headers["content-length"]):
        chunk = sock.recv(65536)
        assert chunk, "connection closed inside the response body"
        body += chunk
    return int(lines[0].split()[1]), json.loads(body)


def test_a_chunked_body_over_the_limit_is_413_before_the_body_ends(live_port):
    """A real server and socket: the client sends a chunked body (no Content-Length) past the limit and
    then nothing more, never its last chunk. The answer must come anyway: the body is counted as it
    arrives (waiting for its end would hang until the socket timeout)."""
    with socket.create_connection(("127.0.0.1", live_port), timeout=30) as sock:
        sock.sendall(b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n")
        for part in [b'{"market_id": "'] + [b"a" * 1000] * 5:  # 5015 bytes so far, body not finished
            sock.sendall(b"%x\r\n%s\r\n" % (len(part), part))
        status, body = _response(sock)
    assert status == 413, body
    assert "more than 4096 bytes" in body["detail"] and "max_body_bytes" in body["detail"]


def test_bodies_within_the_limit_reach_the_app_unchanged(make_client, online):
    client = make_client(dataclasses.replace(FAST, max_body_bytes=4096))
    body = json.dumps({"market_id": online.ids[0]}).encode()
    padded = body + b" " * (4096 - len(body))  # exactly the limit: accepted
    assert client.post("/predict", content=padded, headers=JSON).status_code == 200
    assert client.post("/predict", content=padded + b" ", headers=JSON).status_code == 413
    streamed = client.post("/predict", content=_chunks([body[:5], body[5:12], body[12:]]), headers=JSON)
    assert streamed.status_code == 200 and streamed.json()["market_id"] == online.ids[0]  # no Content-Length


# ---------------------------------------------------------------- bounded 422

def test_a_batch_of_many_bad_items_is_a_small_422_with_the_error_count(client, online):
    bad = {"market_id": "", "market_price": 2, "z": 1}  # three errors per item
    r = client.post("/predict/batch", json={"items": [bad] * FAST.max_batch_size})
    assert r.status_code == 422
    body = r.json()
    assert body["error_count"] == 3 * FAST.max_batch_size
    assert len(body["detail"]) == MAX_LISTED_ERRORS
    assert [e["loc"][:3] for e in body["detail"][:3]] == [["body", "items", 0]] * 3
    assert len(r.content) < 10_000


def test_an_oversized_batch_is_refused_by_its_count_without_validating_or_echoing_the_items(client, online):
    bad = {"market_id": "", "market_price": 2, "z": 1}
    r = client.post("/predict/batch", json={"items": [bad] * 20_000})  # ~0.9 MB, under the body limit
    assert r.status_code == 422
    body = r.json()
    assert body["error_count"] == 1  # the count, not 60 000 item errors
    (err,) = body["detail"]
    assert err["loc"] == ["body", "items"] and f"batch has 20000 markets; the maximum is {FAST.max_batch_size}" \
        in err["msg"]
    assert "truncated" in err["input"] and len(err["input"]) < ECHO_CHARS + 100
    assert len(r.content) < 2_000


def test_the_batch_maximum_is_in_the_openapi_schema(client):
    schema = client.get("/openapi.json").json()
    assert schema["components"]["schemas"]["BatchRequest"]["properties"]["items"]["maxItems"] == FAST.max_batch_size


def test_a_long_input_is_echoed_cut_and_says_so(client, online):
    long_id = "x" * 500_000  # under the body limit: a 422, echoing 200 characters of it
    r = client.post("/predict", json={"market_id": long_id})
    assert r.status_code == 422
    (err,) = r.json()["detail"]
    assert err["loc"] == ["body", "market_id"] and "at most 128" in err["msg"]
    assert err["input"].startswith("x" * ECHO_CHARS) and "truncated: 500000 characters" in err["input"]
    assert len(r.content) < 1_000
    short = client.post("/predict", json={"market_id": "m" * 129}).json()["detail"][0]
    assert short["input"] == "m" * 129  # short inputs are echoed whole


def test_many_unknown_fields_are_one_error_and_a_long_field_name_is_cut(client, online):
    many = {"market_id": online.ids[0], **{f"k{i}": 1 for i in range(50_000)}}  # ~0.6 MB
    r = client.post("/predict", json=many)
    assert r.status_code == 422 and r.json()["error_count"] == 1  # not 50 000 extra_forbidden errors
    (err,) = r.json()["detail"]
    assert "50000 unknown fields (the first: 'k0'" in err["msg"] and "market_id, market_price" in err["msg"]
    item = {"market_id": online.ids[0], **{f"k{i}": 1 for i in range(1000)}}
    batch = client.post("/predict/batch", json={"items": [item] * 40})
    assert batch.status_code == 422 and batch.json()["error_count"] == 40
    assert len(batch.json()["detail"]) == MAX_LISTED_ERRORS and len(batch.content) < 20_000
    few = client.post("/predict", json={"market_id": online.ids[0], "foo": 1}).json()["detail"]
    assert [e["loc"] for e in few] == [["body", "foo"]]  # a few unknown fields: one error each, as before
    named = client.post("/predict", json={"market_id": online.ids[0], "k" * 300_000: 1})
    (err,) = named.json()["detail"]
    assert err["type"] == "extra_forbidden" and "truncated: 300000 characters" in err["loc"][1]
    assert len(named.content) < 1_000


# ---------------------------------------------------------------- bodies the JSON parser cannot read

def test_a_body_that_is_not_utf8_is_the_documented_422_naming_the_byte(client, online):
    body = '{"market_id": "\xe9"}'.encode("latin-1")  # é as one Latin-1 byte, at offset 15
    r = client.post("/predict", content=body, headers=JSON)
    assert r.status_code == 422, r.text
    (err,) = r.json()["detail"]
    assert err["type"] == "json_invalid" and err["loc"] == ["body", 15]
    assert "body is not UTF-8 at byte 15" in err["msg"]
    utf8 = client.post("/predict", content='{"market_id": "\xe9"}'.encode(), headers=JSON)
    assert utf8.status_code == 404  # the same body in UTF-8: parsed, an unknown market


@pytest.mark.parametrize("path, body", [
    ("/predict", "[" * 100_000 + "]" * 100_000),
    ("/predict", '{"market_id": ' + "[" * 100_000 + "]" * 100_000 + "}"),
    ("/predict/batch", '{"items": ' + "[" * 100_000 + "]" * 100_000 + "}"),
])
def test_json_nested_deeper_than_the_parser_goes_is_the_documented_422(client, online, path, body):
    r = client.post(path, content=body.encode(), headers=JSON)
    assert r.status_code == 422, r.text
    (err,) = r.json()["detail"]
    assert err["type"] == "json_invalid" and err["loc"] == ["body"]
    assert "JSON nested too deeply" in err["msg"]


def test_other_http_errors_keep_their_shape_and_headers(client):
    r = client.post("/admin/reload")
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    assert r.json() == {"detail": "missing `Authorization: Bearer <token>` header"}
