"""This node's fingerprint and recipe have one owner, `Admission`: the Hello it sends
(`Handshaker.hello`) states what its checks of a peer's Hello compare against, so the
two can never drift apart. Before, `Handshaker` and `Admission` each kept a copy."""

from __future__ import annotations

from pathlib import Path

from test_daemon_parts import pair


def test_the_hello_states_what_admission_checks(synthetic_jsonl: Path) -> None:
    _, (a, b) = pair(synthetic_jsonl)
    handshaker = a.handshaker
    assert "fingerprint" not in vars(handshaker) and "recipe" not in vars(handshaker)
    handshaker.admission.fingerprint = "f" * 16
    handshaker.admission.recipe = {**handshaker.admission.recipe, "rank": "99"}
    hello = handshaker.hello()
    assert hello.fingerprint == "f" * 16 and hello.recipe["rank"] == "99"
    assert handshaker.admission.check(b.handshaker.hello()).startswith(
        "the swarm's recipe differs: --rank is"
    )
    # b, told a's Hello, names the same difference from its side
    assert "--rank is '99' at 'a', '4' at 'b'" in b.handshaker.admission.check(hello)
