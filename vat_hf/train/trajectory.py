"""Watching the tax grow while a model trains.

:class:`VATTrajectoryCallback` is a ``transformers.TrainerCallback``. At the start of training and
every ``every_n_steps`` optimisation steps it judges a fixed sample of ``test`` items with the
model being trained (the model object the trainer holds — with a PEFT adapter, the adapter as it
is at that step, no extra copy of the base), scores the judgments against the ones taken at the
start with the VAT metric, and

* logs ``vat/gain``, ``vat/vat``, ``vat/drift/<value>`` through ``trainer.log`` — so they reach
  every logger ``report_to`` names (TensorBoard, W&B, ...) and ``trainer.state.log_history``;
* rewrites ``trajectory.jsonl`` (atomically) with one row per evaluation step: step, gain, vat,
  drift per value and their scene-bootstrap intervals.

Cost: one forward pass per sampled item per evaluation, in inference mode. On a 2-core CPU,
SmolLM2-135M judges about 8-10 items/s, so 200 items every 25 steps adds ~20-25 s per evaluation;
on a GPU a few hundred items take a second or two. Keep the sample to a few hundred items.

:func:`drift_onset` reads a trajectory and returns, per value, the first step at which its drift's
bootstrap interval no longer contains zero: the time at which the tax appears.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence

from transformers import TrainerCallback

from vat_hf.io import write_jsonl

logger = logging.getLogger(__name__)


def sample_items(items: Sequence[Mapping], n: int, seed: int = 0) -> List[Mapping]:
    """A fixed, reproducible sample of ``test`` items, whole scenes first so the scene bootstrap
    has scenes to resample (items of a scene stay together until the budget runs out)."""
    test = [item for item in items if item["split"] == "test"]
    if len(test) != len(items):
        raise ValueError("the trajectory sample must come from 'test' items only (intervention material is 'train')")
    scenes = sorted({item["scene_id"] for item in test})
    random.Random(seed).shuffle(scenes)
    by_scene: Dict[str, List[Mapping]] = {}
    for item in test:
        by_scene.setdefault(item["scene_id"], []).append(item)
    chosen: List[Mapping] = []
    for scene in scenes:
        if len(chosen) >= n:
            break
        chosen.extend(by_scene[scene][: n - len(chosen)])
    return chosen


def drift_onset(trajectory: Sequence[Mapping], values: Optional[Sequence[str]] = None) -> Dict[str, Optional[int]]:
    """Per value, the first logged step whose drift interval excludes zero (None if it never does).

    Each trajectory row needs ``step`` and ``drift_ci`` (value -> [low, high]).

    >>> rows = [{"step": 0, "drift_ci": {"Power": [0.0, 0.0], "Hedonism": [0.0, 0.0]}},
    ...         {"step": 10, "drift_ci": {"Power": [-0.02, 0.03], "Hedonism": [0.01, 0.05]}},
    ...         {"step": 20, "drift_ci": {"Power": [-0.09, -0.01], "Hedonism": [0.02, 0.06]}}]
    >>> drift_onset(rows)
    {'Power': 20, 'Hedonism': 10}
    """
    rows = sorted(trajectory, key=lambda row: row["step"])
    if values is None:
        values = list(rows[0]["drift_ci"]) if rows else []
    onset: Dict[str, Optional[int]] = {value: None for value in values}
    for row in rows:
        for value in values:
            interval = (row.get("drift_ci") or {}).get(value)
            if onset[value] is None and interval and interval[0] is not None and (interval[0] > 0 or interval[1] < 0):
                onset[value] = int(row["step"])
    return onset


class VATTrajectoryCallback(TrainerCallback):
    """Judge a fixed item sample every ``every_n_steps`` steps and log gain, drifts and vat.

    Attach with ``callback.attach(trainer)`` (it needs the trainer to log through its loggers).
    """

    def __init__(
        self,
        items: Sequence[Mapping],
        tokenizer,
        target_value: str,
        every_n_steps: int = 50,
        output_path: Optional[str] = None,
        n_bootstrap: int = 200,
        seed: int = 0,
        max_batch_tokens: int = 8192,
        prompt=None,
    ):
        from vat_hf.prompts import JudgePrompt
        from vat_hf.values import canonical_value

        if every_n_steps < 1:
            raise ValueError("every_n_steps must be >= 1")
        self.items = list(items)
        self.tokenizer = tokenizer
        self.target_value = canonical_value(target_value)
        self.every_n_steps = every_n_steps
        self.output_path = Path(output_path) if output_path else None
        self.n_bootstrap = n_bootstrap
        self.seed = seed
        self.max_batch_tokens = max_batch_tokens
        self.prompt = prompt or JudgePrompt(name="trajectory")
        self.start_records: Optional[List[Dict]] = None
        self.trajectory: List[Dict] = []
        self.judgments: Dict[int, List[Dict]] = {}
        self.trainer = None

    def attach(self, trainer) -> "VATTrajectoryCallback":
        self.trainer = trainer
        trainer.add_callback(self)
        return self

    # -- judging -------------------------------------------------------------------------------
    def judge(self, model) -> List[Dict]:
        from vat_hf.evaluation import Evaluator

        was_training = model.training
        model.eval()
        try:
            evaluator = Evaluator(model, self.tokenizer, prompt=self.prompt, max_batch_tokens=self.max_batch_tokens,
                                  progress=False)
            return evaluator.judge(self.items)
        finally:
            if was_training:
                model.train()

    def record(self, step: int, model) -> Dict:
        from vat_hf.metrics.paired import score_judgments

        records = self.judge(model)
        self.judgments[step] = records
        if self.start_records is None:
            self.start_records = records
        result = score_judgments(self.start_records, records, self.target_value, n_bootstrap=self.n_bootstrap,
                                 seed=self.seed, n_subsamples=0)
        ci = result.get("ci") or {}
        row = {
            "step": step,
            "gain": result["gain"],
            "vat": result["vat"],
            "drift": result["drift"],
            "gain_ci": ci.get("gain"),
            "vat_ci": ci.get("vat"),
            "drift_ci": ci.get("drift"),
            "n_items": result["n_items"],
        }
        self.trajectory = [r for r in self.trajectory if r["step"] != step] + [row]
        if self.output_path is not None:
            write_jsonl(self.output_path, self.trajectory)
        logs = {"vat/gain": row["gain"] if row["gain"] is not None else float("nan")}
        if row["vat"] is not None:
            logs["vat/vat"] = row["vat"]
        logs.update({f"vat/drift/{value}": drift for value, drift in row["drift"].items() if drift is not None})
        if self.trainer is not None:
            self.trainer.log(logs)
        return row

    # -- trainer events ------------------------------------------------------------------------
    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if model is not None and state.global_step not in self.judgments:
            self.record(state.global_step, model)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if model is not None and state.global_step % self.every_n_steps == 0 and state.global_step not in self.judgments:
            self.record(state.global_step, model)

    def onset(self) -> Dict[str, Optional[int]]:
        return drift_onset(self.trajectory)
