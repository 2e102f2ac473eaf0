"""`declora-node status --check`: a probe of the node beside it, for a container's
healthcheck, systemd or a script.

- without --target it asks the node beside it, at the address its own --listen gives
  (`client.own_target`: DECLORA_LISTEN, else --config's listen; 0.0.0.0 or :: as
  127.0.0.1), so one command serves a container on any port;
- it asks grpc.health.v1 Check for the Swarm service (`health.SERVICE_NAME`): exit 0
  and one line while the node serves, else one `error:` line and a hint, exit 1 (not
  serving yet or any more, unreachable); exit 2 for files that cannot be used;
- its TLS files are --tls-cert/--tls-key/--tls-ca(/--tls-crl), else the node's own
  as `start` reads them (DECLORA_TLS_CERT, _KEY, _CA, _CRL, else --config's tls_cert,
  tls_key, tls_ca, tls_crl: `option_values.OptionValues`), so one probe
  command serves plain and mTLS containers alike; with the node's own files and a
  loopback target (the node beside it) it accepts the node's certificate under a name
  the certificate gives when it does not name the dialled host (a node's certificate
  names its advertised host, the probe dials 127.0.0.1); the chain is still checked
  against the CA, and another host must be named by its own certificate.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from declora.cli.client import StatusError, own_target, status_failure
from declora.cli.lines import error_lines
from declora.node.address import split_address
from declora.node.option_values import BLANK_PATH, OptionValues, blank_path, home_path
from declora.node.security import (
    TlsError,
    TlsFiles,
    certificate_names,
    is_loopback,
    names_host,
)
from declora.proto import pb

TLS_OPTIONS = ("tls_cert", "tls_key", "tls_ca", "tls_crl")  # the node's own TLS files
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Swarm"].full_name  # `health.SERVICE_NAME`


class CheckConfigError(StatusError):
    """The node's TLS variables cannot be used: configuration (exit code 2)."""

    code = 2


def node_tls(values: OptionValues | None = None) -> TlsFiles | None:
    """The node's own TLS files as `start` reads them from its `values` (default the
    environment's: DECLORA_TLS_CERT, _KEY, _CA and _CRL in any case, else its config
    file's keys; an empty one refused: `option_values`); None when none is given;
    CheckConfigError naming where they were given when they cannot be used."""
    given = {option: (values or OptionValues()).get(option) for option in TLS_OPTIONS}
    paths: list[Path | None] = []
    for got in given.values():
        if got is None:
            paths.append(None)
            continue
        value, where = got
        if not isinstance(value, str) or blank_path(value):
            why = BLANK_PATH if isinstance(value, str) else f"must be a file's path, got {value!r}"
            raise CheckConfigError(
                f"{where}: {why}", f"set {where} to the node's file, or remove it"
            )
        try:
            paths.append(home_path(value))
        except ValueError as exc:
            raise CheckConfigError(f"{where}: {exc}", "give the file's full path") from None
    cert, key, ca, crl = paths
    try:
        return TlsFiles.load(cert, key, ca, crl=crl)
    except TlsError as exc:
        named = ", ".join(got[1] for got in given.values() if got is not None)
        raise CheckConfigError(
            f"the node's own TLS files ({named}): {exc}",
            "fix the node's --tls-* options there, or give --tls-cert, --tls-key and --tls-ca",
        ) from None


def call_tls(
    target: str, tls: TlsFiles | None, values: OptionValues | None = None
) -> tuple[TlsFiles | None, list[tuple[str, str]], str]:
    """What a call to the node at `target` presents, one rule for `status`, `status
    --check` and `inspect --target`: (files, channel options, own). Without `tls` (the
    --tls-* flags) the node's own files from its `values` (`node_tls`) with
    `probe_options`, and `own` names where they were given ("" for flags, or none);
    CheckConfigError as `node_tls`."""
    if tls is not None:
        return tls, [], ""
    own = node_tls(values)
    if own is None:
        return None, [], ""
    given = (values or OptionValues()).get
    where = ", ".join(got[1] for option in TLS_OPTIONS if (got := given(option)))
    return own, probe_options(target, own), where


def probe_options(target: str, tls: TlsFiles) -> list[tuple[str, str]]:
    """The channel options that let the node's own certificate answer for `target`'s
    host: a name it gives when it does not name that host; none when it does, or when
    `target` is not loopback (another host, which its own certificate must name)."""
    from cryptography import x509

    if not is_loopback(target):
        return []
    cert = x509.load_pem_x509_certificate(tls.cert)
    host = split_address(target)[0]
    if names_host(cert, host):
        return []
    dns, ips = certificate_names(cert)
    names = dns + ips
    return [("grpc.ssl_target_name_override", names[0])] if names else []


def check_main(
    target: str | None, timeout: float, tls: TlsFiles | None, values: OptionValues | None = None
) -> int:
    """`status --check` (the typer command and `cli.fast`'s path): one line on stdout
    and 0 while the node serves, else `error:` and `hint:` lines on stderr and the
    exit code (`StatusError.code`). Without `tls`, the node's own (`node_tls`); without
    `target`, the node's own address (`client.own_target`), each from the node's own
    `values` (default the environment's)."""
    try:
        address = target or own_target(values)
        print(check(address, timeout, *call_tls(address, tls, values)))
    except StatusError as exc:
        print(*error_lines(exc.message, exc.hint), sep="\n", file=sys.stderr)
        return exc.code
    return 0


def check(
    target: str,
    timeout: float,
    tls: TlsFiles | None,
    options: Sequence[tuple[str, str]] = (),
    own: str = "",
) -> str:
    """The line for a node at `target` that serves; StatusError (hinted) otherwise.
    `options` and `own`: `call_tls`'s."""
    if tls is None:
        channel = grpc.insecure_channel(target)
    else:
        channel = grpc.secure_channel(target, tls.channel_credentials(), options=options)
    request = health_pb2.HealthCheckRequest(service=SERVICE_NAME)
    with channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(request, timeout=timeout)
        except grpc.RpcError as exc:
            code = exc.code().name if hasattr(exc, "code") else "ERROR"
            details = (exc.details() if hasattr(exc, "details") else "") or ""
            why, hint = status_failure(code, details, timeout, tls is not None, own)
            raise StatusError(f"{target} is not healthy: {why}", hint) from exc
    states = health_pb2.HealthCheckResponse.ServingStatus
    if reply.status not in states.values():  # a value the protocol does not define
        why = f"status {reply.status} (not SERVING)"
    elif reply.status != health_pb2.HealthCheckResponse.SERVING:
        why = f"{states.Name(reply.status)} (loading its model, or stopping)"
    else:
        return f"{target} {states.Name(reply.status)}"
    raise StatusError(
        f"{target} is not healthy: {why}",
        "a node answers SERVING once its model is loaded: try again in a moment",
    )
