"""Built-in validator ``security-request``: the shape of every execution request.

Runs first (priority 0) and is never cached, because it looks at the request itself, not at
(resource, caller): the input's size, the entry name, the caller id, the fee limit and the
timeout. A malformed request is an ``InvalidRequest`` (kind ``invalid_request``), raised rather
than returned as a verdict so it keeps its kind, with a message naming the field and the
config key that bounds it.

Config ``[security-request]`` (all optional)::

    max_input_bytes = 16_777_216            # bytes input, or total bytes of a mapping's arrays
    max_input_elements = 16_777_216         # total elements of a mapping's arrays
    max_inputs = 64                         # names in a mapping input
    max_args = 64                           # numeric arguments of a WASM entry
    max_entry_length = 128
    entry_pattern = '^[A-Za-z_][A-Za-z0-9_.:$/-]*$'
    caller_pattern = '^[A-Za-z0-9_.:@-]{1,128}$'
    max_fee_limit = 1_000_000_000_000
    max_timeout = 30.0                      # unset: only positive; the core caps at its maximum
"""

from __future__ import annotations

import math
import re
import sys
from typing import Any

import attrs

from coordinator_hookspecs import (
    ConfigSection,
    ExecutionRequest,
    InvalidRequest,
    ResourceInfo,
    ValidatorRecord,
    hookimpl,
)

NAME = "security-request"
#: Known-good callers and entries are remembered so the hot path is a set lookup, not a
#: regex match; the memo is cleared when it reaches this size (a hostile stream of fresh
#: ids costs a regex each, never unbounded memory).
_MEMO_LIMIT = 4096


@attrs.frozen
class RequestLimitsConfig:
    """The ``[security-request]`` section."""

    max_input_bytes: int = 16 * 1024 * 1024
    max_input_elements: int = 16 * 1024 * 1024
    max_inputs: int = 64
    max_args: int = 64
    max_entry_length: int = 128
    entry_pattern: str = r"^[A-Za-z_][A-Za-z0-9_.:$/-]*$"
    caller_pattern: str = r"^[A-Za-z0-9_.:@-]{1,128}$"
    max_fee_limit: int = 1_000_000_000_000
    max_timeout: float | None = None


