"""`declora-node predict` and `declora-node export`: use a saved adapter outside the swarm.

`predict` reads texts (a .txt file of one text per line, any data file training
reads, or standard input: plain lines, or JSON lines when the first line is an
object), loads the adapter with `load_adapter` and prints one line per text: the
label and its probability (classifier), or the mean token loss and perplexity
(causal LM); `--format json` prints one JSON object per line instead.

`export --merge` writes a plain transformers model folder (`export_merged`); without
`--merge` it copies the PEFT adapter folder (out of a checkpoint, say). A DECA full
model folder loads, predicts and copies the same way; `--merge` re-saves it as is.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

from declora.node.adapter_card import ADAPTER_CONFIG, ADAPTER_WEIGHTS, DECLORA_INFO, MODEL_CARD
from declora.node.adapter_io import AdapterError, adapter_folder, export_merged, perplexity
from declora.node.data import DataError, column_values, is_chat_turns, read_splits
from declora.node.data import read_texts as column_texts
from declora.node.models import ModelError

# what `predict` and `export` report as one line `error: ...` (exit 2)
USER_ERRORS = (AdapterError, DataError, ModelError)
STDIN = "<stdin>"
# chat turns given to predict: it scores texts; an LM adapter answers turns in `generate`
CHAT_HINT = (
    "predict reads one text a row: name a text column with --text-column; to answer "
    "conversations with an LM adapter use `declora-node generate ADAPTER --input FILE` "
    "(a 'messages' column)"
)


@contextmanager
def quiet_transformers() -> Iterator[None]:
    """No transformers progress bars or load reports while the command runs."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def _jsonl_texts(lines: list[str], text_column: str, source: str) -> list[str]:
    texts = []
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(
                f"{source}:{lineno}: not valid JSON: {exc.msg}", "one JSON object per line"
            ) from exc
        if not isinstance(row, dict):
            raise DataError(f"{source}:{lineno}: a {type(row).__name__}, not a JSON object")
        if text_column not in row:
            raise DataError(
                f"{source}:{lineno}: no text column {text_column!r}; columns are {sorted(row)}",
                "name the text column with --text-column",
            )
        value = row[text_column]
        if isinstance(value, (list, dict)):
            what = "chat turns" if is_chat_turns(value) else f"a {type(value).__name__}"
            raise DataError(
                f"{source}:{lineno}: column {text_column!r} holds {what}, not a text", CHAT_HINT
            )
        text = "" if value is None else str(value)
        if not text.strip():
            raise DataError(f"{source}:{lineno}: empty text in column {text_column!r}")
        texts.append(text)
    return texts


def text_lines(source: str, stdin: TextIO) -> tuple[list[str], str]:
    """The lines of UTF-8 text file `source` ("-": `stdin`) without a byte-order mark,
    and the name to report it by; `DataError` when it is not UTF-8."""
    label = STDIN if source == "-" else source
    try:
        if source == "-":
            return stdin.read().removeprefix("\ufeff").splitlines(), label
        return Path(source).read_text(encoding="utf-8-sig").splitlines(), label
    except UnicodeDecodeError as exc:
        raise DataError(f"{label}: not UTF-8 text ({exc.reason})", "save it as UTF-8") from exc


def _file_texts(path: Path, text_column: str) -> list[str]:
    """The texts of `text_column` of every split of `path`; chat turns are refused with
    a hint to `generate` (training's hint, --messages-column, is no predict option)."""
    texts: list[str] = []
    for where, ds in read_splits(path):
        if text_column in ds.column_names:
            values, _ = column_values(ds, where, text_column, "text", "--text-column")
            for number, value in enumerate(values, 1):
                if is_chat_turns(value):
                    raise DataError(
                        f"{where}: row {number}: column {text_column!r} holds chat turns, "
                        "not a text",
                        CHAT_HINT,
                    )
        texts.extend(column_texts(ds, where, text_column))
    return texts


