"""The committed generated code matches declora.proto, and the contract's basics hold."""

from __future__ import annotations

from pathlib import Path

from declora.proto import codegen, pb, pb_grpc


def test_generated_code_is_current(tmp_path: Path) -> None:
    codegen.generate(tmp_path)
    for name in codegen.GENERATED:
        committed = (codegen.HERE / name).read_text()
        fresh = (tmp_path / name).read_text()
        assert committed == fresh, f"proto/{name} is stale: run `make proto` and commit"


def test_service_and_messages() -> None:
    service = pb.DESCRIPTOR.services_by_name["Swarm"]
    assert service.full_name == "declora.v1.Swarm"
    names = {"Handshake", "Push", "Pull", "Leave", "Status", "Revocations"}
    assert {m.name for m in service.methods} == names
    push = service.methods_by_name["Push"]
    assert push.client_streaming and not push.server_streaming
    assert service.methods_by_name["Pull"].server_streaming
    assert service.methods_by_name["Revocations"].server_streaming
    hello = pb.Hello(protocol_version=1, node_id="a", swarm_id="s", fingerprint="f", round=3)
    assert pb.Hello.FromString(hello.SerializeToString()) == hello
    assert hasattr(pb_grpc, "SwarmStub") and hasattr(pb_grpc, "add_SwarmServicer_to_server")
