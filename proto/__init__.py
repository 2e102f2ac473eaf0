"""declora.proto: the wire contract (declora.proto) and its generated modules."""

from declora.proto import declora_pb2 as pb
from declora.proto import declora_pb2_grpc as pb_grpc

__all__ = ["pb", "pb_grpc"]
