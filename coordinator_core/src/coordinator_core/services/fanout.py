"""What the composite metrics and audit sinks share: failing open, and closing on a deadline.

A composite holds its sinks as a tuple built once (OpenTelemetry SDK's
``SynchronousMultiSpanProcessor`` is the model) and is itself a sink, so the pipeline makes
one call per execution whatever the number of sinks. Sinks fail open: a sink that raises is
logged once (the one-line reason as a warning, the traceback at debug level) and is still
called afterwards; the result of the execution never changes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

from coordinator_core.log import logger
from coordinator_hookspecs import optional

#: Seconds ``close`` waits in total for every sink of a composite to close.
CLOSE_TIMEOUT = 5.0


class SinkFanout:
    """Names and ``close`` methods of a composite's sinks, and its log-once bookkeeping.
    Subclasses add the hot-path call (``record`` or ``emit``)."""

    #: How the log names one of these sinks ("metrics sink", "audit sink").
    kind = "sink"
    #: The base class whose no-op ``close`` a sink may inherit (nothing to call then).
    base: type = object

    def __init__(self, sinks: Sequence[tuple[str, Any]]) -> None:
        self.names = tuple(name for name, _ in sinks)
        closers = ((name, optional(sink, "close", self.base)) for name, sink in sinks)
        self._closers = tuple((name, close) for name, close in closers if close is not None)
        self._failed: set[str] = set()
        self._failed_lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.names)

    def failed(self, name: str, exc: BaseException) -> None:
        """Log the failure of sink ``name`` once; later failures of it stay silent."""
        with self._failed_lock:
            if name in self._failed:
                return
            self._failed.add(name)
        logger.warning(
            "{} {} failed: {}: {} (result unaffected; further failures of this sink are not "
            "logged)", self.kind, name, type(exc).__name__, exc,
        )
        logger.opt(exception=exc).debug("{} {} failed with this traceback", self.kind, name)

    def close(self, timeout: float = CLOSE_TIMEOUT) -> None:
        """Close every sink that has a ``close``, all of them within ``timeout`` seconds.

        Each close runs on its own daemon thread, so a sink whose close hangs neither delays
        the others beyond the shared deadline nor keeps the process alive; it is logged and
        left behind. A close that raises is logged like a failing sink. A second call does
        nothing."""
        closers, self._closers = self._closers, ()
        if not closers:
            return
        deadline = time.monotonic() + timeout
        threads = []
        for name, close in closers:
            thread = threading.Thread(target=self._close_one, args=(name, close),
                                      name=f"close-{name}", daemon=True)
            thread.start()
            threads.append((name, thread))
        for name, thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                logger.warning("{} {} did not close within {} s; not waited for",
                               self.kind, name, timeout)

    def _close_one(self, name: str, close: Any) -> None:
        try:
            close()
        except Exception as exc:
            logger.warning("closing {} {} failed: {}: {}", self.kind, name,
                           type(exc).__name__, exc)
            logger.opt(exception=exc).debug("closing {} {} failed with this traceback",
                                            self.kind, name)
