"""Records validate themselves; the cancel token and error kinds behave as documented."""

from __future__ import annotations

import threading
import time

import pytest

from coordinator_hookspecs import (
    ERROR_OF_KIND,
    STATUS_OF_KIND,
    CancelToken,
    EngineRecord,
    ErrorInfo,
    ErrorKind,
    FeeExhausted,
    HostFunctionRecord,
    Status,
    ValidatorRecord,
    Verdict,
)


@pytest.mark.parametrize("bad", ["", "Upper", "has space", "9lives", "x" * 64, None])
def test_record_names_are_validated(bad: object) -> None:
    with pytest.raises(ValueError, match="not a valid plugin name"):
        EngineRecord(name=bad, engine=object(), resource_types={"wasm"})  # type: ignore[arg-type]


def test_records_freeze_their_sets() -> None:
    record = ValidatorRecord(name="v", validator=object(), applies_to=["wasm"])
    assert record.applies_to == frozenset({"wasm"})
    engine = EngineRecord(name="e", engine=object(), resource_types=["wasm", "onnx"])
    assert engine.resource_types == frozenset({"wasm", "onnx"})


def test_host_function_types_are_checked() -> None:
    with pytest.raises(ValueError, match="unknown value types"):
        HostFunctionRecord(name="f", capability="io", func=print, params=("i32", "u8"))


def test_every_kind_has_a_status_and_an_exception() -> None:
    assert set(STATUS_OF_KIND) == set(ErrorKind) == set(ERROR_OF_KIND)
    assert STATUS_OF_KIND[ErrorKind.TIMEOUT] is Status.TIMED_OUT
    error = FeeExhausted("out of fuel", fee_used=7)
    assert error.kind is ErrorKind.FEE_EXHAUSTED and error.fee_used == 7
    assert str(error) == "fee_exhausted: out of fuel"


def test_verdict_reject() -> None:
    verdict = Verdict.reject("nope")
    assert not verdict.allow and verdict.reason == "nope"


def test_cancel_token_first_reason_wins_and_fires_callbacks_once() -> None:
    token = CancelToken()
    seen: list[ErrorKind] = []
    token.on_cancel(seen.append)
    assert token.cancel(ErrorKind.CANCELLED)
    assert not token.cancel(ErrorKind.TIMEOUT)
    assert token.reason is ErrorKind.CANCELLED and seen == [ErrorKind.CANCELLED]
    late: list[ErrorKind] = []
    token.on_cancel(late.append)  # registered after the fact: runs at once
    assert late == [ErrorKind.CANCELLED]


def test_cancel_token_poll_times_out_past_deadline() -> None:
    token = CancelToken(time.monotonic() + 0.01)
    assert token.poll() is None
    time.sleep(0.02)
    assert token.poll() is ErrorKind.TIMEOUT
    assert token.remaining < 0


def test_cancel_token_is_thread_safe() -> None:
    token = CancelToken()
    fired: list[ErrorKind] = []
    lock = threading.Lock()

    def record(reason: ErrorKind) -> None:
        with lock:
            fired.append(reason)

    for _ in range(100):
        token.on_cancel(record)
    threads = [threading.Thread(target=token.cancel) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(fired) == 100


def test_error_info_prints_kind_and_message() -> None:
    error = ErrorInfo(ErrorKind.SECURITY_REJECTED, "caller 'mallory' is blocked",
                      source="blocklist")
    assert str(error) == "security_rejected: caller 'mallory' is blocked"
    assert f"{error}" == str(error)
    assert "ErrorInfo(" in repr(error)  # the repr stays the full record for debugging
