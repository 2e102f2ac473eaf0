"""`predict --input` a labelled file reports the adapter's accuracy on it (one stderr
line; json rows carry the given label), and rows without labels get no line."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from adapter_helpers import save_trained_tiny
from conftest import make_synthetic

from declora.cli.predict import run_predict

DATA = make_synthetic(40, seed=3)


@pytest.fixture(scope="module")
def adapter(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("acc") / "cls"
    save_trained_tiny(path, steps=2)
    return path


def _write(path: Path, labels: list[str | None]) -> Path:
    rows = [{"text": t, "label": g} for t, g in zip(DATA.texts, labels, strict=True)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _predict(
    adapter: Path, source: Path | str, fmt: str = "text", stdin: str = ""
) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    run_predict(adapter, str(source), "text", fmt, out, io.StringIO(stdin), err=err)
    return out.getvalue(), err.getvalue()


def test_a_labelled_file_gets_its_accuracy(adapter: Path, tmp_path: Path) -> None:
    """Every row labelled, two with a label the adapter does not know: the accuracy is
    over the other 38, and the unknown label is named."""
    given = [DATA.label_names[i] for i in DATA.labels]
    given[0] = given[1] = "zulu"
    out, err = _predict(adapter, _write(tmp_path / "test.jsonl", given))
    predicted = [line.split("\t")[0] for line in out.splitlines()]
    right = sum(p == g for p, g in zip(predicted, given, strict=True))
    assert err == (
        f"accuracy {right / 38:.3f} on 38 labelled rows "
        "(1 label the adapter does not know, 2 rows left out: 'zulu')\n"
    )
    assert len(predicted) == 40  # the summary is not on stdout


def test_json_rows_carry_the_given_label(adapter: Path, tmp_path: Path) -> None:
    given = [DATA.label_names[i] for i in DATA.labels]
    given[0] = "zulu"
    out, err = _predict(adapter, _write(tmp_path / "test.jsonl", given), fmt="json")
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["given_label"] for r in rows] == given
    assert rows[0]["correct"] is None
    assert [r["correct"] for r in rows[1:]] == [r["label"] == r["given_label"] for r in rows[1:]]
    right = sum(bool(r["correct"]) for r in rows)
    assert err == (
        f"accuracy {right / 39:.3f} on 39 labelled rows "
        "(1 label the adapter does not know, 1 row left out: 'zulu')\n"
    )


def test_labelled_json_lines_on_stdin_get_their_accuracy(adapter: Path) -> None:
    lines = [
        json.dumps({"text": t, "label": DATA.label_names[i]})
        for t, i in zip(DATA.texts, DATA.labels, strict=True)
    ]
    _, err = _predict(adapter, "-", stdin="\n".join(lines) + "\n")
    assert err.startswith("accuracy ") and "on 40 labelled rows\n" in err


@pytest.mark.parametrize("missing", ["one row", "no column", "lines"])
def test_rows_without_labels_get_no_line(adapter: Path, tmp_path: Path, missing: str) -> None:
    """Guard: a row without a label (or no label column, or plain lines): no summary."""
    given: list[str | None] = [DATA.label_names[i] for i in DATA.labels]
    if missing == "one row":
        given[5] = None
        source = _write(tmp_path / "test.jsonl", given)
    elif missing == "no column":
        source = tmp_path / "texts.jsonl"
        source.write_text("".join(json.dumps({"text": t}) + "\n" for t in DATA.texts))
    else:
        source = tmp_path / "texts.txt"
        source.write_text("\n".join(DATA.texts) + "\n")
    out, err = _predict(adapter, source)
    assert err == "" and len(out.splitlines()) == 40


def test_a_file_of_only_unknown_labels_says_so(adapter: Path, tmp_path: Path) -> None:
    _, err = _predict(adapter, _write(tmp_path / "test.jsonl", ["pos", "neg"] * 20))
    assert err == (
        "no accuracy: none of the 40 labelled rows has a label the adapter knows "
        "(2 labels the adapter does not know, 40 rows left out: 'neg', 'pos')\n"
    )


def test_the_cli_reads_labels_from_label_column(adapter: Path, tmp_path: Path) -> None:
    """`predict --label-column category` on a CSV: the summary on stderr, not stdout."""
    from typer.testing import CliRunner

    from declora.cli.app import app

    path = tmp_path / "test.csv"
    names = [DATA.label_names[i] for i in DATA.labels]
    path.write_text(
        "text,category\n" + "".join(f"{t},{g}\n" for t, g in zip(DATA.texts, names, strict=True))
    )
    res = CliRunner().invoke(
        app, ["predict", str(adapter), "-i", str(path), "--label-column", "category"]
    )
    assert res.exit_code == 0, res.output
    assert len(res.stdout.splitlines()) == 40
    assert res.stderr.startswith("accuracy ") and "on 40 labelled rows" in res.stderr


def test_a_saved_dataset_s_class_label_ids_are_its_names(adapter: Path, tmp_path: Path) -> None:
    """A save_to_disk folder whose label column is a ClassLabel (ids 0..4): the ids are
    read as their names, as training reads them."""
    import datasets

    features = datasets.Features(
        {
            "text": datasets.Value("string"),
            "label": datasets.ClassLabel(names=list(DATA.label_names)),
        }
    )
    rows = {"text": list(DATA.texts), "label": [int(i) for i in DATA.labels]}
    datasets.Dataset.from_dict(rows, features=features).save_to_disk(str(tmp_path / "saved"))
    out, err = _predict(adapter, tmp_path / "saved")
    predicted = [line.split("\t")[0] for line in out.splitlines()]
    right = sum(p == DATA.label_names[i] for p, i in zip(predicted, DATA.labels, strict=True))
    assert err == f"accuracy {right / 40:.3f} on 40 labelled rows\n"
