"""A standard Open Inference Protocol client, unchanged but for the auth header:
``tritonclient.http`` against the live server, outputs equal to onnxruntime's."""

from __future__ import annotations

import numpy as np
import pytest
import tritonclient.http as oip
from tritonclient.utils import InferenceServerException

from .conftest import Live
from .test_oip import direct

X = np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4)


def test_tritonclient_infers_with_a_bearer_token(live: Live) -> None:
    client = oip.InferenceServerClient(live.url.removeprefix("http://"))
    headers = {"Authorization": f"Bearer {live.tokens['alice']}"}
    try:
        assert client.is_server_live() and client.is_server_ready()
        assert client.is_model_ready("clf", headers=headers)
        meta = client.get_model_metadata("clf", headers=headers)
        assert meta["inputs"][0]["shape"] == [-1, 4]
        tensor = oip.InferInput("x", list(X.shape), "FP32")
        tensor.set_data_from_numpy(X, binary_data=False)
        wanted = [oip.InferRequestedOutput("y", binary_data=False)]
        result = client.infer("clf", [tensor], outputs=wanted, request_id="t-1",
                              headers=headers)
        assert result.get_response()["id"] == "t-1"
        np.testing.assert_array_equal(result.as_numpy("y"), direct(live.models[1], X))
        older = client.infer("clf", [tensor], model_version="1", outputs=wanted,
                             headers=headers)
        np.testing.assert_array_equal(older.as_numpy("y"), direct(live.models[0], X))
        with pytest.raises(InferenceServerException, match="not an active key"):
            client.infer("clf", [tensor], outputs=wanted,
                         headers={"Authorization": "Bearer crd_nope"})
    finally:
        client.close()
