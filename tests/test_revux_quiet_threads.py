"""`quiet_transformers` in two threads at once (in-process daemons, a lab's reference
beside a load) leaves transformers' logging as it found it."""

from __future__ import annotations

import threading

import pytest
from transformers.utils import logging as hf_logging

from declora.node.models import quiet_transformers


def test_overlapping_blocks_in_two_threads_restore_the_settings() -> None:
    before = hf_logging.get_verbosity()
    hf_logging.set_verbosity_warning()
    hf_logging.enable_progress_bar()
    a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()
    inside: list[int] = []

    def first() -> None:
        with quiet_transformers():
            a_in.set()
            b_in.wait(10)
        a_out.set()

    def second() -> None:
        a_in.wait(10)
        with quiet_transformers():  # opened while the first is open...
            b_in.set()
            a_out.wait(10)  # ...and closed after it
            inside.append(hf_logging.get_verbosity())

    try:
        threads = [threading.Thread(target=f) for f in (first, second)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(20)
        # before: the second saved the first's ERROR and restored it (warnings gone
        # for the rest of the process)
        assert inside == [hf_logging.ERROR]  # quiet while one block is open
        assert hf_logging.get_verbosity() == hf_logging.WARNING
        assert hf_logging.is_progress_bar_enabled()
    finally:
        hf_logging.set_verbosity(before)


def test_an_exception_inside_restores_the_settings() -> None:
    before = hf_logging.get_verbosity()
    hf_logging.set_verbosity_info()
    try:
        with pytest.raises(OSError), quiet_transformers():
            assert not hf_logging.is_progress_bar_enabled()
            raise OSError("no weights")
        assert hf_logging.get_verbosity() == hf_logging.INFO
        assert hf_logging.is_progress_bar_enabled()
    finally:
        hf_logging.set_verbosity(before)