def _compile(pattern: str, key: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise InvalidRequest(
            f"invalid configuration: [{NAME}].{key} is not a regex: {exc}") from None


def _check_config(cfg: RequestLimitsConfig) -> None:
    for key in ("max_input_bytes", "max_input_elements", "max_inputs", "max_args",
                "max_entry_length", "max_fee_limit"):
        if getattr(cfg, key) <= 0:
            raise InvalidRequest(f"invalid configuration: [{NAME}].{key} must be positive")
    if cfg.max_timeout is not None and not cfg.max_timeout > 0:
        raise InvalidRequest(f"invalid configuration: [{NAME}].max_timeout must be positive")


class RequestValidator:
    """Checks sizes, names and bounds of an ``ExecutionRequest`` before anything else runs."""

    def __init__(self, cfg: RequestLimitsConfig | None = None) -> None:
        cfg = cfg or RequestLimitsConfig()
        _check_config(cfg)
        self.cfg = cfg
        self._entry = _compile(cfg.entry_pattern, "entry_pattern")
        self._caller = _compile(cfg.caller_pattern, "caller_pattern")
        self._good_callers: set[str] = set()
        self._good_entries: set[str] = set()
        self._max_bytes = cfg.max_input_bytes
        self._max_fee = cfg.max_fee_limit
        self._max_timeout = sys.float_info.max if cfg.max_timeout is None else cfg.max_timeout

    def validate_execution(self, request: ExecutionRequest, resource: ResourceInfo) -> None:
        # Each check has an inlined fast path for the ordinary case (a known caller and
        # entry, bytes input, int fee, float timeout) and a slow path that explains.
        caller = request.caller
        if caller not in self._good_callers:
            self._check_caller(caller)
        entry = request.entry
        if entry is not None and entry not in self._good_entries:
            self._check_entry(entry)
        data = request.input
        if type(data) is not bytes or len(data) > self._max_bytes:
            self._check_input(data)
        args = request.args
        if args is not None and len(args) > self.cfg.max_args:
            raise InvalidRequest(
                f"args has {len(args)} values, over the limit of {self.cfg.max_args} "
                f"([{NAME}].max_args)", source=NAME)
        fee_limit = request.fee_limit
        if fee_limit is not None and (type(fee_limit) is not int
                                      or not 0 < fee_limit <= self._max_fee):
            self._check_fee_limit(fee_limit)
        timeout = request.timeout
        # NaN fails every comparison and inf is above _max_timeout: both take the slow path.
        if timeout is not None and (type(timeout) is not float
                                    or not 0.0 < timeout <= self._max_timeout):
            self._check_timeout(timeout)

    # -- the checks, each naming its field -----------------------------------------------
    def _check_caller(self, caller: Any) -> None:
        if not isinstance(caller, str) or not self._caller.match(caller):
            raise InvalidRequest(
                f"caller {caller!r} is not a valid caller id: it must match "
                f"{self.cfg.caller_pattern} ([{NAME}].caller_pattern)", source=NAME)
        _remember(self._good_callers, caller)

    def _check_entry(self, entry: Any) -> None:
        if not isinstance(entry, str):
            raise InvalidRequest(f"entry must be a string, got {type(entry).__name__}",
                                 source=NAME)
        if len(entry) > self.cfg.max_entry_length:
            raise InvalidRequest(
                f"entry name is {len(entry)} characters, over the limit of "
                f"{self.cfg.max_entry_length} ([{NAME}].max_entry_length)", source=NAME)
        if not self._entry.match(entry):
            raise InvalidRequest(
                f"entry {entry!r} is not a valid entry name: it must match "
                f"{self.cfg.entry_pattern} ([{NAME}].entry_pattern)", source=NAME)
        _remember(self._good_entries, entry)

    def _check_input(self, value: Any) -> None:
        if isinstance(value, (bytes, bytearray)):
            size = len(value)
        elif isinstance(value, str):
            # UTF-8 is at most 4 bytes a character: encode only when the bound could bite.
            size = len(value)
            if size * 4 > self.cfg.max_input_bytes:
                size = len(value.encode("utf-8", "surrogatepass"))
        elif isinstance(value, memoryview):
            size = value.nbytes
        elif value is None:
            return
        elif isinstance(value, dict) or hasattr(value, "items"):
            self._check_mapping(value)
            return
        else:
            raise InvalidRequest(
                f"input must be bytes or a mapping of input name to array, got "
                f"{type(value).__name__}", source=NAME)
        if size > self.cfg.max_input_bytes:
            raise InvalidRequest(
                f"input is {size} bytes, over the limit of {self.cfg.max_input_bytes} "
                f"([{NAME}].max_input_bytes)", source=NAME)

    def _check_mapping(self, mapping: Any) -> None:
        cfg = self.cfg
        if len(mapping) > cfg.max_inputs:
            raise InvalidRequest(
                f"input has {len(mapping)} named inputs, over the limit of {cfg.max_inputs} "
                f"([{NAME}].max_inputs)", source=NAME)
        total_bytes = 0
        total_elements = 0
        for name, array in mapping.items():
            if not isinstance(name, str):
                raise InvalidRequest(f"input names must be strings, got {name!r}", source=NAME)
            elements, nbytes = _measure(array, cfg.max_input_elements - total_elements)
            total_elements += elements
            total_bytes += nbytes
            if total_elements > cfg.max_input_elements:
                raise InvalidRequest(
                    f"input {name!r} brings the input to over {cfg.max_input_elements} "
                    f"elements ([{NAME}].max_input_elements)", source=NAME)
            if total_bytes > cfg.max_input_bytes:
                raise InvalidRequest(
                    f"input {name!r} brings the input to {total_bytes} bytes, over the limit "
                    f"of {cfg.max_input_bytes} ([{NAME}].max_input_bytes)", source=NAME)

    def _check_fee_limit(self, fee_limit: Any) -> None:
        if isinstance(fee_limit, bool) or not isinstance(fee_limit, int):
            raise InvalidRequest(
                f"fee_limit must be an integer, got {type(fee_limit).__name__}", source=NAME)
        if fee_limit <= 0 or fee_limit > self.cfg.max_fee_limit:
            raise InvalidRequest(
                f"fee_limit {fee_limit} is out of bounds: it must be between 1 and "
                f"{self.cfg.max_fee_limit} ([{NAME}].max_fee_limit)", source=NAME)

    def _check_timeout(self, timeout: Any) -> None:
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
            raise InvalidRequest(
                f"timeout must be a number of seconds, got {type(timeout).__name__}",
                source=NAME)
        if not (timeout > 0 and math.isfinite(timeout)):
            raise InvalidRequest(f"timeout {timeout!r} must be a positive, finite number "
                                 "of seconds", source=NAME)
        bound = self.cfg.max_timeout
        if bound is not None and timeout > bound:
            raise InvalidRequest(
                f"timeout {timeout} s is over the limit of {bound} s "
                f"([{NAME}].max_timeout)", source=NAME)


def _remember(memo: set[str], value: str) -> None:
    if len(memo) >= _MEMO_LIMIT:
        memo.clear()
    memo.add(value)


def _measure(array: Any, budget: int) -> tuple[int, int]:
    """(elements, bytes) of one input value: a numpy-like array, bytes, nested lists, or a
    ``{"data": ...}`` dict of one of these.

    Nested lists are walked iteratively and the walk stops once ``budget`` elements are
    passed, so a hostile deep or huge list costs at most ``budget`` steps and no recursion.
    """
    if isinstance(array, (bytes, bytearray)):
        return len(array), len(array)
    nbytes = getattr(array, "nbytes", None)
    size = getattr(array, "size", None)
    if isinstance(nbytes, int) and isinstance(size, int):
        return size, nbytes
    if isinstance(array, (int, float, complex, bool, str)):
        return 1, 8 if not isinstance(array, str) else len(array)
    if isinstance(array, dict) and not isinstance(array.get("data", {}), dict):
        # The JSON form of a tensor, ``{"data": [...], "shape": [...]}`` (docs/onnx.md): its
        # size is its data's. One level only, so a nest of dicts cannot recurse.
        return _measure(array["data"], budget)
    if not isinstance(array, (list, tuple)):
        raise InvalidRequest(
            f"input arrays must be arrays, bytes or nested lists of numbers, got "
            f"{type(array).__name__}", source=NAME)
    elements = 0
    stack: list[Any] = [array]
    while stack:
        item = stack.pop()
        if isinstance(item, (list, tuple)):
            stack.extend(item)
            if len(stack) > budget + 1:
                return budget + 1, 8 * (budget + 1)
        else:
            elements += 1
            if elements > budget:
                break
    return elements, 8 * elements


@hookimpl
def coordinator_register_config_sections() -> list[ConfigSection]:
    return [ConfigSection(name=NAME, type=RequestLimitsConfig)]


@hookimpl
def coordinator_register_validators(config: Any) -> list[ValidatorRecord]:
    return [ValidatorRecord(name=NAME, validator=RequestValidator(config.section(NAME)),
                            priority=0, cacheable=False)]
