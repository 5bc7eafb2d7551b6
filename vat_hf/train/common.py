"""The training run shared by ``vat_hf.train.sft`` and ``vat_hf.train.dpo``.

Order of a run: every input is checked first (target value, base model, adapter, data split,
PEFT/quantisation consistency), so a bad recipe fails in seconds, before a model is loaded;
then the base model is loaded with TRL's own loader, TRL's ``SFTTrainer``/``DPOTrainer`` trains
it (no training loop here), and the adapter (or full model) is saved with a model card.

The reference model of DPO:

* LoRA (``use_peft: true``): none is loaded; TRL computes reference log-probs with the
  adapter disabled, i.e. with the base model (no second copy in memory).
* full fine-tuning: ``ref_model_name_or_path`` loads an explicit reference; without it the
  reference log-probs of the initial model are precomputed once before training
  (``precompute_ref_log_probs``), again without a second copy during training.

What keeps a run honest:

* **Checkpoints are bound to their recipe.** The training fingerprint
  (:func:`training_fingerprint`: every parsed setting that can change the trained weights, and
  the number of processes) is written beside each checkpoint (``checkpoint-N/vat_checkpoint.json``,
  after the checkpoint is complete, so it also marks a checkpoint as whole). A resume takes the
  newest checkpoint that has one; a checkpoint of another recipe (another learning rate, LoRA
  rank, ...) is refused before any weights are loaded, naming the settings that differ and the
  fix. ``train_loss`` is taken from the trainer state's log history, which a resumed trainer
  restores from the checkpoint: a log entry is forced at every save and at the end
  (:class:`CheckpointRecordCallback`), so the mean covers every step, resumed or not.
* **One trainer per output folder**: the main process holds ``output_dir``'s lock
  (:func:`vat_hf.io.folder_lock`) from the first check to the model card; a second trainer there
  fails at once, naming the first.
* **Distributed runs are what the launcher says** (:func:`vat_hf.distributed.check_launch`): N
  processes launched but another number (or no distribution, or DDP where FSDP/DeepSpeed was
  asked) in the trainer's accelerator state is refused before the model is loaded.
* **No secret in the files**: a ``hub_token`` is taken out of the arguments the trainer pickles
  into ``training_args.bin`` and kept in this process's ``HF_TOKEN`` for the push.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from vat_hf.train.config import EARLIER_NAMES, TrainingConfigError

logger = logging.getLogger(__name__)

TRAINING_KEYS = (
    "learning_rate", "num_train_epochs", "max_steps", "per_device_train_batch_size", "gradient_accumulation_steps",
    "lr_scheduler_type", "warmup_steps", "weight_decay", "optim", "max_grad_norm", "seed", "bf16",
    "fp16", "activation_checkpointing", "max_length", "packing", "beta", "loss_type", "precompute_ref_log_probs",
)
MODEL_KEYS = ("dtype", "use_peft", "lora_r", "lora_alpha", "lora_dropout", "lora_target_modules", "use_rslora",
              "use_dora", "load_in_4bit", "load_in_8bit", "bnb_4bit_quant_type")
FINISHED = "vat_training.json"


def _plain(value):
    if hasattr(value, "value"):  # enums (lr_scheduler_type, optim)
        return value.value
    if isinstance(value, (list, tuple, set)):
        return [_plain(v) for v in value]
    return value


def hub_id_of(name_or_path: Optional[str]) -> Optional[str]:
    """The Hub id of a base model when there is one (the embedded default is SmolLM2's Hub id)."""
    from vat_hf.models.loading import DEFAULT_MODEL, is_embedded

    if is_embedded(name_or_path):
        return f"HuggingFaceTB/{DEFAULT_MODEL}"
    return None if os.path.isdir(os.path.expanduser(str(name_or_path))) else str(name_or_path)


def resolve_base_model(name_or_path: Optional[str], revision: str = "main", trust_remote_code: bool = False) -> str:
    """A loadable path or Hub id for the base model, or :class:`TrainingConfigError` now."""
    from vat_hf.models.loading import resolve_model_path

    try:
        path = resolve_model_path(name_or_path)
    except FileNotFoundError as err:
        raise TrainingConfigError(f"base model: {err}") from None
    if Path(path).is_dir():
        if not (Path(path) / "config.json").exists():
            raise TrainingConfigError(f"base model folder {path} has no config.json: not a transformers model")
        return path
    from transformers import AutoConfig

    try:  # a Hub id: fetch (or read from the HF cache when offline) its config only
        AutoConfig.from_pretrained(path, revision=revision, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as err:
        raise TrainingConfigError(
            f"base model {name_or_path!r} is neither a local folder nor a Hub model reachable from here "
            f"({type(err).__name__}: {str(err).splitlines()[0]})"
        ) from None
    return path


def check_inputs(method: str, script_args, training_args, model_args, items: Optional[Sequence[Mapping]] = None):
    """Everything that can be wrong with a run, checked before loading any weights.

    Returns ``(base model path, training dataset, data info)``."""
    from vat_hf.train.data import TrainingDataError, dpo_dataset, sft_dataset

    if not training_args.output_dir:
        raise TrainingConfigError("output_dir is required: where the adapter (or model) and checkpoints go")
    uses_peft = bool(model_args.use_peft or script_args.adapter_name_or_path)
    if (model_args.load_in_4bit or model_args.load_in_8bit) and not uses_peft:
        raise TrainingConfigError("load_in_4bit/load_in_8bit (QLoRA) trains an adapter: set use_peft: true")
    if script_args.adapter_name_or_path and model_args.use_peft:
        raise TrainingConfigError("give either adapter_name_or_path (continue an adapter) or use_peft (a new one), not both")
    path = resolve_base_model(model_args.model_name_or_path, model_args.model_revision, training_args.trust_remote_code)
    if script_args.adapter_name_or_path:
        adapter = Path(os.path.expanduser(script_args.adapter_name_or_path))
        if adapter.exists() and not (adapter / "adapter_config.json").exists():
            raise TrainingConfigError(f"adapter {adapter} has no adapter_config.json")
        if not adapter.exists() and str(script_args.adapter_name_or_path).startswith((".", "/", "~")):
            raise TrainingConfigError(f"adapter path {adapter} does not exist")
    ref = getattr(script_args, "ref_model_name_or_path", None)
    if ref:
        resolve_base_model(ref, trust_remote_code=training_args.trust_remote_code)
    if items is not None and not items:
        raise TrainingDataError("the training split is empty: training needs train scenes")
    items = _sampled_train_items(script_args, training_args, items)
    if method == "sft":
        dataset = sft_dataset(items, script_args.target_value)
    else:
        dataset = dpo_dataset(items, script_args.target_value, script_args.max_pairs_per_scene, training_args.seed)
    scenes = sorted({item["scene_id"] for item in items if item["value"] == script_args.target_value})
    data_info = {"source": script_args.data_source, "split": "train", "max_scenes": script_args.max_scenes,
                 "n_scenes": len(scenes), "n_examples": len(dataset), "scene_ids": scenes}
    return path, dataset, data_info


def load_base_model(path: str, model_args, training_args, revision: Optional[str] = None):
    """The base model through TRL's loader, with ``ModelConfig``'s dtype, attention and quantisation."""
    from accelerate import PartialState
    from transformers import AutoConfig
    from trl import get_quantization_config
    from trl.trainer.utils import create_model_from_path

    config = AutoConfig.from_pretrained(path, revision=revision or model_args.model_revision,
                                        trust_remote_code=training_args.trust_remote_code)
    kwargs = dict(config=config, revision=revision or model_args.model_revision, dtype=model_args.dtype,
                  attn_implementation=model_args.attn_implementation, trust_remote_code=training_args.trust_remote_code)
    quantization = get_quantization_config(model_args)
    if quantization is not None:
        kwargs["quantization_config"] = quantization
        kwargs["device_map"] = {"": PartialState().local_process_index}
    elif PartialState().distributed_type.value in ("MULTI_GPU", "MULTI_CPU", "DEEPSPEED", "FSDP"):
        kwargs["device_map"] = None
    kwargs.update(training_args.model_init_kwargs or {})
    kwargs = {k: v for k, v in kwargs.items() if v is not None or k == "device_map"}
    return create_model_from_path(path, **kwargs)


CHECKPOINT_RECORD = "vat_checkpoint.json"
"""Written beside each checkpoint (in its folder) once the checkpoint is complete: the training
fingerprint and the settings it covers."""
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
NOT_IN_FINGERPRINT = frozenset({
    "output_dir", "run_name", "resume", "resume_from_checkpoint", "overwrite_output_dir", "disable_tqdm", "report_to",
    "project", "push_to_hub", "hub_model_id", "hub_strategy", "hub_token", "hub_private_repo", "hub_always_push",
    "hub_revision", "local_rank", "ddp_timeout", "dataloader_num_workers", "dataloader_pin_memory",
    "dataloader_persistent_workers", "dataloader_prefetch_factor", "dataloader_multiprocessing_context",
    "skip_memory_metrics", "torch_empty_cache_steps", "restore_callback_states_from_checkpoint", "log_level",
    "log_level_replica", "log_on_each_node", "save_on_each_node", "save_only_model", "do_eval", "do_predict",
    "do_train", "per_device_eval_batch_size", "prediction_loss_only", "batch_eval_metrics", "include_for_metrics",
})
"""Settings that do not change the trained weights (where output goes, logging, saving, the
Hub, the evaluation loop): a checkpoint or finished adapter stays valid when only these differ."""
NOT_IN_FINGERPRINT_PREFIXES = ("logging_", "save_", "trackio_", "eval_")


def training_config(method: str, script_args, training_args, model_args) -> Dict[str, Any]:
    """Every parsed setting that can change the trained weights (the three dataclasses' fields
    less :data:`NOT_IN_FINGERPRINT`), the method, and the number of processes the launcher
    started (``WORLD_SIZE``: it changes the effective batch)."""
    # asdict, not TrainingArguments.to_dict: that one hides every *_token value (TRL's eos_token too).
    merged = {**dataclasses.asdict(script_args), **dataclasses.asdict(training_args), **dataclasses.asdict(model_args)}
    kept = {k: _plain(v) for k, v in merged.items()
            if k not in NOT_IN_FINGERPRINT and not k.startswith(NOT_IN_FINGERPRINT_PREFIXES)}
    kept["method"] = method
    kept["world_size"] = int(os.environ.get("WORLD_SIZE", "1") or 1)
    return json.loads(json.dumps(kept, sort_keys=True, default=str))


def training_fingerprint(method: str, script_args, training_args, model_args) -> Tuple[str, Dict[str, Any]]:
    """(fingerprint, the settings it covers) of a training run (see :func:`training_config`):
    recorded beside each checkpoint and in ``vat_training.json``."""
    config = training_config(method, script_args, training_args, model_args)
    digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]
    return digest, config


def _checkpoints(output_dir) -> List[Path]:
    """The ``checkpoint-N`` folders of ``output_dir``, newest first."""
    folder = Path(output_dir)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if p.is_dir() and (m := _CHECKPOINT.match(p.name))]
    return [p for _, p in sorted(found, reverse=True)]


