"""The model index: a deploy through this process is found by name at once, even right after
an unknown name forced a re-read (the re-read is throttled)."""

from __future__ import annotations

from typing import Any

import pytest

from coordinator_hookspecs import NotFound, ResourceInfo
from coordinator_server.models import ModelIndex

SIGNATURE = {"inputs": [{"name": "x"}], "outputs": [{"name": "y"}]}


class Resources:
    """The one coordinator method the index reads (a collaborator under isolation)."""

    def __init__(self) -> None:
        self.infos: list[ResourceInfo] = []

    def resources(self) -> list[Any]:
        return list(self.infos)


def model(name: str, at: float) -> ResourceInfo:
    return ResourceInfo(id=f"{name}-{at}", type="onnx", name=name, meta=SIGNATURE,
                        deployed_at=at)


def test_a_deploy_right_after_an_unknown_name_is_found_once_forgotten() -> None:
    coord = Resources()
    index = ModelIndex(coord, ttl=60)
    with pytest.raises(NotFound):
        index.get("fresh")  # reads, then a forced re-read: both now
    coord.infos.append(model("fresh", 1.0))
    with pytest.raises(NotFound):
        index.get("fresh")  # within the throttle: the list is not read again
    index.forget()
    info, version = index.get("fresh")
    assert (info.name, version) == ("fresh", "1")
    coord.infos.append(model("fresh", 2.0))
    index.forget()
    assert index.get("fresh")[1] == "2" and index.get("fresh", "1")[0].deployed_at == 1.0
