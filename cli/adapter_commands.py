"""`predict`, `generate` and `export`: use a saved adapter (classify texts, continue
prompts, or write a model transformers loads on its own)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from declora.cli.checks import check_format, check_output
from declora.cli.exits import fail, fail_with, show_traceback
from declora.cli.flags import AdapterArg, BaseOpt, DebugOpt, ForceOpt


def predict(
    adapter: AdapterArg,
    input_: Annotated[
        str,
        typer.Option(
            "--input",
            "-i",
            help="A .txt (a text a line), .jsonl, .csv, .tsv or .parquet file; - stdin.",
        ),
    ] = "-",
    text_column: Annotated[str, typer.Option(help="The column that holds the texts.")] = "text",
    label_column: Annotated[
        str | None,
        typer.Option(
            help="The column of given labels (default: label, where there is one): when "
            "every row has one, the accuracy is printed to stderr (json: each row's "
            "given_label and correct).",
            show_default=False,
        ),
    ] = None,
    fmt: Annotated[
        str,
        typer.Option(
            "--format", help="text (tab-separated) or json (JSON Lines: one object a line)."
        ),
    ] = "text",
    base: BaseOpt = None,
    batch_size: Annotated[int, typer.Option(help="Texts per forward pass.")] = 32,
    debug: DebugOpt = False,
) -> None:
    """Classify texts with a saved adapter: one output line per input line, in order (a
    blank line gives an empty one): label and probability (an LM adapter: each text's
    mean token loss and perplexity). A file whose every row has a label gets its
    accuracy on stderr."""
    from declora.cli.predict import USER_ERRORS, run_predict

    check_format(fmt)
    try:
        run_predict(
            adapter,
            input_,
            text_column,
            fmt,
            sys.stdout,
            sys.stdin,
            base,
            batch_size,
            label_column=label_column,
            err=sys.stderr,
        )
    except USER_ERRORS as exc:
        show_traceback(debug)
        fail_with(exc)


def generate(
    adapter: AdapterArg,
    prompt: Annotated[
        str | None, typer.Option("--prompt", "-p", help="The text to continue.")
    ] = None,
    input_: Annotated[
        str | None,
        typer.Option(
            "--input",
            "-i",
            help="A file of prompts: .txt one a line; .jsonl, .csv, .tsv or .parquet with a "
            "prompt or messages column; - stdin (the default without --prompt).",
        ),
    ] = None,
    chat_template: Annotated[
        bool,
        typer.Option(
            "--chat-template/--no-chat-template",
            help="Render text prompts as one user turn (the chat template; without one, "
            "the plain rendering for an adapter trained on conversations); "
            "--no-chat-template sends them as they are.",
        ),
    ] = True,
    max_new_tokens: Annotated[int, typer.Option(help="Tokens to generate at most.")] = 128,
    temperature: Annotated[float, typer.Option(help="0 = greedy; > 0 samples.")] = 0.0,
    top_p: Annotated[
        float, typer.Option(help="Nucleus sampling mass (with temperature > 0).")
    ] = 1.0,
    seed: Annotated[int, typer.Option(help="Sampling seed (set before each prompt).")] = 0,
    fmt: Annotated[
        str,
        typer.Option(
            "--format", help="text (completions) or json (JSON Lines: one object a line)."
        ),
    ] = "text",
    base: BaseOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Continue prompts with a saved causal-LM adapter (chat models: as a user turn)."""
    from declora.cli.generate import Sampling, run_generate
    from declora.cli.predict import USER_ERRORS

    check_format(fmt)
    sampling = Sampling(max_new_tokens, temperature, top_p, seed)
    try:
        run_generate(
            adapter,
            prompt,
            input_,
            sys.stdout,
            sys.stdin,
            sampling=sampling,
            chat_template=chat_template,
            fmt=fmt,
            base=base,
        )
    except USER_ERRORS as exc:
        show_traceback(debug)
        fail_with(exc)


def export(
    adapter: AdapterArg,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="New folder.")] = None,
    merge: Annotated[
        bool,
        typer.Option(
            "--merge/--no-merge",
            help="Merge LoRA into the base: a plain transformers model folder (else: a copy "
            "of the PEFT adapter).",
        ),
    ] = False,
    base: BaseOpt = None,
    force: ForceOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Export a saved adapter: with --merge, a model transformers loads on its own.
    Replacing an earlier export is allowed; the adapter's folder, a declora run or a
    running node's folder never is. --output is held while it is written, as a running
    node holds its folder: a node started on it meanwhile is refused."""
    from declora.cli.predict import USER_ERRORS, check_export_output, run_export
    from declora.node import run_folder

    if output is None:
        fail(
            "--output is required: the folder to write",
            hint=f"e.g. declora-node export {adapter} --output exported",
        )
    check_output(output, "--output", force, replaced="the whole folder")
    try:
        check_export_output(adapter, output, base)  # before --output is made: none made
        with run_folder.holding(output):
            typer.echo(run_export(adapter, output, merge, base))  # checks it again, held
    except run_folder.FolderBusy as busy:  # a node took it since the check
        fail(
            f"--output {output} is held by {busy.who} (a running node's folder?)",
            hint="stop that process first, or choose another --output",
        )
    except USER_ERRORS as exc:
        show_traceback(debug)
        fail_with(exc)
