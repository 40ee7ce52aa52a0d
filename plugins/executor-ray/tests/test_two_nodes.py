"""The Ray executor on a simulated two-node cluster on this machine
(``ray.cluster_utils.Cluster``): actors on both nodes, an engine whose actors need a custom
resource only one node has, state read through the coordinator from the other node."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import ray
from ray.cluster_utils import Cluster

from coordinator_core import Coordinator, ExecutionRequest
from coordinator_executor_ray.signals import keeping_fault_handlers
from tests.helpers import cli_json

from .conftest import COUNTER, EXAMPLES, actors, assert_no_ray_processes_left, descendants, on_ray


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Coordinator, Any]]:
    assert not ray.is_initialized()
    before = set(descendants(os.getpid()))
    nodes = Cluster(initialize_head=True, head_node_args={"num_cpus": 2,
                                                          "include_dashboard": False})
    try:
        nodes.add_node(num_cpus=2, resources={"accelerator_x": 1})
        nodes.wait_for_nodes()
        coord = on_ray(tmp_path_factory.mktemp("ray-two"), address=nodes.address,
                       actors_per_node=1,
                       resources={"onnxruntime": {"num_cpus": 0.5, "accelerator_x": 0.5}})
        try:
            yield coord, nodes
        finally:
            coord.close()
    finally:
        keeping_fault_handlers(ray.shutdown)
        nodes.shutdown()
    assert_no_ray_processes_left(before)


def test_actors_run_on_both_nodes(cluster: tuple[Coordinator, Any]) -> None:
    coord, _ = cluster
    wasm = coord.metrics()["engines"]["wasmtime"]["workers"]
    assert len(wasm["nodes"]) == 2
    assert len({a["node_id"] for a in wasm["actors"]}) == 2  # actors_per_node = 1, two nodes
    rids = [coord.deploy(COUNTER.replace('"count"', f'"c{i:03d}"').replace(
        "(i32.const 5)", "(i32.const 4)"), "wasm", source_format="wat",
        capabilities=["storage"]) for i in range(12)]
    for rid in rids:
        for _ in range(2):
            assert coord.execute(ExecutionRequest(resource_id=rid)).ok
    ran = [a for a in actors(coord) if a["executions"]]
    assert len({a["node_id"] for a in ran}) == 2  # twelve resources spread by their home actor
    # the actor on the other node reads state through the coordinator
    modes = {a["node_id"]: a["state_reads"] for a in actors(coord)}
    assert sorted(modes.values()) == ["coordinator", "sqlite"]
    for rid in rids:
        assert list(coord.state(rid).values()) == [(2).to_bytes(8, "little")]
    assert coord.store.verify().ok


def test_custom_resources_place_an_engine_on_the_node_that_has_them(
        cluster: tuple[Coordinator, Any]) -> None:
    coord, _ = cluster
    onnx = actors(coord, "onnxruntime")
    assert len(onnx) == 1  # only the second node has accelerator_x
    coordinator_node = ray.get_runtime_context().get_node_id()
    assert onnx[0]["node_id"] != coordinator_node and onnx[0]["pid"] != os.getpid()
    rid = coord.deploy((EXAMPLES / "risk_model.onnx").read_bytes(), "onnx")
    x = np.array([[0.5, 0.2, 1.0]], dtype=np.float32)
    result = coord.execute(ExecutionRequest(resource_id=rid, input={"x": x}))
    assert result.ok, result.error
    assert actors(coord, "onnxruntime")[0]["executions"] == 1


def test_coordinator_plugins_shows_the_cluster(cluster: tuple[Coordinator, Any],
                                               tmp_path: Path) -> None:
    coord, nodes = cluster
    code, data = cli_json("plugins", data_dir=tmp_path,
                          env={"COORDINATOR_RAY__ADDRESS": nodes.address,
                               "COORDINATOR_DISPATCH__EXECUTOR": "ray"})
    assert code == 0, data
    about = data["executors"]["ray"]
    assert about["address"] == nodes.address
    assert len(about["nodes"]) == 2
    running = {a["name"] for engine in ("wasmtime", "onnxruntime") for a in actors(coord, engine)}
    assert running <= set(about["actors"])
