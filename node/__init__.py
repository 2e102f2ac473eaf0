"""declora.node: the Dec-LoRA core (pure algorithm), its simulator, and the node daemon."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("declora")
except PackageNotFoundError:  # pragma: no cover - running from an uninstalled tree
    __version__ = "0+unknown"

PROTOCOL_VERSION = 3  # 3: Kill-and-Revive keyframes name their modules (`KRK`)
"""Wire protocol version; peers with another version are refused at handshake."""