def _differences(recorded: Mapping[str, Any], current: Mapping[str, Any], limit: int = 6) -> List[str]:
    keys = sorted(set(recorded) | set(current))
    diff = [f"{k}: {recorded.get(k)!r} there, {current.get(k)!r} now" for k in keys if recorded.get(k) != current.get(k)]
    return diff[:limit] + ([f"... {len(diff) - limit} more"] if len(diff) > limit else [])


def check_checkpoint(checkpoint, fingerprint: str, config: Mapping[str, Any]) -> bool:
    """Whether ``checkpoint`` was written by this very recipe: True when its record matches,
    False when it has none (an interrupted save, or an older vat-hf); a record of another recipe
    is a :class:`TrainingConfigError` naming the settings that differ."""
    from vat_hf.io import read_json

    path = Path(checkpoint) / CHECKPOINT_RECORD
    if not path.is_file():
        return False
    try:
        record = read_json(path)
    except ValueError:
        return False
    if record.get("fingerprint") == fingerprint:
        return True
    output_dir = Path(checkpoint).parent
    raise TrainingConfigError(
        f"{checkpoint} was written by another training recipe; resuming from it would train with that "
        f"recipe's state (optimizer, schedule, adapter shape) under this one's name. Differences: "
        + "; ".join(_differences(record.get("config") or {}, config)),
        fix=f"restore those settings to resume, or remove {output_dir}/checkpoint-* (or give the run another "
            f"output_dir / intervention name) to train from the start with the new ones")


