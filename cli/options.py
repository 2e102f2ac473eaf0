"""Commands whose options are a config model's fields: `start` and `config` from
`NodeSettings`, `simulate` from `SimConfig`, `lab` from `LabConfig` (one source each).

Every field becomes a flag of the same name (`rank` -> `--rank`,
a bool -> `--mdns/--no-mdns`) whose help is the field's description and whose shown
default is `settings.default_text`. The command receives the flags' values as
`options`, None for every flag not given, so environment variables and the config
file still apply underneath (`settings.resolve_settings`). A field that is a bool or a
word (`resume`: bool or "auto") is one option that is a flag or takes a value:
`--resume`, `--no-resume`, `--resume=auto`, `--resume auto` (`flag_words`).
"""

from __future__ import annotations

import inspect
import re
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from pydantic import BaseModel as PydanticModel
from pydantic.fields import FieldInfo
from typer.core import TyperCommand

from declora.node.option_values import option_name
from declora.node.recipe import Recipe
from declora.node.settings import NodeSettings, default_text

NET = "Network"
MODEL = "Model and data"
TRAIN = "Training and rounds"
OPS = "Operations"
SEC = "Security"

PANELS = {
    **dict.fromkeys(
        [
            *("node_id", "swarm_id", "listen", "advertise", "peers", "mdns"),
            *("mdns_interface", "solo", "max_neighbors", "min_peers", "startup_timeout"),
        ],
        NET,
    ),
    **dict.fromkeys(
        [
            *("model", "task", "data", "text_column", "label_column", "labels", "dedupe"),
            *("data_format", "messages_column", "prompt_column", "response_column", "packing"),
            *("partition", "partition_scheme", "rank", "alpha", "targets", "max_length"),
            *("lora_dropout", "rslora", "dora", "quantize", "precision"),
        ],
        MODEL,
    ),
    **dict.fromkeys(
        ["tls_cert", "tls_key", "tls_ca", "tls_crl", "swarm_secret", "swarm_secret_file"], SEC
    ),
}
EXTRA_HELP = {"swarm_secret": "prefer DECLORA_SWARM_SECRET: flags show in ps"}


def _panel(name: str) -> str:
    return PANELS.get(name, TRAIN if name in Recipe.model_fields else OPS)


def _cli_type(info: FieldInfo) -> type[Any]:
    """The type the flag parses: bool, int, float, Path or str (lists as a,b,c)."""
    annotation = info.annotation
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1:
        annotation = args[0]
    if bool in args:  # a flag; with a word beside (resume: auto), a str (`flag_words`)
        return bool if len(args) == 1 else str
    if annotation in (bool, int, float, Path):
        return annotation  # type: ignore[return-value]
    if typing.get_origin(annotation) is Literal:
        return str
    return str


def help_text(name: str, model: type[PydanticModel] = NodeSettings) -> str:
    info = model.model_fields[name]
    text = info.description or name.replace("_", " ")
    extra = EXTRA_HELP.get(name)
    return text + (f"; {extra}" if extra else "")


def _words(info: FieldInfo) -> tuple[str, ...]:
    """The words a bool field also takes (`resume`: auto); empty for any other field."""
    args = typing.get_args(info.annotation)
    if bool not in args:
        return ()
    return tuple(w for a in args if typing.get_origin(a) is Literal for w in typing.get_args(a))


# a word after `--resume` that is its value: letters and digits only (auto, true, no,
# ...: any case; the field's validator refuses any other such word, naming the option)
VALUE_WORD = re.compile(r"[A-Za-z0-9]+")


def flag_words(args: list[str], model: type[PydanticModel]) -> list[str]:
    """`args` with each bool field of `model` that also takes a word given as the one
    option it is: `--resume` as `--resume=true`, `--no-resume` as `--resume=false`,
    `--resume WORD` as `--resume=WORD` when WORD is a `VALUE_WORD` (`--resume=WORD` is
    itself). Whatever else follows `--resume` (an option, a path) is left as it is,
    and so is everything after `--`."""
    flags = {option_name(n) for n, i in model.model_fields.items() if _words(i)}
    negated = {f"--no-{flag[2:]}": flag for flag in flags}
    out: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if arg == "--":
            out.extend(args[i - 1 :])
            break
        if arg in negated:
            out.append(f"{negated[arg]}=false")
        elif arg in flags:
            word = args[i] if i < len(args) else ""
            taken = VALUE_WORD.fullmatch(word) is not None
            out.append(f"{arg}={word if taken else 'true'}")
            i += taken
        else:
            out.append(arg)
    return out


def _parameter(name: str, model: type[PydanticModel]) -> inspect.Parameter:
    info = model.model_fields[name]
    kind = _cli_type(info)
    flag = option_name(name)
    decls = [f"{flag}/--no-{flag[2:]}"] if kind is bool else [flag]
    if name == "output":  # -o on every command with an output folder
        decls.append("-o")
    words = _words(info)
    option = typer.Option(
        *decls,
        help=help_text(name, model),
        show_default=default_text(name, model),
        rich_help_panel=_panel(name),
        # --resume/--no-resume [=auto]: the flag it also is (`flag_words`)
        metavar=f"[={'|'.join(words)}]" if words else None,
    )
    annotation = Annotated[kind | None, option]  # type: ignore[valid-type]
    return inspect.Parameter(
        name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=annotation
    )


def fields_command(
    model: type[PydanticModel], func: Callable[..., None], skip: tuple[str, ...] = ()
) -> Callable[..., None]:
    """`func` with a flag for every field of `model` (less `skip`); the flags' values
    arrive as `options`, None for every flag not given."""
    own = [
        p for p in inspect.signature(func, eval_str=True).parameters.values() if p.name != "options"
    ]
    fields = [name for name in model.model_fields if name not in skip]
    params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own]
    params += [_parameter(name, model) for name in fields]

    def command(**kwargs: Any) -> None:
        options = {name: kwargs.pop(name, None) for name in fields}
        func(**kwargs, options=options)

    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in params}
    command.__name__ = func.__name__
    command.__doc__ = func.__doc__
    return command


def fields_command_class(model: type[PydanticModel]) -> type[TyperCommand]:
    """The click command class of a `fields_command` of `model`: its bool fields that
    also take a word are flags too (`flag_words`), shown as `--x/--no-x [=word]`."""

    negated = {n: f"--no-{option_name(n)[2:]}" for n, i in model.model_fields.items() if _words(i)}

    class FieldsCommand(TyperCommand):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            for param in self.params:  # shown beside the option, as a bool's --no-x
                if param.name in negated:
                    param.secondary_opts = [negated[param.name]]

        def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
            return super().parse_args(ctx, flag_words(args, model))

    return FieldsCommand


def given(options: dict[str, Any]) -> dict[str, Any]:
    """The options a user gave (the rest are None: the model's defaults apply)."""
    return {k: v for k, v in options.items() if v is not None}
