"""A state transfer (Pull) over a slow link: the reader cuts a stream silent for
`--stream-idle-seconds`, and sees it chunk by chunk, so a state is served in chunks
that arrive within that window at the slowest pace accepted, as a push's are
(`sending.push_chunk_bytes`); before, one `--chunk-kib` chunk (1 MiB) looked idle."""

from __future__ import annotations

import asyncio
from pathlib import Path

from test_daemon_parts import pair

from declora.node.daemon.sending import MIN_CHUNK, push_chunk_bytes

IDLE = 0.5  # s: chunks of at most 4 KiB (`MIN_CHUNK`)


def test_a_state_is_served_in_chunks_that_arrive_within_the_idle_window(
    synthetic_jsonl: Path,
) -> None:
    _, (_a, b) = pair(synthetic_jsonl, stream_idle_seconds=IDLE)

    async def go() -> list[int]:
        out = list(await b.transfer.state_chunks())
        return [len(c.data) for c in out[1:]]

    sizes = asyncio.run(go())
    assert push_chunk_bytes(b.settings) == MIN_CHUNK < sum(sizes)  # several chunks here
    assert max(sizes) <= MIN_CHUNK
