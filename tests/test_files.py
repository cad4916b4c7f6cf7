"""atomic_directory: a checkpoint directory is the old one or the new one, never none."""

from __future__ import annotations

from pathlib import Path

import pytest

from sentiloop.errors import CheckpointError
from sentiloop.files import atomic_directory, restore_directory


def write(target: Path, text: str, replace: bool = True) -> None:
    with atomic_directory(target, replace=replace) as tmp:
        (tmp / "data").write_text(text)


def test_a_replacement_swaps_whole_and_leaves_nothing_behind(tmp_path: Path) -> None:
    target = tmp_path / "ckpt"
    write(target, "old")
    write(target, "new")
    assert (target / "data").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_a_failing_block_leaves_the_old_directory_as_it_was(tmp_path: Path) -> None:
    target = tmp_path / "ckpt"
    write(target, "old")
    with pytest.raises(RuntimeError), atomic_directory(target) as tmp:
        (tmp / "data").write_text("half")
        raise RuntimeError("crash while writing")
    assert (target / "data").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_a_replacement_interrupted_between_its_two_renames_is_undone_at_the_next_read(tmp_path: Path) -> None:
    target = tmp_path / "ckpt"
    write(target, "old")
    target.rename(tmp_path / ".ckpt.old")  # the fallback path died here: the old one aside, no target
    restore_directory(target)
    assert (target / "data").read_text() == "old" and not (tmp_path / ".ckpt.old").exists()


def test_a_never_overwritten_checkpoint_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "v0001"
    write(target, "first", replace=False)
    with pytest.raises(CheckpointError, match="never overwritten"):
        write(target, "second", replace=False)
    assert (target / "data").read_text() == "first"
