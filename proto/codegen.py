"""Regenerate the committed gRPC/protobuf modules from declora.proto.

Run `python -m declora.proto.codegen [OUT_DIR]` (needs grpcio-tools, a dev dependency;
`make proto`). Without OUT_DIR it writes next to declora.proto only in a source
checkout (the folder `proto/` beside the project's pyproject.toml); an installed copy
(site-packages) is refused with exit 2, nothing written. The test suite calls
`generate()` into a temporary folder and compares, so committed code that no longer
matches the .proto fails CI.
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


def in_checkout(folder: Path = HERE) -> bool:
    """Whether `folder` is a source checkout's `proto/` (beside its pyproject.toml)."""
    return folder.name == "proto" and (folder.parent / "pyproject.toml").is_file()


def main(argv: list[str]) -> int:
    """`python -m declora.proto.codegen [OUT_DIR]`: its exit code (2: refused)."""
    if len(argv) > 1 or (argv and not argv[0]) or (not argv and not in_checkout()):
        why = (
            "more than one argument"
            if len(argv) > 1
            else "an empty OUT_DIR (not the current folder)"
            if argv
            else f"no OUT_DIR, and {HERE} is an installed copy, not a source checkout"
        )
        print(f"error: {why}", file=sys.stderr)
        print(
            "hint: give the folder to write into: python -m declora.proto.codegen OUT_DIR",
            file=sys.stderr,
        )
        return 2
    generate(Path(argv[0]) if argv else HERE)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
