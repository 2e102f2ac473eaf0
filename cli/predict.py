"""`declora-node predict` and `declora-node export`: use a saved adapter outside the swarm.

`predict` reads texts (a .txt file of one text per line, any data file training
reads, or standard input: plain lines, or JSON lines when the first line is an
object), loads the adapter with `load_adapter` and prints one line per text: the
label and its probability (classifier), or the mean token loss and perplexity
(causal LM), tab-separated; `--format json` prints one JSON object per line instead.
Line input (.txt, stdin) gives one output line per input line, and a data file one per
row, in order, so `paste` lines them up: a blank line, or a row or JSON line whose text
is empty or null, gives an empty line (json: its keys with null values).
Input that is not UTF-8, on stdin as in a file, is a `DataError`. A classifier's input
whose every row has a label (--label-column; data files and JSON lines) gets its accuracy
in one line on stderr, and in json each row its "given_label" and "correct".

`export --merge` writes a plain transformers model folder (`export_merged`); without
`--merge` it copies the PEFT adapter folder (out of a checkpoint, say). A DECA full
model folder loads, predicts and copies the same way; `--merge` re-saves it as is.
Its output may replace an earlier export, never what it reads (the adapter, its
checkpoint root, a local base model), a declora run (`run_folder.earlier_run`) or a
folder another process holds (`run_folder.hold`: a running node's) or anything in them.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import sys
from pathlib import Path
from typing import Any, TextIO

from declora.node.adapter_card import (
    ADAPTER_CONFIG,
    ADAPTER_WEIGHTS,
    DECLORA_INFO,
    MODEL_CARD,
    model_card,
    portable_base,
)
from declora.node.adapter_io import AdapterError, adapter_folder, export_merged, perplexity
from declora.node.data import column_hint, column_values, is_chat_turns, same_columns
from declora.node.data import read_texts as column_texts
from declora.node.data_files import DataError, read_splits, utf8_text
from declora.node.data_labels import is_nan, label_name
from declora.node.model_source import ModelError
from declora.node.models import quiet_transformers
from declora.node.recipe_fields import MAX_BATCH_SIZE
from declora.node.run_folder import FolderBusy, earlier_run, held, hold, release

_log = logging.getLogger(__name__)

# what `predict` and `export` report as one line `error: ...` (exit 2)
USER_ERRORS = (AdapterError, DataError, ModelError)
STDIN = "<stdin>"
# where a text-mode file ends a line; str.splitlines also splits at \f, \x1c or U+2028,
# which `paste` and `wc -l` do not
LINE_END = re.compile(r"\r\n|\r|\n")
# chat turns given to predict: it scores texts; an LM adapter answers turns in `generate`
CHAT_HINT = (
    "predict reads one text a row: name a text column with --text-column; to answer "
    "conversations with an LM adapter use `declora-node generate ADAPTER --input FILE` "
    "(a 'messages' column)"
)


CHAT_COLUMNS = ("messages", "conversations")  # a chat file's columns (lm_data's defaults)
TEXTS_HINT = "give one text per line, or JSON lines"
LABEL_COLUMN = "label"  # the given labels' column when --label-column is not given
LABEL_COLUMN_HINT = "name the column of given labels with --label-column, or leave it out"


def _jsonl_texts(
    lines: list[str], text_column: str, source: str, label_column: str | None
) -> tuple[list[str], list[str | None]]:
    """The texts of JSON lines `lines` and each one's label in `label_column` (None
    where it has none; "label" when None: a named one no line has is a `DataError`)."""
    texts: list[str] = []
    given: list[str | None] = []
    named = label_column is not None
    label_column = label_column or LABEL_COLUMN
    seen = False
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            texts.append("")  # a blank line keeps its place in the output
            given.append(None)
            continue
        try:
            row = json.loads(line)
        except (json.JSONDecodeError, RecursionError) as exc:
            what = exc.msg if isinstance(exc, json.JSONDecodeError) else "nested too deeply"
            raise DataError(
                f"{source}:{lineno}: not valid JSON: {what}", "one JSON object per line"
            ) from exc
        if not isinstance(row, dict):
            raise DataError(
                f"{source}:{lineno}: a {type(row).__name__}, not a JSON object",
                f"one JSON object a line, the text in column {text_column!r}: "
                f"{json.dumps({text_column: 'a text to score'})}",
            )
        if text_column not in row:
            raise DataError(
                f"{source}:{lineno}: no text column {text_column!r}; columns are {sorted(row)}",
                column_hint(list(row), "text", text_column, "--text-column"),
            )
        value = row[text_column]
        if isinstance(value, (list, dict)):
            what = "chat turns" if is_chat_turns(value) else f"a {type(value).__name__}"
            raise DataError(
                f"{source}:{lineno}: column {text_column!r} holds {what}, not a text", CHAT_HINT
            )
        text = "" if value is None else str(value)
        texts.append(text if text.strip() else "")  # keeps its place, like a blank line
        given.append(_given(row.get(label_column)))
        seen = seen or label_column in row
    if named and not seen:
        raise DataError(
            f"{source}: no label column {label_column!r} in any line", LABEL_COLUMN_HINT
        )
    return texts, given


def text_lines(source: str, stdin: TextIO | None) -> tuple[list[str], str]:
    """The lines of UTF-8 text file `source` ("-": `stdin`, read as bytes when it has a
    buffer) without a byte-order mark, split at \\n, \\r\\n or \\r only, and the name to
    report it by; `DataError` when it is not UTF-8 (`data_files.utf8_text`: UTF-16/32
    named as such; stdin as a file: never surrogates), cannot be read (a folder named
    .txt) or stdin is closed (None)."""
    if source != "-":
        try:
            raw = Path(source).read_bytes()
        except OSError as exc:  # a folder, no permission: a traceback before
            why = exc.strerror or type(exc).__name__
            raise DataError(f"{source} cannot be read: {why}", "give a text file") from exc
        return _split(utf8_text(source, raw)), source
    if stdin is None:  # the shell closed it (`<&-`): Python has no sys.stdin
        raise DataError(
            f"{STDIN}: standard input is closed", "pipe the input in, or give a file with --input"
        )
    hint = "convert it with `iconv -f CP1252 -t UTF-8` (from Latin-1 or Windows text)"
    if (buffer := getattr(stdin, "buffer", None)) is not None:
        raw = buffer.read()
    else:  # a text stream: bytes it let through as surrogates are encoded back
        try:
            raw = stdin.read().encode("utf-8", "surrogateescape")
        except UnicodeEncodeError as exc:
            raise DataError(f"{STDIN}: not UTF-8 text", hint) from exc
    return _split(utf8_text(STDIN, raw, hint)), STDIN


def _split(text: str) -> list[str]:
    lines = LINE_END.split(text)
    return lines[:-1] if lines[-1] == "" else lines


def _file_texts(
    path: Path, text_column: str, label_column: str | None
) -> tuple[list[str], list[str | None]]:
    """The texts of `text_column` of every split of `path`, split after split (a warning
    names them when there are several), and each row's given label in `label_column`
    (`given_labels`); chat turns are refused with a hint to `generate` (training's
    hint, --messages-column, is no predict option)."""
    texts: list[str] = []
    given: list[str | None] = []
    splits = read_splits(path)
    if len(splits) > 1:  # a saved DatasetDict: say whose rows the lines are
        named = [
            f"{where.removeprefix(f'{path} ')} ({ds.num_rows} row{'s' * (ds.num_rows != 1)})"
            for where, ds in splits
        ]
        _log.warning(
            "%s holds %d splits: one line a row of each, in this order: %s",
            path, len(splits), ", ".join(named),
        )  # fmt: skip
    for where, ds in splits:
        chats = [c for c in ds.column_names if c in CHAT_COLUMNS]
        if text_column not in ds.column_names and chats:
            raise DataError(
                f"{where}: no text column {text_column!r}; its {chats[0]!r} column holds "
                "conversations",
                CHAT_HINT,
            )
        if text_column in ds.column_names:
            values, _ = column_values(ds, where, text_column, "text", "--text-column")
            for number, value in enumerate(values, 1):
                if is_chat_turns(value):
                    raise DataError(
                        f"{where}: row {number}: column {text_column!r} holds chat turns, "
                        "not a text",
                        CHAT_HINT,
                    )
        texts.extend(column_texts(ds, where, text_column, blank=True))
        given.extend(given_labels(ds, where, label_column))
    if not any(texts):
        raise DataError(f"{path}: no texts (every row's {text_column!r} is empty)", TEXTS_HINT)
    return texts, given


def given_labels(ds: Any, where: str, label_column: str | None) -> list[str | None]:
    """Each row's label in `label_column` as training names it (`label_name`; a
    ClassLabel id its name); None for a row without one (a null, NaN, empty or
    non-scalar value, an id outside the names). `label_column` None reads "label" where
    there is one; a named column that is missing is a `DataError`, as for training."""
    if label_column is None:
        if LABEL_COLUMN not in ds.column_names:
            return [None] * ds.num_rows
        label_column = LABEL_COLUMN
    values, feature = column_values(ds, where, label_column, "label", "--label-column")
    names = getattr(feature, "names", None)
    given: list[str | None] = []
    for value in values:
        if names is not None and isinstance(value, int) and not isinstance(value, bool):
            value = names[value] if 0 <= value < len(names) else None
        given.append(_given(value))
    return given


def _given(value: Any) -> str | None:
    """A label value's class name as training reads it (`label_name`), or None for no
    label (null, empty, NaN, a list or a mapping)."""
    if value is None or isinstance(value, (list, dict)):
        return None
    name = label_name(value)
    return name if name and not is_nan(name) else None


def accuracy_line(predicted: list[str], given: list[str], known: tuple[str, ...]) -> str:
    """The summary of `predicted` labels against the `given` ones (every scored row's):
    accuracy over the rows whose label the adapter `known`s, the others named (five at
    most, each cut to 40 characters)."""
    unknown = sorted({g for g in given if g not in known})
    kept = [(p, g) for p, g in zip(predicted, given, strict=True) if g in known]
    shown = ", ".join(repr(u[:40]) for u in unknown[:5]) + (", ..." if len(unknown) > 5 else "")
    left = (
        f" ({_count(len(unknown), 'label')} the adapter does not know, "
        f"{_count(len(given) - len(kept), 'row')} left out: {shown})"
        if unknown
        else ""
    )
    if not kept:
        return (
            f"no accuracy: none of the {_count(len(given), 'labelled row')} has a label the "
            f"adapter knows{left}"
        )
    right = sum(p == g for p, g in kept)
    return f"accuracy {right / len(kept):.3f} on {_count(len(kept), 'labelled row')}{left}"


def _count(n: int, word: str) -> str:
    return f"{n} {word}{'s' * (n != 1)}"


def input_path(source: str) -> Path:
    """--input `source` as a path; `DataError` when it is empty or only spaces
    (`option_values.blank_path`: not the current folder)."""
    from declora.node.option_values import blank_path

    if blank_path(source):
        raise DataError("--input is empty", "give a file, or - for standard input")
    return Path(source)


def read_rows(
    source: str, text_column: str, stdin: TextIO | None, label_column: str | None = None
) -> tuple[list[str], list[str | None]]:
    """The texts to predict, in input order, and each one's given label (a data file's
    or JSON lines' `label_column`, `given_labels`; None for lines, which a named
    `label_column` refuses, as one equal to `text_column`); "" for a blank line or a row
    whose text is empty or null, which keeps its place (`run_predict` writes an empty
    line for it); `DataError` if there are none or they are bad.

    `source` "-" reads `stdin`: JSON lines when its first non-blank line starts with
    "{", else one text per line (stripped). A `.txt` file is one text per line; any
    other file goes through `data_files.read_splits` with `text_column`.
    """
    same_columns(text_column, label_column)
    if source != "-":
        path = input_path(source)
        if not path.exists():
            raise DataError(f"input file not found: {path}", "check the --input path")
        if path.suffix.lower() != ".txt":
            return _file_texts(path, text_column, label_column)
    lines, label = text_lines(source, stdin)
    first = next((line for line in lines if line.strip()), None)
    if first is None:
        raise DataError(f"{label}: no texts", TEXTS_HINT)
    if source == "-" and first.lstrip().startswith("{"):
        texts, given = _jsonl_texts(lines, text_column, label, label_column)
        if not any(texts):
            raise DataError(
                f"{label}: no texts (every line's {text_column!r} is empty)", TEXTS_HINT
            )
        return texts, given
    if label_column is not None:
        raise DataError(
            f"{label}: --label-column {label_column!r} names a column, but lines have none",
            "give a data file or JSON lines with that column, or leave --label-column out",
        )
    return [line.strip() for line in lines], [None] * len(lines)


def run_predict(
    adapter: Path,
    source: str,
    text_column: str,
    fmt: str,
    out: TextIO,
    stdin: TextIO | None,
    base: str | None = None,
    batch_size: int = 32,
    *,
    label_column: str | None = None,
    err: TextIO | None = None,
) -> int:
    """Print one prediction line per text to `out`, in input order; a blank line of the
    input (`read_rows`' "") gets an empty line (json: its keys with null values).
    A classifier's input whose every scored row has a label (`given_labels`) gets one
    summary line on `err` (`accuracy_line`), and in json each row its "given_label"
    and whether it is "correct" (null for a label the adapter does not know).
    Returns how many texts it scored."""
    from declora.node.adapter_io import load_adapter

    if not 1 <= batch_size <= MAX_BATCH_SIZE:
        raise DataError(
            f"--batch-size must be 1 to {MAX_BATCH_SIZE:,}, got {batch_size}",
            "e.g. --batch-size 32 (the default)",
        )
    adapter_folder(adapter)  # a wrong path fails before reading stdin
    # bad input fails before the model loads
    texts, given = read_rows(source, text_column, stdin, label_column)
    scored = [text for text in texts if text]
    labelled = [g for t, g in zip(texts, given, strict=True) if t]
    with quiet_transformers():
        loaded = load_adapter(adapter, base=base)
    rows: list[tuple[dict[str, object], str]] = []  # (json row, text line) per scored text
    summary = None
    if loaded.task == "cls":
        measured = None not in labelled
        predicted = loaded.predict(scored, batch_size)
        for text, p, g in zip(scored, predicted, labelled, strict=True):
            row: dict[str, object] = {"text": text, "label": p.label, "probability": p.probability}
            row["scores"] = p.scores
            if measured:
                row |= {"given_label": g, "correct": p.label == g if g in loaded.labels else None}
            rows.append((row, f"{p.label}\t{p.probability:.4f}"))
        blank: dict[str, object] = {"label": None, "probability": None, "scores": None}
        if measured:
            blank |= {"given_label": None, "correct": None}
            gold = [g for g in labelled if g is not None]
            summary = accuracy_line([p.label for p in predicted], gold, loaded.labels)
    else:
        for text, loss in zip(scored, loaded.text_losses(scored, batch_size), strict=True):
            row = {"text": text, "loss": loss, "perplexity": perplexity(loss)}
            rows.append((row, f"{loss:.4f}\t{perplexity(loss):.2f}"))
        blank = {"loss": None, "perplexity": None}
    done = iter(rows)
    for text in texts:
        row, line = next(done) if text else ({"text": "", **blank}, "")
        out.write((json.dumps(row) if fmt == "json" else line) + "\n")
    if summary is not None:
        out.flush()
        print(summary, file=err or sys.stderr)
    return len(scored)


def _check_weights(path: Path) -> None:
    """AdapterError unless `path` is a readable safetensors file (a truncated or foreign
    one is refused)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), "np") as fh:
            fh.keys()
    except Exception as exc:  # safetensors raises its own error kinds
        raise AdapterError(f"{path} is not a readable safetensors file: {exc}") from exc


