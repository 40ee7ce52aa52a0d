"""``coordinator state root|prove`` and ``coordinator snapshot export|import`` as a user runs
them: real CLI subprocesses on a real data directory with the counter and token contracts."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import pytest

from coordinator_hookspecs import verify_proof
from tests.helpers import cli_json, run_cli

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A data directory with a token (three balances) and a counter, and its snapshot."""
    data = tmp_path_factory.mktemp("source")
    token = run_cli("deploy", str(EXAMPLES / "token.wat"), "--type", "wasm", "--name", "token",
                    "--grant", "storage", "--grant", "events", data_dir=data).stdout.strip()
    counter = run_cli("deploy", str(EXAMPLES / "counter.wat"), "--type", "wasm",
                      "--grant", "storage", data_dir=data).stdout.strip()
    for amount, name in ((100, "alice"), (50, "bob"), (7, "carol")):
        done = run_cli("exec", token, "--entry", "mint", "--caller", "treasury",
                       "--input-file", str(_mint_input(data, amount, name)), data_dir=data)
        assert done.returncode == 0, done.stderr
    assert run_cli("exec", counter, data_dir=data).returncode == 0
    snapshot = data.parent / "source.snapshot"
    code, header = cli_json("snapshot", "export", str(snapshot), data_dir=data)
    assert code == 0, header
    return {"data": data, "token": token, "counter": counter, "snapshot": snapshot,
            "header": header}


def _mint_input(data: Path, amount: int, name: str) -> Path:
    path = data.parent / f"mint-{name}.bin"
    path.write_bytes(struct.pack("<Q", amount) + name.encode())
    return path


def test_state_root_and_global_root(source: dict[str, Any]) -> None:
    data, token = source["data"], source["token"]
    code, roots = cli_json("state", "root", token, data_dir=data)
    assert code == 0 and roots["resource_id"] == token
    code, top = cli_json("state", "root", data_dir=data)
    assert code == 0 and top == {"global_root": roots["global_root"]}
    text = run_cli("state", "root", token, data_dir=data)
    assert text.stdout.strip() == roots["state_root"]
    last = json.loads(run_cli("audit", "show", "--json", data_dir=data).stdout)[-1]
    assert last["detail"]["global_root"] == roots["global_root"]  # the counter ran last
    missing = run_cli("state", "root", "ee" * 32, data_dir=data)
    assert missing.returncode == 1 and "no resource" in missing.stderr


def test_state_prove_inclusion_and_exclusion(source: dict[str, Any]) -> None:
    data, token = source["data"], source["token"]
    code, proved = cli_json("state", "prove", token, "bal:alice", data_dir=data)
    assert code == 0 and struct.unpack("<Q", bytes.fromhex(proved["value"])) == (100,)
    assert verify_proof(proved["proof"], proved["state_root"])
    assert verify_proof(proved["root_proof"], proved["global_root"])
    code, absent = cli_json("state", "prove", token, "bal:mallory", data_dir=data)
    assert code == 0 and absent["value"] is None
    assert verify_proof(absent["proof"], absent["state_root"])
    forged = {**proved["proof"], "value": struct.pack("<Q", 1_000_000).hex()}
    assert not verify_proof(forged, proved["state_root"])
    text = run_cli("state", "prove", token, "bal:bob", data_dir=data).stdout
    first, rest = text.split("\n", 1)
    assert first == "0x3200000000000000" and verify_proof(json.loads(rest)["proof"],
                                                        proved["state_root"])
    usage = run_cli("state", "prove", token, data_dir=data)
    assert usage.returncode == 2 and "needs RID and KEY" in usage.stderr


def test_snapshot_round_trip(source: dict[str, Any], tmp_path: Path) -> None:
    header = source["header"]
    code, record = cli_json("snapshot", "import", str(source["snapshot"]),
                            "--expect-root", header["global_root"], data_dir=tmp_path)
    assert code == 0 and record["record_kind"] == "snapshot"
    assert record["detail"]["source_head"] == header["chain"]["head"]
    assert record["detail"]["source_seq"] == header["chain"]["seq"]
    for rid in (source["token"], source["counter"]):
        _, there = cli_json("state", "get", rid, data_dir=source["data"])
        _, here = cli_json("state", "get", rid, data_dir=tmp_path)
        assert here == there
        assert cli_json("state", "root", rid, data_dir=tmp_path)[1] == \
            cli_json("state", "root", rid, data_dir=source["data"])[1]
    assert run_cli("exec", source["counter"], data_dir=tmp_path).returncode == 0
    assert cli_json("audit", "verify", data_dir=tmp_path)[1]["ok"]
    again = run_cli("snapshot", "import", str(source["snapshot"]), data_dir=tmp_path)
    assert again.returncode == 2 and "only into an empty data directory" in again.stderr


def _tampered(source: dict[str, Any], tmp_path: Path, edit: Any) -> Path:
    lines = source["snapshot"].read_text().splitlines()
    lines = edit([json.loads(line) for line in lines])
    path = tmp_path / "tampered.snapshot"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def _set_state_value(lines: list[Any]) -> list[Any]:
    token = next(line for line in lines[1:] if line["resource"][2] == "token")
    token["state"][0][1] = struct.pack("<Q", 10**9).hex()
    return lines


def _set_state_root(lines: list[Any]) -> list[Any]:
    lines[1]["state_root"] = "11" * 32
    return lines


def _set_global_root(lines: list[Any]) -> list[Any]:
    lines[0]["global_root"] = "22" * 32
    return lines


def _drop_resource(lines: list[Any]) -> list[Any]:
    return lines[:-1]


def _swap_code(lines: list[Any]) -> list[Any]:
    lines[1]["code"], lines[2]["code"] = lines[2]["code"], lines[1]["code"]
    return lines


@pytest.mark.parametrize(("edit", "reason"), [
    (_set_state_value, "state root mismatch for resource"),
    (_set_state_root, "state root mismatch for resource"),
    (_set_global_root, "global root mismatch"),
    (_drop_resource, "announces 2 resources but the file holds 1"),
    (_swap_code, "is not the sha256 of the given bytes"),
])
def test_a_tampered_snapshot_is_refused_and_nothing_written(
        source: dict[str, Any], tmp_path: Path, edit: Any, reason: str) -> None:
    target = tmp_path / "target"
    done = run_cli("snapshot", "import", str(_tampered(source, tmp_path, edit)),
                   data_dir=target)
    assert done.returncode == 2 and reason in done.stderr, done.stderr
    assert cli_json("resources", data_dir=target)[1] == []
    assert cli_json("audit", "verify", data_dir=target)[1]["count"] == 0
    assert cli_json("state", "root", data_dir=target)[1] == {"global_root": "00" * 32}
    assert [p for p in (target / "resources").rglob("*") if p.is_file()] == []


def test_an_unexpected_root_and_bad_files_are_refused(source: dict[str, Any],
                                                      tmp_path: Path) -> None:
    wrong = run_cli("snapshot", "import", str(source["snapshot"]), "--expect-root", "33" * 32,
                    data_dir=tmp_path)
    assert wrong.returncode == 2 and "is not the expected" in wrong.stderr
    missing = run_cli("snapshot", "import", str(tmp_path / "none"), data_dir=tmp_path)
    assert missing.returncode == 1 and "no snapshot file" in missing.stderr
    garbage = tmp_path / "garbage"
    garbage.write_text("{not json\n")
    bad = run_cli("snapshot", "import", str(garbage), data_dir=tmp_path)
    assert bad.returncode == 2 and "line 1 (header) is not JSON" in bad.stderr
    assert cli_json("resources", data_dir=tmp_path)[1] == []
