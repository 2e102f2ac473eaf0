"""What a node keeps on disk: checkpoints, the final adapter, the round history.

- checkpoints are written atomically (see `checkpoint`); `saved_round` is the round
  of the newest one written or resumed from, so a stop never rewrites what LATEST
  names;
- a checkpoint records what identifies the node's training share (--data,
  --partition, the examples' digest) and, in its declora.json, the round its training
  reached (`trained_round`: past it, only the consensus finish mixed); a resume on
  another share, or of a checkpoint trained past --rounds, is refused before anything
  changes (`check_rounds`), one of the consensus finish resumes into the finish;
  it also records the run's --codec and batch size, which a resume may change with
  a warning line each (`checkpoint.option_change`);
- the final adapter is written in the PEFT format to `<checkpoint_dir>/adapter`
  (DECA: the full model folder, `deca_model.BlockModel.save_adapter`);
- `rounds.jsonl` gets one JSON line per completed round (rotated to rounds.jsonl.1
  past `status.HISTORY_CAP`);
- a write that fails (a full or read-only disk) in a round is a warning and leaves
  what was there (LATEST, the checkpoints, whole lines of rounds.jsonl); at exit it
  is the node's exit error (`save_at_exit`). The history is a secondary record: a
  line that cannot be written for any OSError is a warning naming it (`record`).
"""

from __future__ import annotations

import errno
import gc
import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from declora.node import checkpoint, run_folder
from declora.node.adapter_card import DECLORA_INFO
from declora.node.daemon.parts import Parts
from declora.node.daemon.startup import DISK_ERRORS, UserError, disk_error
from declora.node.daemon.status import append_round, round_entry
from declora.node.dec_lora import NodeSnapshot
from declora.node.schedule import training_round
from declora.node.settings import NodeSettings

log = logging.getLogger(__name__)


def mend_history(folder: Path) -> None:
    """End `rounds.jsonl` with a whole line, so the lines a resume appends begin lines
    of their own (the first was glued onto a torn one: two records unreadable). A last
    line a crash or power loss left without its end is cut off, or, when it is a whole
    JSON object that lacks only its newline, ended (a warning says which). A file that
    cannot be read or mended is left as it is (the history is a secondary record)."""
    path = folder / run_folder.HISTORY
    try:
        with path.open("r+b") as fh:
            end = keep = fh.seek(0, os.SEEK_END)
            if not end:
                return
            while keep > 0:  # back to the last newline, a block at a time
                start = max(0, keep - 65536)
                fh.seek(start)
                block = fh.read(keep - start)
                if start + len(block) == end and block.endswith(b"\n"):
                    return  # whole lines only
                newline = block.rfind(b"\n")
                if newline >= 0:
                    keep = start + newline + 1
                    break
                keep = start
            fh.seek(keep)
            if _whole_record(fh.read(min(end - keep, MAX_RECORD + 1))):
                fh.write(b"\n")
                log.warning("%s ended without its last newline: one was added", path)
                return
            fh.truncate(keep)
    except OSError:
        return
    log.warning(
        "%s ended in a line cut short (a crash while it was written): its %d bytes were cut off",
        path,
        end - keep,
    )


MAX_RECORD = 1 << 20  # bytes of a last line read to see whether it is whole


def _whole_record(tail: bytes) -> bool:
    """Whether `tail` (at most `MAX_RECORD` bytes) is one whole JSON object."""
    if len(tail) > MAX_RECORD:
        return False
    try:
        return isinstance(json.loads(tail), dict)
    except (ValueError, RecursionError):  # JSONDecodeError, UnicodeDecodeError, too deep
        return False