def _holder(folder: Path) -> str | None:
    """Who else holds existing folder `folder` (`run_folder.hold`: a running node, a
    lab): "pid N" or "another process"; None when no other process does."""
    if held(folder):
        return None
    try:
        if hold(folder):
            release(folder)
    except FolderBusy as exc:
        return f"pid {exc.pid}" if exc.pid else "another process"
    except OSError:  # unreadable: not a folder a node could hold
        pass
    return None


def _sources(adapter: Path, base: str | None) -> list[Path]:
    """The folders `export` reads: `adapter` as given, its adapter folder, and the base
    model when it is a local folder (`base`, or the one its declora.json records)."""
    folder = adapter_folder(adapter)
    found = [adapter, folder]
    try:
        info = json.loads((folder / DECLORA_INFO).read_text())
        names = [base, (info.get("base") or {}).get("local_path"), info["spec"].get("model")]
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        names = [base]  # no readable declora.json: `_export` says what is wrong
    found += [Path(n).expanduser() for n in names if isinstance(n, str) and n]
    return [p for p in found if p.exists()]


def check_export_output(adapter: Path, output: Path, base: str | None = None) -> None:
    """`AdapterError` (nothing written) when `export` may not replace `output`: it, or a
    folder it is in, is held by another process (a running node's --checkpoint-dir); it
    is, holds or is inside a folder export reads (`_sources`); it holds a declora run
    (`run_folder.earlier_run`: LATEST, ckpt-*, rounds.jsonl) or is one of a run's parts.
    --force replaces an earlier export, never a run nor what the user keeps with it."""
    out = output.resolve()
    for folder in (out, *out.parents):
        who = _holder(folder) if folder.is_dir() else None
        if who:
            where = "is" if folder == out else f"is inside {folder}, which is"
            raise AdapterError(
                f"--output {output} {where} held by {who} (a running node's folder?)",
                "stop that process first, or choose another --output",
            )
    for source in _sources(adapter, base):
        src = source.resolve()
        if out == src or out in src.parents or src in out.parents:
            how = "is" if out == src else "holds" if out in src.parents else "is inside"
            raise AdapterError(
                f"--output {output} {how} {source}, which export reads",
                f"choose an --output outside {source}",
            )
    run = earlier_run(out)
    if run or out.name in earlier_run(out.parent):
        what = f"holds a declora run ({', '.join(run[:3])})" if run else "is part of one"
        raise AdapterError(
            f"--output {output} {what}: --force replaces an earlier export, not a run",
            "choose another --output (delete the run yourself if you mean to)",
        )


