"""`declora-node`: start a node, look at nodes and adapters, run a lab or a simulation."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from declora.node import __version__

if TYPE_CHECKING:
    from declora.node.security import TlsFiles

app = typer.Typer(
    name="declora-node",
    help="Peer-to-peer decentralized LoRA fine-tuning (Dec-LoRA).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

NET = "Network"
MODEL = "Model and data"
TRAIN = "Training and rounds"
OPS = "Operations"
SEC = "Security"

TlsCert = Annotated[Path | None, typer.Option(rich_help_panel=SEC, help="PEM certificate (mTLS).")]
TlsKey = Annotated[Path | None, typer.Option(rich_help_panel=SEC, help="Its PEM private key.")]
TlsCa = Annotated[
    Path | None, typer.Option(rich_help_panel=SEC, help="The swarm CA's PEM certificate.")
]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"declora {__version__}")
        raise typer.Exit()


@app.callback()
def main_callback(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """Peer-to-peer decentralized LoRA fine-tuning (Dec-LoRA)."""


def fail(message: str, code: int = 2) -> None:
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    raise typer.Exit(code)


def _problem(loc: tuple[int | str, ...], msg: str) -> str:
    """One validation error as the user would fix it: `--option: message`."""
    msg = msg.removeprefix("Value error, ")
    option = "-".join(str(p) for p in loc).replace("_", "-")
    return f"--{option}: {msg}" if option else msg  # model-level checks name their options


def _client_tls(cert: Path | None, key: Path | None, ca: Path | None) -> TlsFiles | None:
    """The CLI's own TLS files (exit 2 naming the option when they are bad)."""
    from declora.node.security import TlsError, TlsFiles

    try:
        return TlsFiles.load(cert, key, ca)
    except TlsError as exc:
        fail(str(exc))
        raise  # unreachable: fail exits