class Persistence:
    """A node's checkpoints, final adapter and history in `folder` (its state dir)."""

    def __init__(self, folder: Path) -> None:
        self.checkpoint_dir = folder
        self.saved_round = -1
        self.failed: OSError | None = None  # why the last checkpoint was not written
        self._history_failed: int | None = None  # errno (0: none) of a line not written
        self._parts: Parts | None = None
        self._share: dict[str, Any] | None = None

    @property
    def parts(self) -> Parts:
        assert self._parts is not None, "attach() the built parts first"
        return self._parts

    def attach(self, parts: Parts) -> None:
        self._parts = parts

    def share(self) -> dict[str, Any]:
        """What identifies this node's training share (`checkpoint.training_share`),
        computed once: the share does not change while a node runs."""
        if self._share is None:
            s = self.parts.settings
            self._share = checkpoint.training_share(
                self.parts.node.trainer.data,
                data=str(s.data),
                partition=s.partition or "0/1",  # no --partition: the whole of --data
                partition_scheme=s.partition_scheme,
                validation_fraction=s.validation_fraction,
            )
        return self._share

    def resume(self, parts: Parts) -> None:
        """Continue from the checkpoint `checkpoint.load` picks (`checkpoint.latest`'s,
        or where that cannot be read the newest intact one; CheckpointError without
        one; CheckpointMismatch, before anything changes, for a checkpoint written on
        another training share or trained past --rounds: `check_rounds`). A --codec,
        --batch-size or --grad-accumulation other than the checkpoint's run's is a
        warning line each (`checkpoint.option_change`)."""
        state = checkpoint.load(self.checkpoint_dir, parts.lm)
        path = state.path
        assert path is not None  # load found it
        pointer = run_folder.named(self.checkpoint_dir)
        if pointer is None:
            log.warning(
                "%s holds no LATEST (a stop between writing %s and pointing LATEST at "
                "it): resuming from its newest complete checkpoint, %s",
                self.checkpoint_dir,
                path.name,
                path,
            )
        elif not run_folder.names_checkpoint(pointer):
            log.warning(
                "%s: LATEST names no checkpoint (%r: damaged): resuming from the newest "
                "complete checkpoint, %s",
                self.checkpoint_dir,
                pointer,
                path,
            )
        check_rounds(path, parts.settings, state.round, trained_round(path))
        mend_history(self.checkpoint_dir)
        self.attach(parts)
        order = np.asarray(state.trainer.get("order", ()))
        if not checkpoint.check_share(path, state.share, self.share(), order):
            log.warning(
                "%s was written before checkpoints recorded the training share: whether "
                "--data and --partition are the ones it was trained on is not checked",
                path,
            )
        checkpoint.restore_trainer(parts.node.trainer, state.trainer, state.vector)
        if note := checkpoint.option_change("--codec", state.codec, parts.node.codec_spec):
            log.warning("%s", note)
        snap = NodeSnapshot(
            state.vector, state.public, state.correction, method_state=state.method_state
        )
        parts.node.restore(snap)
        parts.progress.round, parts.progress.seq = state.round, state.seq
        self.saved_round = state.round
        log.info("resumed from %s at round %d", path, state.round)

    def record(self, phase: str, evaluated: bool) -> None:
        """Append the round just completed to `rounds.jsonl` (`append_round`). A line
        that cannot be written, for any OSError, is left out and the node trains on,
        with a warning naming the error (once until a line is written again or the
        error changes): a disk's state (`DISK_ERRORS`: full, read-only, failing) with
        its remedy, any other (EACCES, EMFILE...) by its errno name."""
        parts = self.parts
        entry = round_entry(parts.progress, parts.report, parts.node, parts.peers, phase, evaluated)
        try:
            append_round(self.checkpoint_dir, entry)
        except OSError as exc:
            if self._history_failed != (exc.errno or 0):
                log.warning("%s", _history_warning(self.checkpoint_dir, entry["round"], exc))
            self._history_failed = exc.errno or 0
            return
        if self._history_failed is not None:
            log.info("round history written again from round %d", entry["round"])
            self._history_failed = None

    def save_checkpoint(self) -> bool:
        """Write a checkpoint of the current round (atomically, see `checkpoint`); a
        step held back for after mixing (a stop mid-round) is taken first. Whether it
        was written: one that cannot be for the disk's state (`DISK_ERRORS`: full,
        read-only, failing) is a warning, and the folder keeps its checkpoints and LATEST
        as they were; any other OSError (EACCES, EMFILE...) is raised."""
        parts = self.parts
        parts.node.apply_deferred_step()
        snap = parts.node.snapshot()
        state = checkpoint.NodeState(
            round=parts.progress.round,
            seq=parts.progress.seq,
            vector=snap.vector,
            public=snap.public,
            trainer=checkpoint.trainer_state(parts.node.trainer),
            fingerprint=parts.lm.fingerprint,
            correction=snap.correction,
            saved=parts.node.model_vector() if parts.node.full_model else None,
            method_state=snap.method_state,
            share=self.share(),
            codec=parts.node.codec_spec,
        )
        s = parts.settings
        last = s.rounds * s.exchanges_per_round  # 0: trains until stopped
        # how far it trained: past this only the consensus finish mixed (`check_rounds`)
        trained = min(state.round, last) if s.rounds else state.round
        meta = {"node_id": s.node_id, TRAINED: trained}
        failed: OSError | None = None
        try:
            path = checkpoint.save(self.checkpoint_dir, parts.lm, state, meta)
        except OSError as exc:
            if exc.errno not in DISK_ERRORS:  # EACCES, EMFILE...: not the disk's state
                raise
            failed = OSError(exc.errno, exc.strerror or str(exc))  # a bare copy, see below
        if failed is not None:
            # `exc` chained the writer's error, whose frames (in reference cycles) held
            # its removed file open: the build's space stayed taken, and the final
            # adapter written next failed on a disk that had room for it
            gc.collect()
            self.failed = failed
            kept = checkpoint.latest(self.checkpoint_dir)
            log.warning(
                "cannot write the checkpoint of round %d to %s: %s; %s",
                state.round,
                self.checkpoint_dir,
                failed.strerror,
                f"a resume continues from {kept.name}" if kept else "there is none to resume",
            )
            return False
        self.saved_round, self.failed = state.round, None
        log.info("checkpoint written: %s", path)
        return True

    def save_final(self) -> Path:
        """Write the final adapter (PEFT format) to `<checkpoint_dir>/adapter`. A
        `UserError` (exit 1) when it cannot be written (a full or read-only disk, also
        when the writer raised another kind: `adapter.built_atomically`): the adapter
        there before, if any, is kept whole, and no half-written one is left."""
        parts = self.parts
        path = self.checkpoint_dir / "adapter"
        meta = {
            "node_id": parts.settings.node_id,
            "round": parts.progress.round,
            "eval": parts.report.last_eval,
        }
        vector = parts.node.model_vector()
        try:
            parts.lm.save_adapter(vector, path, meta)  # adapter.built_atomically
        except OSError as exc:
            what = f"cannot write the final adapter to {path}"
            raise disk_error(what, exc, checkpoint.latest(self.checkpoint_dir)) from None
        log.info("final adapter written: %s", path)
        return path

    def save_at_exit(self, with_checkpoint: bool, finished: bool) -> UserError | None:
        """A checkpoint of the current round (`with_checkpoint`), then the final
        adapter, each tried whatever became of the other. The exit error: the final
        adapter's when it could not be written (a full or read-only disk), else the
        checkpoint's of a run stopped before its end (what --resume needed; that of a
        `finished` run is the warning `save_checkpoint` logs)."""
        failure = None
        if with_checkpoint and not self.save_checkpoint() and not finished:
            assert self.failed is not None
            round_ = self.parts.progress.round
            what = f"cannot write the checkpoint of round {round_} to {self.checkpoint_dir}"
            failure = disk_error(what, self.failed, checkpoint.latest(self.checkpoint_dir))
        try:
            self.save_final()
        except UserError as exc:
            failure = exc
        return failure