def run_export(adapter: Path, output: Path, merge: bool, base: str | None = None) -> str:
    """Write `output` (merged model, or a copy of the adapter); returns a summary line.
    An `output` that holds files is replaced whole, once the new one is written (the CLI
    refuses it without --force); an empty one is filled. `check_export_output` first:
    what export reads, a declora run or another process's folder is never replaced."""
    from declora.node.adapter import atomic_replace_dir, new_build_dir

    check_export_output(adapter, output, base)
    target = output
    if output.is_dir() and any(output.iterdir()):
        target = new_build_dir(output)  # written beside it, then moved into its place
    try:
        line = _export(adapter, target, merge, base, final=output)
        if target != output:
            atomic_replace_dir(target, output)
    finally:
        if target != output:
            shutil.rmtree(target, ignore_errors=True)
    return line.replace(str(target), str(output))


def _describe_copy(output: Path, final: Path) -> None:
    """The copied adapter in `output` (to be moved to `final`): its model card loads
    `final`, not the folder it was copied from; its config names the base portably."""
    info_file = output / DECLORA_INFO
    if not all((output / n).is_file() for n in (MODEL_CARD, DECLORA_INFO)):
        return  # not written by declora, or a DECA folder saved before it had a card
    try:
        info = json.loads(info_file.read_text())
    except json.JSONDecodeError:
        return  # copied as it is: load_adapter reports it
    if not isinstance(info, dict):
        return
    if isinstance(info.get("base"), dict):
        portable_base(output / ADAPTER_CONFIG, info["base"])
    (output / MODEL_CARD).write_text(model_card(info, str(final)))


def _export(adapter: Path, output: Path, merge: bool, base: str | None, final: Path) -> str:
    """`run_export` into `output`, a folder that does not exist or is empty, that will be
    moved to `final`: a copied adapter's card names `final`, its config a base that loads
    from any directory (`portable_base`)."""
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
        _describe_copy(output, final)
        return f"copied the adapter {folder} to {output}"
    with quiet_transformers():
        out, loaded = export_merged(adapter, output, base=base)
    what = f"{len(loaded.labels)} labels" if loaded.task == "cls" else "causal LM"
    return f"wrote the merged model to {out} ({what})"