@app.command()
def start(
    config: Annotated[Path | None, typer.Option(help="TOML, JSON or YAML file of options.")] = None,
    node_id: Annotated[str | None, typer.Option(rich_help_panel=NET, help="Unique id.")] = None,
    swarm_id: Annotated[
        str | None, typer.Option(rich_help_panel=NET, help="Swarm to join.")
    ] = None,
    listen: Annotated[
        str | None, typer.Option(rich_help_panel=NET, help="host:port to serve on.")
    ] = None,
    advertise: Annotated[
        str | None,
        typer.Option(rich_help_panel=NET, help="host:port peers dial (default: listen)."),
    ] = None,
    peers: Annotated[
        str | None, typer.Option(rich_help_panel=NET, help="Static peers, host:port,host:port.")
    ] = None,
    mdns: Annotated[
        bool | None,
        typer.Option("--mdns/--no-mdns", rich_help_panel=NET, help="Find peers by mDNS."),
    ] = None,
    mdns_interface: Annotated[
        str | None, typer.Option(rich_help_panel=NET, help="IP to use for mDNS (e.g. 127.0.0.1).")
    ] = None,
    max_neighbors: Annotated[int | None, typer.Option(rich_help_panel=NET)] = None,
    min_peers: Annotated[
        int | None,
        typer.Option(rich_help_panel=NET, help="Wait for this many at start (-1: all static)."),
    ] = None,
    startup_timeout: Annotated[float | None, typer.Option(rich_help_panel=NET)] = None,
    model: Annotated[
        str | None,
        typer.Option(rich_help_panel=MODEL, help="minilm, tiny-bert, tiny-llama or a path."),
    ] = None,
    task: Annotated[str | None, typer.Option(rich_help_panel=MODEL, help="cls or lm.")] = None,
    data: Annotated[
        str | None,
        typer.Option(rich_help_panel=MODEL, help="bbcnews or a .jsonl/.csv/.parquet file."),
    ] = None,
    partition: Annotated[
        str | None, typer.Option(rich_help_panel=MODEL, help="This node's share i/N (0-based).")
    ] = None,
    partition_scheme: Annotated[
        str | None,
        typer.Option(rich_help_panel=MODEL, help="iid, dirichlet:A, skew[:P], shards:K."),
    ] = None,
    rank: Annotated[int | None, typer.Option(rich_help_panel=MODEL)] = None,
    alpha: Annotated[int | None, typer.Option(rich_help_panel=MODEL)] = None,
    targets: Annotated[
        str | None,
        typer.Option(rich_help_panel=MODEL, help="LoRA target modules, comma-separated."),
    ] = None,
    max_length: Annotated[int | None, typer.Option(rich_help_panel=MODEL)] = None,
    local_steps: Annotated[
        int | None, typer.Option(rich_help_panel=TRAIN, help="K steps a round.")
    ] = None,
    rounds: Annotated[
        int | None, typer.Option(rich_help_panel=TRAIN, help="0 = until stopped.")
    ] = None,
    lr: Annotated[float | None, typer.Option(rich_help_panel=TRAIN)] = None,
    batch_size: Annotated[int | None, typer.Option(rich_help_panel=TRAIN)] = None,
    seed: Annotated[
        int | None, typer.Option(rich_help_panel=TRAIN, help="Swarm-wide seed.")
    ] = None,
    codec: Annotated[
        str | None,
        typer.Option(rich_help_panel=TRAIN, help="fp32, fp16, bf16, q8, q4, q2, topk:F[+q4]."),
    ] = None,
    consensus_step: Annotated[float | None, typer.Option(rich_help_panel=TRAIN)] = None,
    robust_mixing: Annotated[
        str | None,
        typer.Option(rich_help_panel=TRAIN, help="none, clip[:C] or trim[:F] (Byzantine peers)."),
    ] = None,
    gradient_tracking: Annotated[
        bool | None,
        typer.Option(
            "--gradient-tracking/--no-gradient-tracking",
            rich_help_panel=TRAIN,
            help="Correct local steps toward the swarm's gradient (non-IID data; the same "
            "on every node; twice the bytes of a training round).",
        ),
    ] = None,
    round_deadline: Annotated[
        float | None, typer.Option(rich_help_panel=TRAIN, help="Seconds to wait for neighbours.")
    ] = None,
    consensus_rounds: Annotated[
        int | None, typer.Option(rich_help_panel=TRAIN, help="Gossip-only rounds at the end.")
    ] = None,
    consensus_tol: Annotated[float | None, typer.Option(rich_help_panel=TRAIN)] = None,
    eval_every: Annotated[int | None, typer.Option(rich_help_panel=TRAIN)] = None,
    max_eval: Annotated[int | None, typer.Option(rich_help_panel=TRAIN)] = None,
    checkpoint_dir: Annotated[Path | None, typer.Option(rich_help_panel=OPS)] = None,
    checkpoint_every: Annotated[
        int | None, typer.Option(rich_help_panel=OPS, help="Rounds.")
    ] = None,
    resume: Annotated[
        bool | None, typer.Option("--resume/--no-resume", rich_help_panel=OPS, help="Continue.")
    ] = None,
    metrics_port: Annotated[
        int | None, typer.Option(rich_help_panel=OPS, help="Prometheus port.")
    ] = None,
    device: Annotated[
        str | None, typer.Option(rich_help_panel=OPS, help="auto, cpu, cuda[:i].")
    ] = None,
    threads: Annotated[int | None, typer.Option(rich_help_panel=OPS, help="torch threads.")] = None,
    log_format: Annotated[
        str | None, typer.Option(rich_help_panel=OPS, help="text or json.")
    ] = None,
    log_level: Annotated[str | None, typer.Option(rich_help_panel=OPS)] = None,
    max_message_mib: Annotated[int | None, typer.Option(rich_help_panel=OPS)] = None,
    chunk_kib: Annotated[int | None, typer.Option(rich_help_panel=OPS)] = None,
    max_concurrent_streams: Annotated[
        int | None, typer.Option(rich_help_panel=OPS, help="RPCs served at once.")
    ] = None,
    max_pushes_per_round: Annotated[
        int | None, typer.Option(rich_help_panel=OPS, help="Per sender and round.")
    ] = None,
    max_handshakes_per_minute: Annotated[
        int | None, typer.Option(rich_help_panel=OPS, help="Per remote host.")
    ] = None,
    max_pulls_per_minute: Annotated[
        int | None, typer.Option(rich_help_panel=OPS, help="Per requesting node.")
    ] = None,
    tls_cert: TlsCert = None,
    tls_key: TlsKey = None,
    tls_ca: TlsCa = None,
    swarm_secret: Annotated[
        str | None,
        typer.Option(
            rich_help_panel=SEC,
            help="Shared secret (>= 16 characters) that signs every message; "
            "prefer DECLORA_SWARM_SECRET (flags show in ps).",
        ),
    ] = None,
) -> None:
    """Run a node: train LoRA locally and mix with live neighbours every round."""
    from pydantic import ValidationError

    from declora.node.settings import ConfigFileError, load_settings

    values = dict(locals())
    values.pop("config")
    values.pop("ValidationError")
    values.pop("ConfigFileError")
    values.pop("load_settings")
    try:
        settings = load_settings(values, config)
    except ValidationError as exc:
        problems = "; ".join(_problem(e["loc"], e["msg"]) for e in exc.errors())
        fail(f"bad configuration: {problems}")
        return
    except ConfigFileError as exc:
        fail(str(exc))
        return
    from declora.node.daemon import serve

    raise typer.Exit(serve(settings))


