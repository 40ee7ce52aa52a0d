"""coordinator plugin: engine-onnxruntime."""