def resume_checkpoint(output_dir, fingerprint: str, config: Mapping[str, Any]) -> Optional[str]:
    """The newest checkpoint of ``output_dir`` written by this recipe (see
    :func:`check_checkpoint`), skipping, with a warning, newer ones without a record; None when
    there is none."""
    for checkpoint in _checkpoints(output_dir):
        if check_checkpoint(checkpoint, fingerprint, config):
            return str(checkpoint)
        logger.warning("%s has no %s (its save was interrupted, or an older vat-hf wrote it): not resumed from",
                       checkpoint, CHECKPOINT_RECORD)
    return None


def last_checkpoint(output_dir) -> Optional[str]:
    """The newest ``checkpoint-N`` folder (any, recorded or not); see :func:`resume_checkpoint`."""
    found = _checkpoints(output_dir)
    return str(found[0]) if found else None


def _checkpoint_record_callback(fingerprint: str, config: Mapping[str, Any]):
    from transformers import TrainerCallback

    class CheckpointRecordCallback(TrainerCallback):
        """Forces a log entry at every save and at the last step (so the log history a
        checkpoint carries covers every step before it: :func:`logged_train_loss`), and writes
        the training fingerprint into each finished checkpoint (:data:`CHECKPOINT_RECORD`)."""

        def _log_with_saves(self, args, state, control, **kwargs):
            if control.should_save or (state.max_steps and state.global_step >= state.max_steps):
                control.should_log = True
            return control

        on_step_end = _log_with_saves
        on_epoch_end = _log_with_saves

        def on_save(self, args, state, control, **kwargs):
            if state.is_world_process_zero or (args.save_on_each_node and state.is_local_process_zero):
                from vat_hf.io import write_json

                folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
                if folder.is_dir():
                    write_json(folder / CHECKPOINT_RECORD, {"format": 1, "fingerprint": fingerprint,
                                                            "global_step": state.global_step, "config": dict(config)})
            return control

    return CheckpointRecordCallback()