@app.command()
def status(
    target: Annotated[str, typer.Option(help="host:port of a running node.")] = "127.0.0.1:7070",
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds.")] = 5.0,
    tls_cert: TlsCert = None,
    tls_key: TlsKey = None,
    tls_ca: TlsCa = None,
) -> None:
    """Show a node's round, loss, last evaluation and neighbours."""
    from declora.cli.client import StatusError, fetch_status, render_status, status_to_dict

    tls = _client_tls(tls_cert, tls_key, tls_ca)
    try:
        reply = fetch_status(target, timeout, tls=tls)
    except StatusError as exc:
        fail(str(exc), 1)
        return
    if json_out:
        typer.echo(json.dumps(status_to_dict(reply), indent=2))
    else:
        render_status(reply)


@app.command()
def inspect(
    path: Annotated[
        Path | None, typer.Argument(help="A saved adapter or checkpoint directory.")
    ] = None,
    target: Annotated[
        str | None, typer.Option(help="host:port: show that node's peer view.")
    ] = None,
    fmt: Annotated[str, typer.Option("--format", help="text or json.")] = "text",
    tls_cert: TlsCert = None,
    tls_key: TlsKey = None,
    tls_ca: TlsCa = None,
) -> None:
    """Describe a saved adapter/checkpoint (config, tensors, fingerprint) or a node's peers."""
    from declora.cli.inspect import InspectError, inspect_path, inspect_target

    if (path is None) == (target is None):
        fail("give either PATH or --target")
    tls = _client_tls(tls_cert, tls_key, tls_ca)
    try:
        info = inspect_path(path) if path is not None else inspect_target(str(target), tls)
    except InspectError as exc:
        fail(str(exc), 1)
        return
    from declora.cli.inspect import render

    if fmt == "json":
        typer.echo(json.dumps(info, indent=2, default=str))
    else:
        render(info)


@app.command()
def certs(
    out: Annotated[Path, typer.Option(help="Folder to write the PEM files into.")],
    nodes: Annotated[str, typer.Option(help="Node names, comma-separated: node-0,node-1.")],
    hosts: Annotated[
        str, typer.Option(help="Every host name or IP the nodes are dialled at, comma-separated.")
    ] = "127.0.0.1,localhost",
    days: Annotated[int, typer.Option(help="Validity in days.")] = 365,
    force: Annotated[bool, typer.Option("--force", help="Replace existing files.")] = False,
) -> None:
    """Mint a swarm CA and mTLS certificates for nodes and for this CLI (`cli.pem`)."""
    from declora.cli.certs import CertsError, mint, usage

    def split(v: str) -> list[str]:
        return [x.strip() for x in v.split(",") if x.strip()]

    try:
        minted = mint(out, split(nodes), split(hosts), days, force)
    except CertsError as exc:
        fail(str(exc))
        return
    typer.echo(usage(minted))


