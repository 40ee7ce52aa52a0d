"""``POST /v1/resources`` as ``multipart/form-data`` against the live server: a model and a
contract deployed from a ``code`` file part with the fields the raw form takes as query
parameters, then used; and every malformed form a 4xx saying what is wrong."""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from .conftest import MAX_BODY, Live, classifier
from .test_contract import EXAMPLES, SPIN
from .test_oip import body, direct

BOUNDARY = "coordinator-test-boundary"


def deploy_form(live: Live, files: Any, data: Any = None, key: str = "dora",
                **kw: Any) -> Any:
    return live.request("POST", "/v1/resources", key, files=files, data=data, **kw)


def test_a_model_deployed_from_a_form_is_served_by_name(live: Live) -> None:
    code = classifier(3)
    reply = deploy_form(live, {"code": ("clf.onnx", code, "application/octet-stream")},
                        {"type": "onnx", "name": "form-clf"})
    assert reply.status_code == 201, reply.text
    info = reply.json()
    assert info["type"] == "onnx" and info["name"] == "form-clf" and info["owner"] == "dora"
    assert info["size"] == len(code)
    x = np.arange(8, dtype=np.float32).reshape(2, 4) / 3
    inferred = live.request("POST", "/v2/models/form-clf/infer", "alice", json=body(x))
    assert inferred.status_code == 200, inferred.text
    got = np.asarray(inferred.json()["outputs"][0]["data"], np.float32).reshape(2, 3)
    np.testing.assert_allclose(got, direct(code, x), rtol=1e-6)


def test_a_contract_deployed_from_a_form_keeps_its_capabilities(live: Live) -> None:
    wat = (EXAMPLES / "counter.wat").read_bytes()
    reply = deploy_form(live, {"code": ("counter.wat", wat)},
                        {"type": "wasm", "format": "wat", "name": "form-counter",
                         "capabilities": "storage"})
    assert reply.status_code == 201, reply.text
    info = reply.json()
    assert info["capabilities"] == ["storage"] and info["owner"] == "dora"
    # The same bytes sent raw give the same content-addressed resource.
    raw = live.request("POST", "/v1/resources", "dora", content=wat,
                       params={"type": "wasm", "format": "wat", "name": "form-counter",
                               "capabilities": "storage"})
    assert raw.json()["resource_id"] == info["resource_id"]
    done = live.request("POST", "/v1/executions", "alice",
                        json={"resource_id": info["resource_id"]})
    assert done.status_code == 200, done.text
    assert struct.unpack("<q", base64.b64decode(done.json()["output_base64"]))[0] >= 1


def multipart(*parts: tuple[str, str | None, bytes]) -> bytes:
    """A form by hand: (field name, file name or None, content) per part."""
    out = b""
    for name, filename, content in parts:
        disposition = f'form-data; name="{name}"' + (
            f'; filename="{filename}"' if filename else "")
        out += (f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n\r\n".encode()
                + content + b"\r\n")
    return out + f"--{BOUNDARY}--\r\n".encode()


FORM = f"multipart/form-data; boundary={BOUNDARY}"


def post(live: Live, content: Any, key: str = "dora", content_type: str = FORM,
         **kw: Any) -> Any:
    """A deploy with a body made by hand."""
    return live.client.post("/v1/resources", content=content, headers={
        "Authorization": f"Bearer {live.tokens[key]}", "Content-Type": content_type}, **kw)
CODE = ("code", "spin.wat", SPIN)
WASM = ("type", None, b"wasm")
WAT = ("format", None, b"wat")
BAD_FORMS = [
    ("no type", [CODE, WAT], "form field type"),
    ("no code", [WASM, WAT], "needs the file part 'code'"),
    ("code as a text field", [("code", None, SPIN), WASM, WAT], "must be a file part"),
    ("a field as a file", [CODE, ("type", "t.txt", b"wasm"), WAT], "must be text"),
    ("an unknown field", [CODE, WASM, WAT, ("owner", None, b"mallory")],
     "unknown form field 'owner'"),
    ("a field twice", [CODE, WASM, WAT, ("name", None, b"a"), ("name", None, b"b")],
     "'name' is given twice"),
    ("two code files", [CODE, CODE, WASM], "'code' is given twice"),
    ("three files", [CODE, ("a", "a", b""), ("b", "b", b"")], "Too many files"),
    ("too many fields", [CODE, *[("name", None, b"n")] * 7], "Too many fields"),
    ("a field too large", [CODE, WASM, ("name", None, b"n" * 70_000)], "Part exceeded"),
    ("WAT that does not parse", [("code", "bad.wat", b"(module"), WASM, WAT], ""),
    ("WAT that is not UTF-8", [("code", "bad.wat", b"\xff\xfe"), WASM, WAT], "UTF-8"),
    ("an unknown type", [CODE, ("type", None, b"lisp"), WAT], "lisp"),
]


