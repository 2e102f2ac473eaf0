"""`declora-node inspect`: what is in a saved adapter or checkpoint, or a node's peer view.

PATH may be a PEFT adapter folder (adapter_config.json + adapter_model.safetensors,
optionally declora.json), a DECA full model folder (model.safetensors + declora.json),
a checkpoint folder (`ckpt-*` with adapter/ and state.pt) or a checkpoint root (its
LATEST checkpoint, else its final adapter/): the folders predict and export accept,
found by the same `adapter_io.adapter_folder`; or a plain transformers model folder
(model.safetensors without declora.json: a base model, `export --merge`'s output),
shown as kind "model" with a line saying predict and export refuse it (a merged
export's line, and its `merged_from`, name the adapter its declora_export.json
records). Nothing is modified. Beside the config fingerprint it shows `weights_sha256`,
a hash of the weights file's tensors (names sorted; name, dtype, shape and bytes of
each), equal for two adapters exactly when their weights agree; and the hash
`declora.json` recorded at save time, if any.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from declora.node.adapter_card import ADAPTER_CONFIG, ADAPTER_WEIGHTS, DECLORA_INFO, weights_sha256
from declora.node.deca_model import FULL_MODEL, MODEL_WEIGHTS
from declora.node.errors import HintedError

if TYPE_CHECKING:
    from declora.node.option_values import OptionValues
    from declora.node.security import TlsFiles


class InspectError(HintedError):
    """PATH is not an adapter or checkpoint, or the target cannot be reached (`hint`:
    what to check)."""


def _adapter_dir(path: Path) -> tuple[Path, Path | None]:
    """(adapter folder, checkpoint folder or None) for any PATH predict and export
    accept (`adapter_folder`, one resolver for the three commands)."""
    from declora.node.adapter_io import AdapterError, adapter_folder

    try:
        adapter = adapter_folder(path)
    except AdapterError as exc:
        raise InspectError(exc.message, exc.hint) from None
    except OSError as exc:
        raise InspectError(str(exc)) from None
    ckpt = adapter.parent
    if adapter.name == "adapter" and (ckpt / "state.pt").is_file():
        return adapter, ckpt
    return adapter, None


def base_of(meta: dict[str, Any], config: dict[str, Any], full: bool) -> str | None:
    """The base model an adapter was trained on: the PEFT config's, else what
    declora.json records (hub id, local copy, then declora's --model name)."""
    base, spec = meta.get("base"), meta.get("spec")
    base = base if isinstance(base, dict) else {}
    spec = spec if isinstance(spec, dict) else {}
    names = [] if full else [config.get("base_model_name_or_path")]
    names += [base.get("hub_id"), base.get("local_path"), base.get("name"), spec.get("model")]
    return next((str(n) for n in names if n), None)


_DAMAGED = "the file was edited or damaged: save the adapter again, or use a checkpoint's adapter/"


def _read_json(path: Path) -> dict[str, Any]:
    """The JSON object in `path` ({} when there is no such file); an `InspectError`
    with a hint when it holds anything else (a list too: it was read as no record)."""
    if not path.is_file():
        return {}
    try:
        found = json.loads(path.read_bytes().decode("utf-8"))
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError, deep
        raise InspectError(f"{path} is not a JSON object: {exc}", _DAMAGED) from exc
    if not isinstance(found, dict):
        raise InspectError(f"{path} is a JSON {type(found).__name__}, not an object", _DAMAGED)
    return found


def inspect_path(path: Path) -> dict[str, Any]:
    from safetensors import safe_open

    adapter, ckpt = _adapter_dir(path)
    meta = _read_json(adapter / DECLORA_INFO)
    full = meta.get("format") == FULL_MODEL or not (adapter / ADAPTER_CONFIG).is_file()
    plain = full and meta.get("format") != FULL_MODEL  # no declora adapter: a model folder
    weights = adapter / (MODEL_WEIGHTS if full else ADAPTER_WEIGHTS)
    if not weights.is_file():
        raise InspectError(f"{adapter} has no {weights.name}")
    config = {} if full else _read_json(adapter / ADAPTER_CONFIG)
    try:
        digest = weights_sha256(weights)
    except Exception as exc:  # a truncated or foreign file: say so, do not trace back
        raise InspectError(
            f"{weights} is not a readable safetensors file: {exc}", _DAMAGED
        ) from exc
    tensors = []
    total = 0
    with safe_open(str(weights), "pt") as fh:
        for name in fh.keys():  # noqa: SIM118 - safe_open has no __iter__
            t = fh.get_tensor(name)
            total += t.numel()
            tensors.append(
                {
                    "name": name,
                    "shape": list(t.shape),
                    "dtype": str(t.dtype).replace("torch.", ""),
                    "norm": float(t.float().norm()),
                    "finite": bool(t.isfinite().all()),
                }
            )
    spec = meta.get("spec") or {}
    info: dict[str, Any] = {
        "path": str(adapter),
        "kind": "checkpoint" if ckpt else "model" if plain else "adapter",
        "fingerprint": meta.get("fingerprint", ""),
        "weights_sha256": digest,
        "recorded_weights_sha256": meta.get("weights_sha256"),
        "labels": meta.get("labels"),
        "round": meta.get("round"),
        "node_id": meta.get("node_id"),
        "eval": meta.get("eval"),
        "spec": spec,
        "method": spec.get("method", "dec-lora") if spec else None,  # None: not declora's
        "task": meta.get("task") or spec.get("task"),
        "lm_rows": meta.get("lm_rows"),  # a causal LM's "chats" or "text"; None: no record
        "lora": None
        if full
        else {
            k: _sorted_names(config.get(k))
            for k in (
                "r",
                "lora_alpha",
                "target_modules",
                "task_type",
                "modules_to_save",
                "use_dora",
                "use_rslora",
            )
        },
        "base_model": base_of(meta, config, full),
        "parameters": total,
        "bytes": weights.stat().st_size,
        "tensors": tensors,
    }
    from declora.node.adapter_io import EXPORT_INFO, merged_source

    if plain and (adapter / EXPORT_INFO).is_file():  # `export --merge`'s output
        info["merged_from"] = merged_source(adapter) or "an adapter"
    if ckpt is not None:
        from declora.node.checkpoint import CheckpointError, read_state

        try:
            state = read_state(ckpt)
        except CheckpointError as exc:
            raise InspectError(str(exc)) from exc
        info["checkpoint"] = {"path": str(ckpt), "round": state["round"], "seq": state["seq"]}
        info["round"] = state["round"]
    return info


def _sorted_names(value: Any) -> Any:
    """A list of module names (PEFT's target_modules, modules_to_save: sets saved in
    any order) sorted; any other value (a regex string, a number, None) as it is."""
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return sorted(value)
    return value


def inspect_target(
    target: str, tls: TlsFiles | None = None, values: OptionValues | None = None
) -> dict[str, Any]:
    """The Status of the node at `target` as `status --format json` shows it, asked as
    `status` asks (`client.show_status`): without `tls` (--tls-* flags) presenting the
    node's own TLS files and signing with its secret, from its own `values` (default
    the environment's). InspectError from the `client.StatusError` (its `__cause__`,
    whose `code` is the exit code)."""
    from declora.cli.client import StatusError, fetch_status, own_secret, status_to_dict
    from declora.cli.health_check import call_tls

    try:
        secret = own_secret(values)
        tls, options, own = call_tls(target, tls, values)
        reply = fetch_status(target, tls=tls, secret=secret, options=options, own=own)
    except StatusError as exc:
        raise InspectError(exc.message, exc.hint) from exc
    return {"kind": "node", **status_to_dict(reply)}


NOT_RECORDED = "(not recorded)"


def _or_unknown(value: object) -> str:
    """`value` as `render` shows a file's value (escaped, bounded), `NOT_RECORDED` when
    the folder holds none."""
    from declora.cli.client import remote_text

    return NOT_RECORDED if value is None or value == "" else remote_text(value, 500)


def eval_text(info: dict[str, Any]) -> str:
    """The evaluation an `inspect_path` folder records, as `metric value, ...`; else why
    there is none: a checkpoint records none (a node evaluates apart from its
    checkpoints; its rounds.jsonl has the figures), other folders did not record one."""
    from declora.cli.client import remote_text

    def number(v: object) -> str:
        return f"{v:.4g}" if isinstance(v, int | float) and not isinstance(v, bool) else str(v)

    value = info.get("eval")
    if isinstance(value, dict) and value:
        return remote_text(", ".join(f"{k} {number(v)}" for k, v in value.items()), 500)
    if value not in (None, "", [], {}):  # another writer's one value: as it is
        return remote_text(number(value), 500)
    if info["kind"] == "checkpoint":
        return "not measured at this checkpoint (see the run's rounds.jsonl)"
    return "not recorded"


def render(info: dict[str, Any]) -> None:
    from rich.markup import escape
    from rich.table import Table

    from declora.cli.client import (
        MAX_ROWS,
        figure,
        folded,
        method_text,
        more_text,
        refused_text,
        remote_text,
        report_console,
    )

    show = remote_text  # the node's strings, and a file's: escaped, bounded
    console = report_console()  # to a pipe or file: no line wrapped, no value cut
    if info["kind"] == "node":
        method = method_text(info)
        console.print(
            f"[bold]{show(info['node_id'])}[/] swarm {show(info['swarm_id'])} "
            f"round {info['round']} fingerprint {show(info['fingerprint'])}"
            + (f"\n{method}" if method else "")
        )
        if refused := refused_text(info.get("rejected") or {}):
            console.print(refused)
        table = Table(
            "peer", "address", "live", "weight", "degree", "round", "missed", "sent B", "recv B"
        )
        neighbours = info.get("neighbors", [])
        for n in neighbours[:MAX_ROWS]:
            table.add_row(
                show(n["node_id"]),
                show(n["address"]),
                "yes" if n["live"] else "no",
                figure(n["weight"], 3),  # None: the node sent a NaN
                str(n["degree"]),
                str(n["round"]),
                str(n["missed_deadlines"]),
                f"{int(n['bytes_sent']):,}",
                f"{int(n['bytes_received']):,}",
            )
        console.print(folded(table))
        if more := more_text(len(neighbours), MAX_ROWS, "neighbours"):
            console.print(more)
        return
    lora = info["lora"]
    recorded = info.get("recorded_weights_sha256")
    changed = (
        f"  [red](declora.json recorded {show(str(recorded)[:16])}: the weights changed)[/]"
        if recorded and recorded != info["weights_sha256"]
        else ""
    )
    labels = f"labels {show(', '.join(info['labels']), 500)}\n" if info.get("labels") else ""
    name = show(info["method"]) if info["method"] else ""
    method = f"method {name}, " if name else ""
    model = (
        f"full model ({method}no LoRA) task={_or_unknown(info['task'])}"
        if lora is None
        else f"LoRA r={lora['r']} alpha={lora['lora_alpha']} "
        f"targets={show(lora['target_modules'], 500)} task={_or_unknown(lora['task_type'])}"
        + (" dora" if lora.get("use_dora") else "")
        + (" rslora" if lora.get("use_rslora") else "")
        + (f" method={name}" if name else "")
    )
    merged = info.get("merged_from")
    what = f"a merged export of {merged}, " if merged is not None else ""
    plain = (
        f"{show(what, 500)}a transformers model folder, not an adapter: predict and export "
        "take a node's adapter/ or checkpoint; start and simulate take this folder as --model\n"
        if info["kind"] == "model"
        else ""
    )
    console.print(
        f"[bold]{info['kind']}[/] {escape(str(info['path']))}\n"
        f"{plain}"
        f"fingerprint {show(info['fingerprint'] or '(none: not written by declora)')}  "
        f"weights sha256 {info['weights_sha256'][:16]}{changed}\n"
        f"round {_or_unknown(info['round'])}  node {_or_unknown(info['node_id'])}\n"
        f"{labels}"
        f"{model}  base={_or_unknown(info['base_model'])}\n"
        f"{info['parameters']:,} parameters ({info['bytes']:,} bytes); "
        f"eval: {eval_text(info)}"
    )
    table = Table("tensor", "shape", "dtype", "L2 norm", "finite")
    for t in info["tensors"]:
        table.add_row(
            show(t["name"], 500),
            "x".join(map(str, t["shape"])),
            show(t["dtype"]),
            f"{t['norm']:.4f}",
            str(t["finite"]),
        )
    console.print(folded(table))
