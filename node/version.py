"""This release's version: what `declora-node --version`, `status` and every Hello
(`package_version`) report, and what a protocol refusal names. pyproject.toml reads it
from here (`[tool.setuptools.dynamic]`, parsed without importing), so a clean
checkout, `pip install .` and an editable install agree, with no network and no VCS.

The rule: each release raises it, never reusing a number. MINOR for a release that
changes what operators or peers see (an option, a message, a file format, the
protocol), PATCH for fixes only. `PROTOCOL_VERSION` is apart: it counts wire changes
only. Releases up to 0.2.0 all reported 0.1.0; tell those apart by their commit.
"""

VERSION = "0.2.0"