def logged_train_loss(log_history: Sequence[Mapping[str, Any]]) -> Tuple[Optional[float], int]:
    """(mean training loss per step, steps covered) from a trainer state's log history: each
    ``loss`` entry is the mean over the steps since the previous one, weighted by their number.
    A resumed trainer's history starts with the checkpoint's, so this covers every step.

    >>> logged_train_loss([{"loss": 2.0, "step": 2}, {"loss": 1.0, "step": 3}, {"train_loss": 9.9, "step": 3}])
    (1.6666666666666667, 3)
    """
    total, steps, last = 0.0, 0, 0
    for entry in log_history:
        step, loss = entry.get("step"), entry.get("loss")
        if isinstance(step, int) and isinstance(loss, (int, float)) and step > last:
            total += float(loss) * (step - last)
            steps += step - last
            last = step
    return (total / steps if steps else None), steps


def build_trainer(method: str, script_args, training_args, model_args, items: Optional[Sequence[Mapping]] = None):
    """(trainer, data info): TRL's SFTTrainer or DPOTrainer, ready to ``train()``."""
    from transformers import AutoTokenizer
    from trl import DPOTrainer, SFTTrainer, get_peft_config

    path, dataset, data_info = check_inputs(method, script_args, training_args, model_args, items)
    tokenizer = AutoTokenizer.from_pretrained(path, revision=model_args.model_revision,
                                              trust_remote_code=training_args.trust_remote_code)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = load_base_model(path, model_args, training_args)
    training_args.model_init_kwargs = None  # applied above; TRL warns when set with a loaded model
    peft_config = get_peft_config(model_args)
    if script_args.adapter_name_or_path:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, script_args.adapter_name_or_path, is_trainable=True)
    if method == "dpo" and script_args.tax_aware_weight > 0:
        dataset = tax_aware_dataset(model, tokenizer, dataset, script_args, training_args, items, data_info)
    kwargs = dict(model=model, args=training_args, train_dataset=dataset, processing_class=tokenizer,
                  peft_config=peft_config)
    if method == "sft":
        trainer = SFTTrainer(**kwargs)
    else:
        uses_peft = peft_config is not None or script_args.adapter_name_or_path
        if script_args.ref_model_name_or_path:
            ref_path = resolve_base_model(script_args.ref_model_name_or_path, trust_remote_code=training_args.trust_remote_code)
            kwargs["ref_model"] = load_base_model(ref_path, model_args, training_args, revision="main")
        elif not uses_peft:
            # Full fine-tuning: the reference is the initial model, its log-probs computed once.
            training_args.precompute_ref_log_probs = True
        trainer = DPOTrainer(**kwargs)
    if script_args.trajectory_every_n_steps:
        attach_trajectory(trainer, tokenizer, script_args, training_args)
    data_info["base_model"] = str(model_args.model_name_or_path or path)
    data_info["base_model_path"] = path
    return trainer, data_info


