"""Public home of the generated gRPC code, for clients:

    from twin.proto import digital_twin_pb2, digital_twin_pb2_grpc

(the seed's ``from polaris.proto import ...`` with the package renamed).
"""

from twin._proto import digital_twin_pb2, digital_twin_pb2_grpc

__all__ = ["digital_twin_pb2", "digital_twin_pb2_grpc"]
