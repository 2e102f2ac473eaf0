"""What Status tells of a node's method (`--method`): its name and, for the methods that
train part of the adapter a round, which part.

`fill_method` sets `StatusReply.method` always and, only with their method and while
the node has rounds to run (not done nor stopping), `StatusReply.deca` (the block of
the round in progress or the next, of how many, and the rounds left in its turn) and
`StatusReply.kill_revive` (active modules of how many); a reply without them says no
block or module is training. It reads the node's own fields only (no lock: each is
one attribute replaced whole by the training thread).
"""

from __future__ import annotations

from typing import Any

from declora.node.daemon.state import NodeState
from declora.node.dec_lora import DecLoraNode
from declora.node.deca import DecaNode
from declora.node.kill_revive import KillReviveNode
from declora.proto import pb

# the states in which a node runs no more rounds (`NodeState`)
OVER = frozenset({NodeState.DONE.value, NodeState.STOPPING.value})


def fill_method(reply: pb.StatusReply, node: DecLoraNode[Any], completed: int) -> None:
    """Set `reply`'s method fields for `node` (`reply.state` set), `completed` rounds
    mixed (`Progress.round`): DECA's block is that of round `completed + 1`, the
    one training now, or next between rounds (blocks go by round number)."""
    reply.method = node.trainer.lm.spec.method
    if reply.state in OVER:
        return  # no round to come: a block "of round completed + 1" would be made up
    if isinstance(node, DecaNode):
        lm = node.deca.lm
        turn = lm.spec.deca_block_rounds
        current = completed + 1
        reply.deca.block = lm.block_at(current) + 1
        reply.deca.blocks = len(lm.blocks)
        reply.deca.rounds_left = turn - (current - 1) % turn
    elif isinstance(node, KillReviveNode):
        modules = len(node.pairs)
        reply.kill_revive.modules = modules
        reply.kill_revive.active_modules = modules if node.finishing else int(node.active.sum())
