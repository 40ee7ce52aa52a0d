"""The Open Inference Protocol v2 over gRPC (``inference.GRPCInferenceService``).

``inference.proto`` is the service definition; ``inference_pb2*.py`` are generated from it by
``scripts/gen_grpc.py`` and checked in. Importing this package's modules registers the
``inference.*`` messages in protobuf's default descriptor pool, where another copy of the same
protocol (``tritonclient.grpc``'s) cannot also be registered: ``coordinator serve`` imports it
only when ``--grpc-port`` is given, and a process that embeds a client should not import it.
"""
