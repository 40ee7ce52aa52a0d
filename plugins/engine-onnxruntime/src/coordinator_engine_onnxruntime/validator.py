"""The deploy-time validator: the model policy of ``policy.check_model`` plus a trial load.

Registered as a ``ValidatorRecord`` so it shows up, is ordered and is audited like every
other security validator. It runs after the engine's ``inspect`` (which only parses) and
before the bytes are stored.
"""

from __future__ import annotations

from pathlib import Path

from coordinator_engine_onnxruntime.config import OnnxConfig
from coordinator_engine_onnxruntime.policy import check_model
from coordinator_engine_onnxruntime.sessions import build_session
from coordinator_hookspecs import DeployRequest


class ModelPolicyValidator:
    """Refuses ONNX models that are malformed (``InvalidRequest``) or break the policy
    (``SecurityRejected``: size, domains, denied ops, external data, static tensor size)."""

    def __init__(self, cfg: OnnxConfig, external_dir: Path | None = None) -> None:
        self.cfg = cfg
        self.external_dir = external_dir if cfg.allow_external_data else None

    def validate_deploy(self, deploy: DeployRequest) -> None:
        """Admit (return None) or raise; see ``policy.check_model`` for the order of checks."""
        if deploy.resource_type != "onnx":
            return None
        model, embedded = check_model(deploy.code, self.cfg, self.external_dir)
        if self.cfg.verify_load_at_deploy:
            # Every check passed, so onnxruntime may now see the bytes: a model it cannot load
            # (an op or opset this build lacks) is refused at deploy, not at first use. The
            # session is dropped; the engine builds its own on first execution.
            build_session(model.SerializeToString() if embedded else bytes(deploy.code),
                          self.cfg)
        return None