@pytest.mark.parametrize(("parts", "message"), [c[1:] for c in BAD_FORMS],
                         ids=[c[0] for c in BAD_FORMS])
def test_malformed_forms_are_400(live: Live, parts: list[tuple[str, str | None, bytes]],
                                 message: str) -> None:
    reply = post(live, multipart(*parts))
    assert reply.status_code == 400, reply.text
    assert reply.json()["kind"] == "invalid_request" and message in reply.json()["error"]


def test_form_requests_refused_before_parsing(live: Live) -> None:
    form = multipart(CODE, WASM, WAT)
    mixed = post(live, form, params={"type": "wasm"})
    assert mixed.status_code == 400 and "the query also gives type" in mixed.json()["error"]
    no_boundary = post(live, form, content_type="multipart/form-data")
    assert no_boundary.status_code == 400 and "malformed" in no_boundary.json()["error"]
    garbage = post(live, b"\0" * 100)
    assert garbage.status_code == 400
    not_deploy = post(live, form, key="alice")
    assert not_deploy.status_code == 403


def test_the_body_limit_holds_while_parsing(live: Live) -> None:
    big = multipart(("code", "big.wasm", b"\0" * (MAX_BODY + 1)), WASM)
    declared = post(live, big)
    assert declared.status_code == 413 and "max_body_bytes" in declared.json()["error"]

    def chunks() -> Iterator[bytes]:  # chunked: no length declared up front
        for i in range(0, len(big), 65536):
            yield big[i:i + 65536]

    streamed = post(live, chunks())
    assert streamed.status_code == 413
    # Still serving, and nothing was deployed by any of it.
    names = {r["name"] for r in live.request("GET", "/v1/resources", "alice").json()[
        "resources"]}
    assert "big" not in names and live.request("GET", "/v2/health/ready").status_code == 200


def test_a_type_no_engine_runs_is_400_in_either_form(live: Live) -> None:
    raw = live.request("POST", "/v1/resources", "dora", content=SPIN, params={"type": "lisp"})
    form = post(live, multipart(CODE, ("type", None, b"lisp")))
    for reply in (raw, form):
        assert reply.status_code == 400 and "no engine can run resource type 'lisp'" in (
            reply.json()["error"])


def test_the_openapi_document_describes_the_form(live: Live) -> None:
    post_op = live.request("GET", "/openapi.json").json()["paths"]["/v1/resources"]["post"]
    form = post_op["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert form["required"] == ["code", "type"]
    assert set(form["properties"]) == {"code", "type", "name", "capabilities", "format"}


def test_deploy_options_reach_the_engine_raw_and_from_a_form(live: Live) -> None:
    """``options`` (a JSON object) configures the engine per model, as ``--option`` does on
    the CLI: a batching model is served batched, and a bad option is refused by name."""
    batching = json.dumps({"max_batch_size": 8, "max_queue_delay_us": 500})
    raw = live.request("POST", "/v1/resources", "dora", content=classifier(41),
                       params={"type": "onnx", "name": "batched-raw", "options": batching})
    assert raw.status_code == 201, raw.text
    assert raw.json()["options"]["max_batch_size"] == 8
    form = deploy_form(live, {"code": ("m.onnx", classifier(42))},
                       {"type": "onnx", "name": "batched-form", "options": batching})
    assert form.status_code == 201, form.text
    assert form.json()["options"] == raw.json()["options"]
    x = np.ones((2, 4), np.float32)
    inferred = live.request("POST", "/v2/models/batched-form/infer", "alice", json=body(x))
    assert inferred.status_code == 200, inferred.text
    np.testing.assert_allclose(np.asarray(inferred.json()["outputs"][0]["data"],
                                          np.float32).reshape(2, 3),
                               direct(classifier(42), x), rtol=1e-6)
    for options, named in (('{"max_batch_sise": 8}', "max_batch_sise"),
                           ("[8]", "JSON object"), ("{bad", "not valid JSON"),
                           ('{"max_batch_size": -1}', "max_batch_size")):
        refused = live.request("POST", "/v1/resources", "dora", content=classifier(43),
                               params={"type": "onnx", "options": options})
        assert refused.status_code == 400, refused.text
        assert refused.json()["kind"] == "invalid_request"
        assert named in refused.json()["error"], refused.text
