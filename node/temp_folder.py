"""Whether this machine has a writable temporary folder, which torch's import needs (a
container's read-only root filesystem without a tmpfs at /tmp has none): every command
that loads a model checks it first, so the mistake is one `error:` line, not a
traceback from deep inside an import."""

from __future__ import annotations

import tempfile

# where `tempfile.gettempdir` looks, in its order (the variables TMPDIR, TEMP and TMP
# are folders it tries, before the fixed ones and the working folder)
PLACES = ("TMPDIR", "TEMP", "TMP", "/tmp", "/var/tmp", "/usr/tmp", "the working folder")
PROBLEM = (
    f"no writable temporary folder ({', '.join(PLACES)}): torch needs one "
    "(a read-only root filesystem?)"
)
HINT = (
    "mount a tmpfs at /tmp (docker run --tmpfs /tmp, compose `tmpfs: [/tmp]`, "
    "Kubernetes an emptyDir volume) or set TMPDIR to a writable folder"
)


def temp_folder_missing() -> bool:
    """True when none of `PLACES` is a writable folder (`tempfile.gettempdir`); then
    `PROBLEM` and `HINT` say so. Nothing stays behind."""
    try:
        tempfile.gettempdir()
    except OSError:  # no usable temporary directory: none is writable
        return True
    return False
