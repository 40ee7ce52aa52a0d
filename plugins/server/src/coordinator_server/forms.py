"""A deploy sent as ``multipart/form-data``: a ``code`` file part, and ``type``, ``name``,
``capabilities`` and ``format`` fields (what the raw form takes as query parameters).

The parts are parsed by Starlette's multipart parser fed from a stream that counts bytes, so
``[server] max_body_bytes`` is enforced while parsing, as for a raw body (413 past it), and a
file part spills to a temporary file rather than memory. The fields then go through the same
checks as the raw form's query parameters; a malformed form, an unknown or repeated field,
``code`` given as a plain field or missing, or a deploy query parameter alongside the form is
``InvalidRequest`` saying which.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator

from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request

from coordinator_hookspecs import InvalidRequest
from coordinator_server.app import BodyTooLarge, ServerState

FIELDS = ("type", "name", "capabilities", "format", "options")
MAX_FIELD = 64 * 1024  # a text field larger than this is no name or capability list


def is_multipart(request: Request) -> bool:
    return request.headers.get("content-type", "").lower().startswith("multipart/form-data")


async def limited(request: Request, limit: int) -> AsyncGenerator[bytes, None]:
    """The request body's chunks, ``BodyTooLarge`` as soon as they pass ``limit``."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(f"the body is {declared} bytes, over the limit of {limit} "
                           "([server] max_body_bytes)")
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"the body is over the limit of {limit} bytes "
                               "([server] max_body_bytes)")
        yield chunk


async def deploy_form(request: Request, state: ServerState) -> tuple[dict[str, str], bytes]:
    """The deploy's parameters (as the raw form's query parameters) and its code bytes."""
    given = sorted(set(request.query_params) & {*FIELDS, "code"})
    if given:
        raise InvalidRequest(f"a multipart deploy takes its fields from the form; the query "
                             f"also gives {', '.join(given)}")
    stream = limited(request, state.max_body)
    parser = MultiPartParser(request.headers, stream, max_files=2,
                             max_fields=len(FIELDS) + 1, max_part_size=MAX_FIELD)
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        raise InvalidRequest(f"the multipart body is malformed: {exc.message}") from None
    finally:
        await stream.aclose()
    try:
        params: dict[str, str] = {}
        code: bytes | None = None
        for name, value in form.multi_items():
            if name != "code" and name not in FIELDS:
                raise InvalidRequest(f"unknown form field {name[:40]!r}; a deploy takes code "
                                     f"(a file) and {', '.join(FIELDS)}")
            if name in params or (name == "code" and code is not None):
                raise InvalidRequest(f"the form field {name!r} is given twice")
            if name == "code":
                if not isinstance(value, UploadFile):
                    raise InvalidRequest("the form field 'code' must be a file part "
                                         "(Content-Disposition with a filename)")
                code = await value.read()
            elif isinstance(value, UploadFile):
                raise InvalidRequest(f"the form field {name!r} must be text, not a file")
            else:
                params[name] = value
        if code is None:
            raise InvalidRequest("a multipart deploy needs the file part 'code'")
        return params, code
    finally:
        await form.close()