def _sampled_train_items(script_args, training_args, items: Optional[Sequence[Mapping]]) -> List[Mapping]:
    from vat_hf.data.sources import sample_scenes
    from vat_hf.train.data import load_training_items

    if items is None:
        items = load_training_items(script_args.data_source, columns=script_args.data_columns)
    return sample_scenes(list(items), script_args.max_scenes, seed=training_args.seed)


def tax_aware_dataset(model, tokenizer, dataset, script_args, training_args, items, data_info):
    """Plain DPO pairs followed by anchor pairs for the other values, ordered by the model's own
    judgments taken now, before training (see :mod:`vat_hf.train.anchors`)."""
    import datasets
    from accelerate import PartialState

    from vat_hf.evaluation import Evaluator
    from vat_hf.train.anchors import tax_aware_pairs

    train_items = _sampled_train_items(script_args, training_args, items)
    others = [item for item in train_items if item["value"] != script_args.target_value]
    if getattr(model, "hf_quantizer", None) is None:
        model.to(PartialState().device)
    earlier = Evaluator(model, tokenizer, progress=False).judge(others)
    model.train()
    rows = tax_aware_pairs(list(dataset), train_items, earlier, script_args.target_value, script_args.tax_aware_weight,
                           seed=training_args.seed, min_margin=script_args.tax_aware_min_margin)
    anchors = [row["anchor_value"] for row in rows if row.get("anchor_value")]
    data_info["tax_aware"] = {"weight": script_args.tax_aware_weight, "min_margin": script_args.tax_aware_min_margin,
                              "n_target_pairs": len(dataset), "n_anchor_pairs": len(anchors),
                              "anchor_values": {v: anchors.count(v) for v in sorted(set(anchors))}}
    data_info["n_examples"] = len(rows)
    return datasets.Dataset.from_list([{k: v for k, v in row.items() if k != "anchor_value"} for row in rows])


def attach_trajectory(trainer, tokenizer, script_args, training_args):
    """The gain–tax trajectory callback on a fixed sample of the data source's ``test`` items."""
    from vat_hf.data import load_items
    from vat_hf.train.trajectory import VATTrajectoryCallback, sample_items

    test_items = load_items(script_args.data_source, split="test", seed=training_args.seed, columns=script_args.data_columns)
    sample = sample_items(test_items, script_args.trajectory_n_items, seed=training_args.seed)
    return VATTrajectoryCallback(sample, tokenizer, script_args.target_value, every_n_steps=script_args.trajectory_every_n_steps,
                                 output_path=str(Path(training_args.output_dir) / "trajectory.jsonl"),
                                 n_bootstrap=script_args.trajectory_n_bootstrap, seed=training_args.seed).attach(trainer)