def read_texts(source: str, text_column: str, stdin: TextIO) -> list[str]:
    """The texts to predict, in input order; `DataError` if there are none or they are bad.

    `source` "-" reads `stdin`: JSON lines when its first non-blank line starts with
    "{", else one text per non-blank line. A `.txt` file is one text per non-blank
    line; any other file goes through `data.read_splits` with `text_column` (labels ignored).
    """
    if source != "-":
        path = Path(source)
        if not path.exists():
            raise DataError(f"input file not found: {path}", "check the --input path")
        if path.suffix.lower() != ".txt":
            return _file_texts(path, text_column)
    lines, label = text_lines(source, stdin)
    first = next((line for line in lines if line.strip()), None)
    if first is None:
        raise DataError(f"{label}: no texts", "give one text per line, or JSON lines")
    if source == "-" and first.lstrip().startswith("{"):
        return _jsonl_texts(lines, text_column, label)
    return [line.strip() for line in lines if line.strip()]


def run_predict(
    adapter: Path,
    source: str,
    text_column: str,
    fmt: str,
    out: TextIO,
    stdin: TextIO,
    base: str | None = None,
    batch_size: int = 32,
) -> int:
    """Print one prediction line per text to `out`; returns how many texts there were."""
    from declora.node.adapter_io import load_adapter

    if batch_size < 1:
        raise DataError(f"--batch-size must be >= 1, got {batch_size}")
    adapter_folder(adapter)  # a wrong path fails before reading stdin
    texts = read_texts(source, text_column, stdin)  # bad input fails before the model loads
    with quiet_transformers():
        loaded = load_adapter(adapter, base=base)
    if loaded.task == "cls":
        for text, p in zip(texts, loaded.predict(texts, batch_size), strict=True):
            if fmt == "json":
                row = {"text": text, "label": p.label, "probability": p.probability}
                out.write(json.dumps({**row, "scores": p.scores}) + "\n")
            else:
                out.write(f"{p.label}\t{p.probability:.4f}\n")
    else:
        for text, loss in zip(texts, loaded.text_losses(texts, batch_size), strict=True):
            if fmt == "json":
                out.write(
                    json.dumps({"text": text, "loss": loss, "perplexity": perplexity(loss)}) + "\n"
                )
            else:
                out.write(f"{loss:.4f}\t{perplexity(loss):.2f}\n")
    return len(texts)


def _check_weights(path: Path) -> None:
    """AdapterError unless `path` is a readable safetensors file (a truncated or foreign
    one is refused)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), "np") as fh:
            fh.keys()
    except Exception as exc:  # safetensors raises its own error kinds
        raise AdapterError(f"{path} is not a readable safetensors file: {exc}") from exc


def run_export(adapter: Path, output: Path, merge: bool, base: str | None = None) -> str:
    """Write `output` (merged model, or a copy of the adapter); returns a summary line.
    An `output` that holds files is replaced whole, once the new one is written (the CLI
    refuses it without --force); an empty one is filled."""
    from declora.node.adapter import atomic_replace_dir, new_build_dir

    target = output
    if output.is_dir() and any(output.iterdir()):
        target = new_build_dir(output)  # written beside it, then moved into its place
    try:
        line = _export(adapter, target, merge, base)
        if target != output:
            atomic_replace_dir(target, output)
    finally:
        if target != output:
            shutil.rmtree(target, ignore_errors=True)
    return line.replace(str(target), str(output))


def _export(adapter: Path, output: Path, merge: bool, base: str | None) -> str:
    """`run_export` into `output`, a folder that does not exist or is empty."""
    if not merge:
        folder = adapter_folder(adapter)
        if output.exists() and (not output.is_dir() or any(output.iterdir())):
            raise AdapterError(f"{output} already exists", "choose a new --output")
        names: tuple[str, ...] = (ADAPTER_CONFIG, ADAPTER_WEIGHTS, DECLORA_INFO, MODEL_CARD)
        if not (folder / ADAPTER_CONFIG).is_file():  # a DECA full model folder: all of it
            names = tuple(sorted(p.name for p in folder.iterdir()))
        for name in names:  # checked first: a damaged folder is refused, nothing copied
            if name.endswith(".safetensors"):
                _check_weights(folder / name)
        output.mkdir(parents=True, exist_ok=True)
        for name in names:
            if (folder / name).is_file():
                shutil.copy2(folder / name, output / name)
        return f"copied the adapter {folder} to {output}"
    with quiet_transformers():
        out, loaded = export_merged(adapter, output, base=base)
    what = f"{len(loaded.labels)} labels" if loaded.task == "cls" else "causal LM"
    return f"wrote the merged model to {out} ({what})"
