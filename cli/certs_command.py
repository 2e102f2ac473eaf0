"""`certs` (mint mTLS certificates signed by a swarm CA) and `certs revoke` (add
certificates to the CA's revocation list): the flags around `cli/certs.py`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from declora.cli.checks import check_output
from declora.cli.exits import fail, fail_with, warn
from declora.cli.flags import ForceOpt

certs_app = typer.Typer(
    name="certs",
    invoke_without_command=True,
    no_args_is_help=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@certs_app.callback(
    help=(
        "Mint mTLS certificates for nodes, signed by the swarm CA in --output.\n\n"
        "A folder without ca.pem gets a new CA, and a certificate for this CLI (cli.pem) too. "
        "A folder with ca.pem and ca-key.pem keeps its CA: only the named nodes' certificates "
        "are minted, so a node can join, or one node's certificate be renewed, while the "
        "others stay valid. Existing node files are replaced only when forced, the CA only "
        "with --new-ca. Nothing is written when any check fails."
    )
)
def certs(
    ctx: typer.Context,
    out: Annotated[
        Path | None, typer.Option("--output", "-o", help="Folder to write the PEM files into.")
    ] = None,
    nodes: Annotated[
        str | None, typer.Option(help="Node names, comma-separated: node-0,node-1.")
    ] = None,
    hosts: Annotated[
        str, typer.Option(help="Every host name or IP the nodes are dialled at, comma-separated.")
    ] = "127.0.0.1,localhost",
    days: Annotated[int, typer.Option(help="Validity in days.")] = 365,
    force: ForceOpt = False,
    new_ca: Annotated[
        bool,
        typer.Option(
            "--new-ca",
            help="Replace the CA in --output with a new one: every node's certificate "
            "must then be re-issued.",
        ),
    ] = False,
) -> None:
    """Certificates for `nodes` signed by the CA in `out`, or a new one (the help above)."""
    from declora.cli.certs import CertsError, mint, usage, warnings

    def split(v: str | None) -> list[str]:
        return [x.strip() for x in (v or "").split(",") if x.strip()]

    if ctx.invoked_subcommand is not None:
        if out is not None or nodes is not None:
            fail(
                f"the options of `certs {ctx.invoked_subcommand}` go after its name",
                hint=f"e.g. `declora-node certs {ctx.invoked_subcommand} --output PKI-FOLDER ...`",
            )
        return
    if out is None:
        fail(
            "--output: give the folder for the PEM files",
            hint="e.g. `declora-node certs --output pki --nodes node-0,node-1`",
        )
    check_output(out, "--output")
    try:
        minted = mint(out, split(nodes), split(hosts), days, force, new_ca)
    except CertsError as exc:
        fail_with(exc, 2)
    for line in warnings(minted):
        warn(line)
    typer.echo(usage(minted))


@certs_app.command(
    "revoke",
    help=(
        "Revoke certificates of the CA in --output (its signed list: --tls-crl).\n\n"
        "Adds them to the CA's certificate revocation list, keeping what it held; put the "
        "list in any running node's --tls-crl: it re-reads it within seconds, drops a "
        "neighbour it revokes, refuses its calls, and passes the list on to the nodes "
        "started with a --tls-crl of this CA (give each one the list once)."
    ),
)
def certs_revoke(
    out: Annotated[
        Path, typer.Option("--output", "-o", help="The folder of the CA (ca.pem, ca-key.pem).")
    ],
    cert: Annotated[
        list[Path] | None,
        typer.Option("--cert", metavar="FILE", help="A certificate to revoke (repeatable)."),
    ] = None,
    serial: Annotated[
        list[str] | None,
        typer.Option(
            "--serial",
            metavar="N",
            help="A serial to revoke: decimal, 0x-hex or aa:bb:.. (repeatable).",
        ),
    ] = None,
    crl: Annotated[
        Path | None,
        typer.Option("--crl", help="The revocation list to add to.", show_default="OUTPUT/crl.pem"),
    ] = None,
    days: Annotated[int, typer.Option(help="Days until the list's nextUpdate.")] = 30,
) -> None:
    """`certs.revoke` with the flags (the help above)."""
    from declora.cli.certs import CertsError, revoke

    try:
        done = revoke(out, cert or [], serial or [], crl, days)
    except CertsError as exc:
        fail_with(exc, 2)
    for n in done.already:
        warn(f"serial {n:#x} was already revoked")
    added = ", ".join(f"{n:#x}" for n in done.added) or "nothing new"
    typer.echo(
        f"revoked {added}: {done.crl} lists {done.total} certificates, until "
        f"{done.next_update:%Y-%m-%d %H:%M} UTC (its nextUpdate: revoke again or re-sign "
        "before then; nodes warn once it passed, and keep enforcing it)"
    )
    typer.echo(
        f"copy {done.crl} over one running node's --tls-crl: it re-reads it within seconds "
        "and passes it on to its neighbours (nodes started with a --tls-crl); a new node "
        "gets it as --tls-crl"
    )