def trajectory_of(trainer):
    from vat_hf.train.trajectory import VATTrajectoryCallback

    for callback in trainer.callback_handler.callbacks:
        if isinstance(callback, VATTrajectoryCallback):
            return callback
    return None


def hyperparameters(training_args, model_args, trainer=None) -> Dict:
    hp = {key: _plain(getattr(training_args, key)) for key in TRAINING_KEYS if hasattr(training_args, key)}
    for new, old in EARLIER_NAMES.items():  # a transformers before 5.23: recorded under today's name
        if new in TRAINING_KEYS and new not in hp and hasattr(training_args, old):
            hp[new] = _plain(getattr(training_args, old))
    hp.update({key: _plain(getattr(model_args, key)) for key in MODEL_KEYS if hasattr(model_args, key)})
    world = getattr(training_args, "world_size", 1)
    hp["world_size"] = world
    hp["effective_batch_size"] = training_args.per_device_train_batch_size * training_args.gradient_accumulation_steps * world
    if hp.get("max_steps", -1) > 0:
        hp.pop("num_train_epochs", None)
    if not (hp.get("load_in_4bit") or hp.get("load_in_8bit")):
        for key in ("load_in_4bit", "load_in_8bit", "bnb_4bit_quant_type"):
            hp.pop(key, None)
    if not hp.get("use_peft"):
        for key in ("lora_r", "lora_alpha", "lora_dropout", "lora_target_modules", "use_rslora", "use_dora"):
            hp.pop(key, None)
    return hp


def push_folder(output_dir, training_args, token: Optional[str] = None) -> str:
    """Upload the finished folder (weights and our model card; not the checkpoints) to the Hub."""
    from huggingface_hub import HfApi

    repo_id = training_args.hub_model_id or Path(output_dir).name
    api = HfApi(token=token or training_args.hub_token)
    api.create_repo(repo_id, private=bool(getattr(training_args, "hub_private_repo", False)), exist_ok=True)
    api.upload_folder(repo_id=repo_id, folder_path=str(output_dir), commit_message="vat-hf: trained adapter and card",
                      ignore_patterns=["checkpoint-*", "checkpoint-*/**", "runs/**", "*.pt", "*.pth"])
    return repo_id


def run_training(method: str, script_args, training_args, model_args, items: Optional[Sequence[Mapping]] = None,
                 end: bool = False, extra_info: Optional[Mapping] = None) -> Path:
    """Train, save the adapter/model and its card; returns ``output_dir``.

    ``end=True`` (the command-line scripts) finishes trackers and destroys the process group
    at the end, which a multi-process launch needs to exit cleanly."""
    import contextlib

    from vat_hf.distributed import check_launch, end_distributed
    from vat_hf.io import folder_lock

    # The token goes to this process's environment (huggingface_hub reads HF_TOKEN), never into
    # the arguments the trainer pickles into training_args.bin beside every checkpoint.
    token, training_args.hub_token = training_args.hub_token, None
    if token:
        os.environ["HF_TOKEN"] = token
    if not training_args.output_dir:
        raise TrainingConfigError("output_dir is required: where the adapter (or model) and checkpoints go")
    world = training_args.world_size  # sets up this process's accelerator state (on first use)
    state = training_args.distributed_state
    check_launch(state.distributed_type.value if state is not None else "NO", world, what="training",
                 use_cpu=bool(training_args.use_cpu))
    output_dir = Path(training_args.output_dir)
    main = state is None or state.is_main_process
    with folder_lock(output_dir, what="training output_dir") if main else contextlib.nullcontext():
        return _train_and_save(method, script_args, training_args, model_args, items, end, extra_info, token)