@app.command()
def simulate(
    nodes: Annotated[int, typer.Option(help="Virtual nodes.")] = 8,
    topology: Annotated[
        str, typer.Option(help="ring, complete, er:P, torus[:RxC], star.")
    ] = "ring",
    partition_scheme: Annotated[
        str, typer.Option(help="iid, dirichlet:A, skew[:P], shards:K.")
    ] = "dirichlet:0.1",
    rounds: Annotated[int, typer.Option()] = 15,
    local_steps: Annotated[int, typer.Option(help="K local steps a round.")] = 5,
    rank: Annotated[int, typer.Option()] = 8,
    codec: Annotated[str, typer.Option()] = "fp32",
    mixing: Annotated[str, typer.Option(help="mh, laplacian or uniform.")] = "mh",
    lr: Annotated[float, typer.Option()] = 2e-3,
    batch_size: Annotated[int, typer.Option()] = 16,
    model: Annotated[str, typer.Option()] = "minilm",
    data: Annotated[str, typer.Option()] = "bbcnews",
    seed: Annotated[int, typer.Option()] = 0,
    centralized: Annotated[bool, typer.Option("--centralized/--no-centralized")] = True,
    consensus_tol: Annotated[float, typer.Option()] = 1e-3,
    max_eval: Annotated[int, typer.Option(help="Cap on test examples (0 = all).")] = 0,
    robust_mixing: Annotated[
        str, typer.Option(help="Mixing rule: none, clip[:C], trim[:F].")
    ] = "none",
    gradient_tracking: Annotated[
        bool,
        typer.Option(
            "--gradient-tracking/--no-gradient-tracking", help="Gradient tracking (non-IID data)."
        ),
    ] = False,
    byzantine: Annotated[
        str, typer.Option(help="Attacking node indices, comma-separated (e.g. 0,4).")
    ] = "",
    attack: Annotated[
        str | None, typer.Option(help="What they send: scale:S or noise:SIGMA.")
    ] = None,
    output: Annotated[
        Path, typer.Option(help="Folder for results.json, results.md, plot.png.")
    ] = Path("runs/simulate"),
) -> None:
    """Run Dec-LoRA with N virtual nodes in this process, beside centralized LoRA."""
    from pydantic import ValidationError

    from declora.cli.experiment import run_one
    from declora.node.simulator import SimConfig

    try:
        cfg = SimConfig(
            nodes=nodes,
            topology=topology,
            partition_scheme=partition_scheme,
            rounds=rounds,
            local_steps=local_steps,
            rank=rank,
            codec=codec,
            mixing=mixing,
            lr=lr,
            batch_size=batch_size,
            model=model,
            data=data,
            seed=seed,
            centralized=centralized,
            consensus_tol=consensus_tol,
            max_eval=max_eval,
            robust_mixing=robust_mixing,
            gradient_tracking=gradient_tracking,
            byzantine=_indices("--byzantine", byzantine),
            attack=attack,
        )
    except (ValidationError, ValueError) as exc:
        fail(str(exc))
        return
    run_one(cfg, output)


def _indices(option: str, text: str) -> tuple[int, ...]:
    """'0, 4' -> (0, 4); ValueError naming `option` for anything else."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not all(p.isdigit() for p in parts):
        raise ValueError(f"{option}: expected node indices like 0,4, got {text!r}")
    return tuple(int(p) for p in parts)


@app.command()
def experiment(
    output: Annotated[Path, typer.Option(help="Folder for every run and the table.")] = Path(
        "results/paper"
    ),
    only: Annotated[str | None, typer.Option(help="Comma-separated run names to (re)run.")] = None,
    list_runs: Annotated[bool, typer.Option("--list", help="List the runs and exit.")] = False,
    table: Annotated[
        bool, typer.Option("--table", help="Only rebuild table.md from finished runs.")
    ] = False,
) -> None:
    """Reproduce the paper's comparison on the embedded default (resumable)."""
    from declora.cli.experiment import PAPER_GRID, run_grid, write_table

    if list_runs:
        for name, cfg in PAPER_GRID.items():
            typer.echo(f"{name:18s} {cfg.label}")
        return
    if table:
        typer.echo(write_table(output))
        return
    names = [n.strip() for n in only.split(",")] if only else None
    unknown = sorted(set(names or []) - set(PAPER_GRID))
    if unknown:
        fail(f"unknown runs {unknown}; see --list")
    run_grid(output, names)