def _history_warning(folder: Path, round_: int, exc: OSError) -> str:
    """The warning for round `round_`'s history line that `exc` kept out of `folder`:
    a disk's state (`DISK_ERRORS`) with its remedy, another error by its errno name."""
    path = folder / run_folder.HISTORY
    rotating = f" (rotating it to {run_folder.OLDER_HISTORY})" if exc.filename2 else ""
    reason = exc.strerror or str(exc)
    if exc.errno in DISK_ERRORS:
        until = "it can (free space on that disk or make it writable)"
    else:  # EACCES, EMFILE...: not the disk's state
        name = errno.errorcode.get(exc.errno or 0)
        reason += f" ({name})" if name else ""
        until = "it can be written"
    return (
        f"cannot append round {round_} to {path}{rotating}: {reason}; "
        f"the history misses rounds until {until}"
    )


TRAINED = "trained_round"  # a checkpoint's declora.json: the round its training reached


def trained_round(path: Path) -> int | None:
    """The round (exchange) checkpoint `path`'s training reached, as recorded in its
    adapter's declora.json; None for one written before it was recorded."""
    try:
        info = json.loads((path / "adapter" / DECLORA_INFO).read_text())
    except (OSError, ValueError, RecursionError):  # a damaged card: deep nesting too
        return None
    value = info.get(TRAINED) if isinstance(info, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def check_rounds(path: Path, settings: NodeSettings, at: int, trained: int | None) -> None:
    """CheckpointMismatch when checkpoint `path` (at round `at`, trained up to round
    `trained`) is past what this start plans: trained past --rounds (the user lowered
    it). A checkpoint of the consensus finish (`at` past --rounds, `trained` not) resumes
    into the finish. One written before `trained` was recorded is refused only past
    the planned end (training exchanges + --consensus-rounds)."""
    s = settings
    per_round = s.exchanges_per_round
    last = s.rounds * per_round
    if not s.rounds:
        return
    if trained is not None:
        if trained <= last:
            return
    elif at <= last + s.consensus_rounds:
        return
    reached = trained if trained is not None else at
    where = (
        f"round {at}"
        if per_round == 1
        else f"exchange {at} (training round {training_round(at, per_round)})"
    )
    if trained is not None and trained != at:
        where += f", trained to {'round' if per_round == 1 else 'exchange'} {trained}"
    final = path.parent / "adapter"
    raise checkpoint.CheckpointMismatch(
        f"{path} is at {where}, past --rounds {s.rounds}: resuming would train nothing",
        f"resume with --rounds {training_round(reached, per_round) + 1} "
        "or more to train on (0: until stopped)"
        + (f"; that run's final adapter is in {final}" if final.is_dir() else ""),
    )
