"""Regenerate the committed gRPC/protobuf modules from declora.proto.

Run `python -m declora.proto.codegen` (needs grpcio-tools, a dev dependency). The
test suite calls `generate()` into a temporary folder and compares, so committed code
that no longer matches the .proto fails CI.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
GENERATED = ("declora_pb2.py", "declora_pb2.pyi", "declora_pb2_grpc.py")


def generate(out_dir: Path) -> None:
    """Write the generated modules for `declora.proto` into `out_dir`."""
    from grpc_tools import protoc

    with tempfile.TemporaryDirectory() as tmp:
        args = [
            "protoc",
            f"-Ideclora/proto={HERE}",
            f"-I{Path(protoc.__file__).parent / '_proto'}",
            f"--python_out={tmp}",
            f"--pyi_out={tmp}",
            f"--grpc_python_out={tmp}",
            "declora/proto/declora.proto",
        ]
        if protoc.main(args) != 0:
            raise RuntimeError("protoc failed on declora.proto")
        out_dir.mkdir(parents=True, exist_ok=True)
        for name in GENERATED:
            shutil.copyfile(Path(tmp) / "declora" / "proto" / name, out_dir / name)


if __name__ == "__main__":
    generate(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE)