@app.command()
def lab(
    nodes: Annotated[int, typer.Option(help="Daemons to start on 127.0.0.1.")] = 4,
    topology: Annotated[str, typer.Option(help="ring, complete, er:P, torus, star.")] = "ring",
    partition_scheme: Annotated[
        str, typer.Option(help="iid, dirichlet:A, skew[:P], shards:K.")
    ] = "dirichlet:0.5",
    rounds: Annotated[int, typer.Option()] = 10,
    local_steps: Annotated[int, typer.Option()] = 5,
    model: Annotated[str, typer.Option()] = "minilm",
    data: Annotated[str, typer.Option()] = "bbcnews",
    codec: Annotated[str, typer.Option()] = "fp32",
    rank: Annotated[int, typer.Option()] = 8,
    lr: Annotated[float, typer.Option()] = 2e-3,
    batch_size: Annotated[int, typer.Option()] = 16,
    seed: Annotated[int, typer.Option()] = 0,
    max_eval: Annotated[int, typer.Option(help="Test examples each node evaluates on.")] = 200,
    eval_every: Annotated[int, typer.Option(help="Evaluate every N rounds (and at the end).")] = 2,
    base_port: Annotated[int, typer.Option(help="First port (0: any free ports).")] = 7300,
    round_deadline: Annotated[float, typer.Option()] = 120.0,
    consensus_rounds: Annotated[int, typer.Option()] = 30,
    gradient_tracking: Annotated[
        bool,
        typer.Option("--gradient-tracking/--no-gradient-tracking", help="On every node."),
    ] = False,
    centralized: Annotated[
        bool,
        typer.Option(
            "--centralized/--no-centralized", help="Also train the centralized reference."
        ),
    ] = True,
    output: Annotated[Path, typer.Option()] = Path("runs/lab"),
    fmt: Annotated[
        str, typer.Option("--format", help="text or json for the final summary.")
    ] = "text",
) -> None:
    """Start N real daemons on 127.0.0.1, show them live, and report their accuracy."""
    from pydantic import ValidationError

    from declora.cli.lab import LabConfig, run_lab

    try:
        cfg = LabConfig(
            nodes=nodes,
            topology=topology,
            partition_scheme=partition_scheme,
            rounds=rounds,
            local_steps=local_steps,
            model=model,
            data=data,
            codec=codec,
            rank=rank,
            lr=lr,
            batch_size=batch_size,
            seed=seed,
            max_eval=max_eval,
            eval_every=eval_every,
            base_port=base_port,
            round_deadline=round_deadline,
            consensus_rounds=consensus_rounds,
            gradient_tracking=gradient_tracking,
            centralized=centralized,
            output=output,
        )
    except ValidationError as exc:
        fail("bad configuration: " + "; ".join(_problem(e["loc"], e["msg"]) for e in exc.errors()))
        return
    summary: dict[str, Any] = run_lab(cfg)
    if fmt == "json":
        typer.echo(json.dumps(summary, indent=2, default=str))
    raise typer.Exit(0 if summary.get("ok") else 1)


AdapterArg = Annotated[
    Path, typer.Argument(help="A saved adapter folder, a checkpoint, or a checkpoint root.")
]
BaseOpt = Annotated[
    str | None,
    typer.Option(help="A local copy of the base model (default: the base the adapter records)."),
]
DebugOpt = Annotated[bool, typer.Option("--debug", help="Show tracebacks.")]


@app.command()
def predict(
    adapter: AdapterArg,
    input_: Annotated[
        str,
        typer.Option(
            "--input", "-i", help="A .txt (a text a line), .jsonl, .csv or .parquet file; - stdin."
        ),
    ] = "-",
    text_column: Annotated[str, typer.Option(help="The column that holds the texts.")] = "text",
    fmt: Annotated[
        str, typer.Option("--format", help="text (tab-separated) or json (one object a line).")
    ] = "text",
    base: BaseOpt = None,
    batch_size: Annotated[int, typer.Option(help="Texts per forward pass.")] = 32,
    debug: DebugOpt = False,
) -> None:
    """Classify texts with a saved adapter: label and probability per line (an LM adapter:
    each text's mean token loss and perplexity)."""
    from declora.cli.predict import USER_ERRORS, run_predict

    try:
        run_predict(adapter, input_, text_column, fmt, sys.stdout, sys.stdin, base, batch_size)
    except USER_ERRORS as exc:
        if debug:
            raise
        fail(str(exc))


@app.command()
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
    debug: DebugOpt = False,
) -> None:
    """Export a saved adapter: with --merge, a model transformers loads on its own."""
    from declora.cli.predict import USER_ERRORS, run_export

    if output is None:
        fail("--output is required: the folder to write")
        return
    try:
        typer.echo(run_export(adapter, output, merge, base))
    except USER_ERRORS as exc:
        if debug:
            raise
        fail(str(exc))


def main() -> None:
    import warnings

    # transformers deprecation chatter is not the user's business
    warnings.filterwarnings("ignore", category=FutureWarning, module="transformers")
    app(prog_name="declora-node")


if __name__ == "__main__":  # pragma: no cover
    main()
    sys.exit(0)
