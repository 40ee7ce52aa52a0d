"""A pluggy manager that remembers which plugin gave each result of a hook call.

The core must know the provider of every record (a conflict names both plugins, a plugin
whose hook raises is dropped alone), yet keep pluggy's calling semantics: ``tryfirst`` and
``trylast`` order, and ``wrapper=True`` / ``hookwrapper=True`` implementations that see and
may change the results. So the hook is called through pluggy itself, and only for the
duration of :meth:`CoordinatorManager.call` each plain implementation is wrapped (conda's
``CondaPluginManager._hookexec`` does the same): the wrapper notes the plugin of every item
it returns and turns an exception into a recorded failure, so the others still run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pluggy

from coordinator_hookspecs import PROJECT_NAME, InvalidRequest
from coordinator_hookspecs import spec as hookspec_module


class Outcome:
    """What the implementations of one hook call gave: the plugin of each item, failures."""

    def __init__(self, collecting: bool) -> None:
        self.collecting = collecting
        self.origin: dict[int, str] = {}  # id(item) -> plugin name
        self.failures: list[tuple[str, Exception]] = []
        self.wrappers: list[str] = []  # plugins whose wrapper saw the call
        self._keep: list[Any] = []  # keeps the items alive, so their ids stay theirs

    def provider(self, item: Any) -> str:
        """The plugin that returned ``item``; an item no plain implementation returned was
        put there by a wrapper."""
        return self.origin.get(id(item)) or "+".join(self.wrappers) or "?"


class _Attributed:
    """A hook implementation that reports to an :class:`Outcome` (pluggy reads the rest of
    the implementation's attributes through ``__getattr__``)."""

    def __init__(self, impl: pluggy.HookImpl, plugin: str, outcome: Outcome) -> None:
        self.impl = impl
        self.plugin = plugin
        self.outcome = outcome

    def __getattr__(self, name: str) -> Any:
        return getattr(self.impl, name)

    def function(self, *args: Any, **kwargs: Any) -> Any:
        outcome = self.outcome
        try:
            result: Any = self.impl.function(*args, **kwargs)
            if outcome.collecting:
                # A generator may raise while iterated; a bare record is no list.
                result = list(result or ())
        except InvalidRequest:
            raise  # the user's configuration cannot work: stop start-up with its message
        except Exception as exc:
            outcome.failures.append((self.plugin, exc))
            return None
        if outcome.collecting:
            outcome._keep.append(result)
            for item in result:
                outcome.origin[id(item)] = self.plugin
        return result


class CoordinatorManager(pluggy.PluginManager):
    """The coordinator's hookspecs on a fresh manager (never a module-level global)."""

    def __init__(self) -> None:
        super().__init__(PROJECT_NAME)
        self.add_hookspecs(hookspec_module)
        self._outcome: Outcome | None = None

    def call(self, hook_name: str, kwargs: Mapping[str, Any], *, collecting: bool) -> tuple[
        Any, Outcome
    ]:
        """Call ``hook_name`` the pluggy way; return its result and the :class:`Outcome`.

        ``collecting``: the hook returns lists of records (each normalised to a list)."""
        outcome = Outcome(collecting)
        previous, self._outcome = self._outcome, outcome
        try:
            result = getattr(self.hook, hook_name)(**kwargs)
        finally:
            self._outcome = previous
        return result, outcome

    def _hookexec(
        self,
        hook_name: str,
        methods: Sequence[pluggy.HookImpl],
        kwargs: Mapping[str, object],
        firstresult: bool,
    ) -> object | list[object]:
        outcome = self._outcome
        if outcome is not None:
            wrapped: list[Any] = []
            for impl in methods:
                name = self.get_name(impl.plugin) or repr(impl.plugin)
                if impl.wrapper or impl.hookwrapper:
                    outcome.wrappers.append(name)
                    wrapped.append(impl)
                else:
                    wrapped.append(_Attributed(impl, name, outcome))
            methods = wrapped
        return super()._hookexec(hook_name, methods, kwargs, firstresult)
