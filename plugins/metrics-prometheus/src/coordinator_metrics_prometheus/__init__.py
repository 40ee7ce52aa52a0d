"""coordinator plugin: metrics-prometheus."""
