"""A minimal MLServer runtime for ONNX models: the other side of the benchmark's comparison.

MLServer ships no onnxruntime runtime, so the benchmark brings this one: ``load`` opens an
``onnxruntime.InferenceSession`` on the model file named in ``model-settings.json``
(``parameters.uri``) with the same thread counts the coordinator's ONNX engine sets, and
``predict`` decodes each v2 request input with MLServer's own ``NumpyCodec``, runs the
session and encodes every output back with it. Nothing else: no batching, no extra checks,
so MLServer is measured at its lightest. It is imported only inside the benchmark's own
MLServer virtual environment (``.bench-venv/mlserver``), never by the project.
"""

from __future__ import annotations

from pathlib import Path

import onnxruntime as ort
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse
from mlserver.utils import get_model_uri


class OnnxRuntimeModel(MLModel):
    """One ONNX model served by onnxruntime, inputs and outputs through ``NumpyCodec``."""

    async def load(self) -> bool:
        path = Path(await get_model_uri(self._settings))
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self._session = ort.InferenceSession(str(path), options,
                                             providers=["CPUExecutionProvider"])
        self._outputs = [o.name for o in self._session.get_outputs()]
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        feeds = {i.name: NumpyCodec.decode_input(i) for i in payload.inputs}
        results = self._session.run(self._outputs, feeds)
        return InferenceResponse(
            model_name=self.name, model_version=self.version, id=payload.id,
            outputs=[NumpyCodec.encode_output(name, value)
                     for name, value in zip(self._outputs, results, strict=True)])
