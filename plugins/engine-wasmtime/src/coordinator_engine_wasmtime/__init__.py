"""coordinator plugin: engine-wasmtime."""
