"""Built-in deploy validator ``security-capabilities``: a resource gets only what it was granted.

At deploy the engine's ``inspect`` reports what the code needs in
``deploy.meta["required_capabilities"]`` (for WASM: the capabilities of the host functions the
module imports; a contract that calls a model needs ``models`` like any other capability). The
deploy is refused unless every required capability was granted (``--grant CAP``) or is one of
the ``always_granted`` ones (``io``: the input/output ABI every module may use). Grant names
must be well formed (the format of host-function capabilities); an operator may also restrict
which capabilities can be granted at all with ``grantable``.

The engine enforces the same grants again when it links the module, so this check is the
early, readable refusal rather than the only line of defence.

Config ``[security-capabilities]``::

    always_granted = ["io"]
    grantable = ["storage", "events", "models"]   # unset: any well-formed name
"""

from __future__ import annotations

import re
from typing import Any

import attrs

from coordinator_hookspecs import (
    ConfigSection,
    DeployRequest,
    InvalidRequest,
    SecurityRejected,
    ValidatorRecord,
    hookimpl,
)

NAME = "security-capabilities"
#: The format ``HostFunctionRecord.capability`` enforces, so a grant can name only something a
#: host function could require.
_CAPABILITY = re.compile(r"^[a-z][a-z0-9_.-]{0,62}$")


@attrs.frozen
class CapabilitiesConfig:
    """The ``[security-capabilities]`` section."""

    always_granted: frozenset[str] = frozenset({"io"})
    grantable: frozenset[str] | None = None


class CapabilityGrantValidator:
    """Refuses a deploy whose code needs capabilities it was not granted."""

    def __init__(self, cfg: CapabilitiesConfig | None = None) -> None:
        cfg = cfg or CapabilitiesConfig()
        self.always_granted = cfg.always_granted
        self.grantable = cfg.grantable

    def validate_deploy(self, deploy: DeployRequest) -> None:
        granted = deploy.capabilities
        malformed = sorted(repr(c) for c in granted
                           if not isinstance(c, str) or not _CAPABILITY.match(c))
        if malformed:
            raise InvalidRequest(
                f"capability names {', '.join(malformed)} are malformed: use 1-63 lowercase "
                "letters, digits, '_', '-' or '.', starting with a letter", source=NAME)
        if self.grantable is not None:
            refused = sorted(granted - self.grantable - self.always_granted)
            if refused:
                raise SecurityRejected(
                    f"capabilities {', '.join(refused)} may not be granted "
                    f"([{NAME}].grantable allows {', '.join(sorted(self.grantable)) or 'none'})",
                    source=NAME)
        required = deploy.meta.get("required_capabilities", ())
        if not isinstance(required, (list, tuple, set, frozenset)) or not all(
                isinstance(c, str) for c in required):
            raise SecurityRejected(
                f"the engine reported malformed required_capabilities {required!r} for "
                f"resource {deploy.resource_id}", source=NAME)
        missing = sorted(set(required) - granted - self.always_granted)
        if missing:
            raise SecurityRejected(
                f"resource {deploy.resource_id} needs capabilities that were not granted: "
                f"{', '.join(missing)} (grant them at deploy, e.g. --grant {missing[0]})",
                source=NAME)


@hookimpl
def coordinator_register_config_sections() -> list[ConfigSection]:
    return [ConfigSection(name=NAME, type=CapabilitiesConfig)]


@hookimpl
def coordinator_register_validators(config: Any) -> list[ValidatorRecord]:
    return [ValidatorRecord(name=NAME, validator=CapabilityGrantValidator(config.section(NAME)),
                            priority=30)]
