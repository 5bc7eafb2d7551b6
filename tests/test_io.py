"""The atomic writers of vat_hf.io: a reader sees the old content or the new, never a mix, and a
failed write loses nothing that was there."""

import os

import pytest

from vat_hf import io


def test_atomic_write_text_replaces_whole_file_and_keeps_old_on_failure(tmp_path):
    target = tmp_path / "sub" / "a.txt"
    io.atomic_write_text(target, "old")
    assert target.read_text() == "old"

    def fail(tmp):
        with open(tmp, "w") as handle:
            handle.write("half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        io.atomic_write(target, fail)
    assert target.read_text() == "old"
    assert os.listdir(target.parent) == ["a.txt"]  # no temporary file left behind


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2-exchange", "rename-aside"])
def test_atomic_write_dir_swaps_whole_directories(tmp_path, monkeypatch, exchange):
    if not exchange:
        monkeypatch.setattr(io, "_exchange", lambda a, b: False)
    target = tmp_path / "model"
    io.atomic_write_dir(target, lambda d: (d / "a").write_text("1"))
    assert sorted(os.listdir(target)) == ["a"]
    io.atomic_write_dir(target, lambda d: (d / "b").write_text("2"))
    assert sorted(os.listdir(target)) == ["b"]  # the new directory whole, nothing of the old

    def fail(d):
        (d / "c").write_text("3")
        raise RuntimeError("conversion failed")

    with pytest.raises(RuntimeError):
        io.atomic_write_dir(target, fail)
    assert sorted(os.listdir(target)) == ["b"]  # a failed build leaves the old directory as it was
    assert sorted(os.listdir(tmp_path)) == ["model"]  # and nothing beside it


def test_atomic_writes_get_the_modes_of_plain_writes(tmp_path):
    """The temporary file and folder are private while being written; the result is not."""
    mask = os.umask(0o022)
    try:
        io.atomic_write_text(tmp_path / "a.txt", "x")
        io.atomic_write_dir(tmp_path / "d", lambda d: (d / "f").write_text("y"))
    finally:
        os.umask(mask)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "d").stat().st_mode & 0o777 == 0o755
