"""Whether this machine has a writable temporary folder, which torch's import needs (a
container's read-only root filesystem without a tmpfs at /tmp has none): every command
that loads a model checks it first, so the mistake is one `error:` line, not a
traceback from deep inside an import."""

from __future__ import annotations

import tempfile

PROBLEM = (
    "no writable temporary folder (TMPDIR, /tmp, /var/tmp): torch needs one "
    "(a read-only root filesystem?)"
)
HINT = (
    "mount a tmpfs at /tmp (docker run --tmpfs /tmp, compose `tmpfs: [/tmp]`, "
    "Kubernetes an emptyDir volume) or set TMPDIR to a writable folder"
)


def temp_folder_missing() -> bool:
    """True when no writable temporary folder exists (TMPDIR, else /tmp, /var/tmp, the
    working folder: `tempfile.gettempdir`); then `PROBLEM` and `HINT` say so. Nothing
    stays behind."""
    try:
        tempfile.gettempdir()
    except OSError:  # no usable temporary directory: none is writable
        return True
    return False
