"""The lab's summary line of a node's gap to the centralized reference."""

from declora.node.scores import score_for


def test_a_tie_with_the_reference_reads_plus_zero_not_minus_zero() -> None:
    # `make run` on a tiny model ends level with the reference: it printed "-0.0 points"
    assert score_for("cls").gap_text(1 / 3, 1 / 3) == "+0.0 points"
    assert score_for("cls").gap_text(0.9996, 1.0) == "+0.0 points"  # rounds to nothing
    assert score_for("lm").gap_text(36.81, 36.81) == "+0.0% perplexity"


def test_gaps_keep_their_sign() -> None:
    assert score_for("cls").gap_text(0.97, 0.965) == "+0.5 points"
    assert score_for("cls").gap_text(0.90, 0.96) == "-6.0 points"
    assert score_for("lm").gap_text(40.0, 36.0) == "+11.1% perplexity"