def _train_and_save(method, script_args, training_args, model_args, items, end, extra_info, token) -> Path:
    from vat_hf.distributed import end_distributed
    from vat_hf.errors import disk_full, is_disk_full
    from vat_hf.provenance import git_commit, package_versions
    from vat_hf.train.card import write_model_card

    output_dir = Path(training_args.output_dir)
    fingerprint, config = training_fingerprint(method, script_args, training_args, model_args)
    resume = training_args.resume_from_checkpoint
    if resume:
        if not check_checkpoint(resume, fingerprint, config):
            logger.warning("%s has no %s: cannot check that it belongs to this recipe", resume, CHECKPOINT_RECORD)
    elif script_args.resume:  # checked before any weights are loaded
        resume = resume_checkpoint(output_dir, fingerprint, config)
        if resume:
            logger.warning("resuming from %s", resume)
        else:
            logger.warning("--resume: no checkpoint of this recipe in %s, training from the start", output_dir)
    trainer, data_info = build_trainer(method, script_args, training_args, model_args, items)
    trainer.add_callback(_checkpoint_record_callback(fingerprint, config))
    try:
        outcome = trainer.train(resume_from_checkpoint=resume)
        trainer.save_model(str(output_dir))
    except (OSError, RuntimeError) as err:
        if is_disk_full(err):
            raise disk_full(output_dir, err) from err
        raise
    if trainer.accelerator.is_main_process:
        metrics = {k: v for k, v in (outcome.metrics or {}).items() if k in ("train_runtime", "train_steps_per_second", "epoch")}
        # Over every step, resumed or not (the trainer's own train_loss covers this session's steps only).
        loss, covered = logged_train_loss(trainer.state.log_history)
        metrics["train_loss"] = loss
        if covered != outcome.global_step:
            metrics["train_loss_steps"] = covered
        metrics["global_step"] = outcome.global_step
        info = {
            "method": method,
            "name": output_dir.name,
            "target_value": script_args.target_value,
            "base_model": data_info.pop("base_model"),
            "base_model_path": data_info.pop("base_model_path"),
            "base_model_hub_id": hub_id_of(model_args.model_name_or_path),
            "peft": bool(model_args.use_peft or script_args.adapter_name_or_path),
            "init_adapter": script_args.adapter_name_or_path,
            "data": data_info,
            "hyperparameters": hyperparameters(training_args, model_args, trainer),
            "train_metrics": metrics,
            "resumed_from": resume,
            "distributed": {"type": trainer.accelerator.distributed_type.value,
                            "num_processes": trainer.accelerator.num_processes},
            "versions": package_versions(),
            "git_commit": git_commit(),
            **dict(extra_info or {}),
            "fingerprint": fingerprint,
        }
        trajectory = trajectory_of(trainer)
        if trajectory is not None:
            info["trajectory"] = {"every_n_steps": trajectory.every_n_steps, "n_items": len(trajectory.items),
                                  "file": "trajectory.jsonl", "drift_onset": trajectory.onset()}
        write_model_card(output_dir, info)
        if training_args.push_to_hub:
            repo = push_folder(output_dir, training_args, token=token)
            trainer.accelerator.print(f"pushed {output_dir} to https://huggingface.co/{repo}")
    if end:
        end_distributed(trainer.accelerator)  # waits for every process, then ends (see vat_hf.distributed)
    else:
        trainer.accelerator.wait_for_everyone()
    return output_dir



def command_line(method: str, argv: Optional[Sequence[str]] = None) -> int:
    """``python -m vat_hf.train.{sft,dpo}``: parse the recipe and flags, train; a user error is
    printed as ``error: <message>`` with exit status 1 (``-v``: with the traceback)."""
    import sys

    from vat_hf.errors import run_main, wants_verbose
    from vat_hf.redaction import install_log_redaction
    from vat_hf.train.config import parse_training_args

    argv = list(sys.argv[1:] if argv is None else argv)
    verbose = wants_verbose(argv)
    argv = [a for a in argv if a not in ("-v", "--verbose")]
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    install_log_redaction()
    return run_main(lambda: run_training(method, *parse_training_args(method, argv), end=True) and 0, verbose)
