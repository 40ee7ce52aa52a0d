"""The ``[onnxruntime]`` config section: limits, the op policy, session and fee settings.

Every field has a safe default, so an empty section is the safe configuration:
CPU only, one intra-op and one inter-op thread with spinning off, the standard ``ai.onnx`` and
``ai.onnx.ml`` domains only, no external data, a bounded session cache and a memory cap.
"""

from __future__ import annotations

from typing import Any

import attrs

#: The domains a default deploy may use. ``""`` (the ONNX default domain) is read as ``ai.onnx``.
DEFAULT_DOMAINS = frozenset({"ai.onnx", "ai.onnx.ml"})


def _positive(_i: object, attribute: attrs.Attribute[Any], value: int) -> None:
    if value <= 0:
        raise ValueError(f"{attribute.name} must be positive, got {value!r}")


def _not_negative(_i: object, attribute: attrs.Attribute[Any], value: int) -> None:
    if value < 0:
        raise ValueError(f"{attribute.name} must not be negative, got {value!r}")


def _domains(value: Any) -> frozenset[str]:
    # Config and environment give "a,b" or a list; "" and "ai.onnx" name the same domain.
    items = value.split(",") if isinstance(value, str) else value
    return frozenset(normal_domain(str(v).strip()) for v in items)


def _names(value: Any) -> tuple[str, ...]:
    items = value.split(",") if isinstance(value, str) else value
    return tuple(s for s in (str(v).strip() for v in items) if s)


#: The ``ai.onnx`` operators drawing random numbers (``denied_ops``' default).
RANDOM_OPS = frozenset({"Bernoulli", "Multinomial", "RandomNormal", "RandomNormalLike",
                        "RandomUniform", "RandomUniformLike"})


def _name_set(value: Any) -> frozenset[str]:
    return frozenset(_names(value))


def normal_domain(domain: str) -> str:
    """The canonical spelling of an operator domain (``""`` is ``ai.onnx``)."""
    return domain or "ai.onnx"


@attrs.frozen
class OnnxConfig:
    """Settings of the ONNX engine and its deploy validator (section ``[onnxruntime]``)."""

    #: Largest model accepted at deploy, bytes (plus its external data, when allowed).
    max_model_bytes: int = attrs.field(default=256 * 1024 * 1024, validator=_positive)
    #: Operator domains nodes and model-local functions may use.
    allowed_domains: frozenset[str] = attrs.field(default=DEFAULT_DOMAINS, converter=_domains)
    #: Operator types refused even in an allowed domain. By default the random-number
    #: operators: their outputs differ from run to run, which no replay could reproduce.
    denied_ops: frozenset[str] = attrs.field(default=RANDOM_OPS, converter=_name_set)
    #: Let initializers live in external files. Off: any external reference is refused.
    allow_external_data: bool = False
    #: Where allowed external data lives; "" means ``<data_dir>/onnx-external``. Locations
    #: must stay inside it: no absolute paths, no ``..``, no symlink out.
    external_data_dir: str = ""
    #: Sessions kept warm (LRU by resource id).
    session_cache_size: int = attrs.field(default=16, validator=_positive)
    #: ``SessionOptions.intra_op_num_threads`` / ``inter_op_num_threads``.
    intra_op_threads: int = attrs.field(default=1, validator=_positive)
    inter_op_threads: int = attrs.field(default=1, validator=_positive)
    #: Let idle ORT worker threads spin. Off: they sleep, leaving cores to other engines.
    allow_spinning: bool = False
    #: Execution providers in preference order (TOML array; checked against the installed ORT).
    providers: tuple[str, ...] = attrs.field(default=("CPUExecutionProvider",), converter=_names)
    #: Cap of the CPU memory arena shared by every session, MiB (0 = no cap). A tensor whose
    #: shape is known at deploy and would not fit is refused then; at run time, an allocation
    #: over the cap fails the execution as ``trap`` instead of exhausting the machine.
    max_memory_mb: int = attrs.field(default=1024, validator=_not_negative)
    #: Let onnxruntime fold constant subgraphs when it builds a session. Off by default:
    #: folding runs at load time outside the memory arena, so a constant-shape
    #: ``ConstantOfShape`` that static inference missed could allocate past the cap there.
    constant_folding: bool = False
    #: ``SessionOptions.use_deterministic_compute``: same model and input, same output.
    deterministic_compute: bool = True
    #: At deploy, after every check passed, build a throw-away session so a model that
    #: onnxruntime cannot load (an op or opset it lacks) is refused then, not at first use.
    verify_load_at_deploy: bool = True
    #: Fee = fee_base + fee_per_node * nodes + ceil(fee_per_1k_element_nodes * elements * nodes
    #: / 1000), where nodes counts every node of every graph, subgraph and model-local
    #: function, and elements counts the input tensors' elements (docs/onnx.md).
    fee_base: int = attrs.field(default=1000, validator=_not_negative)
    fee_per_node: int = attrs.field(default=10, validator=_not_negative)
    fee_per_1k_element_nodes: int = attrs.field(default=10, validator=_not_negative)

    @property
    def max_memory_bytes(self) -> int:
        return self.max_memory_mb * 1024 * 1024
