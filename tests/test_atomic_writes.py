"""Writers outside the data layer write beside and rename: a report, a figure or a model card is
never left half-written, and a failed write keeps the previous file whole."""

import os

import pytest
from matplotlib.figure import Figure

from test_report import run_result, simulate


def _dot_files(folder):
    return [name for name in os.listdir(folder) if name.startswith(".")]


def test_a_failed_report_leaves_the_previous_files_whole(tmp_path, monkeypatch):
    from vat_hf.report import write_report

    results = [run_result("prompt-k4", simulate(1, 0.25, 0.02, n_bootstrap=20))]
    paths = write_report(results, tmp_path)
    before = {key: path.read_bytes() for key, path in paths.items()}
    assert all(before.values())  # no 0-byte figure

    real = Figure.savefig

    def dies_half_way(self, fname, *args, **kwargs):
        with open(fname, "wb") as handle:
            handle.write(b"\x89PNG half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Figure, "savefig", dies_half_way)
    with pytest.raises(OSError):
        write_report(results, tmp_path)
    monkeypatch.setattr(Figure, "savefig", real)
    assert {key: path.read_bytes() for key, path in paths.items()} == before
    assert _dot_files(tmp_path) == []  # no temporary file left behind


def test_a_failed_card_write_keeps_the_previous_card(tmp_path, monkeypatch):
    from test_model_card import INFO

    from vat_hf.train import card

    card.write_model_card(tmp_path, INFO)
    before = {name: (tmp_path / name).read_text() for name in ("README.md", "vat_training.json")}

    def broken(info):
        raise RuntimeError("rendering failed")

    monkeypatch.setattr(card, "render_card", broken)
    with pytest.raises(RuntimeError):
        card.write_model_card(tmp_path, {**INFO, "name": "other"})
    assert {name: (tmp_path / name).read_text() for name in before} == before and _dot_files(tmp_path) == []
