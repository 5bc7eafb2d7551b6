"""The model card saved with every trained adapter or model.

Training writes ``vat_training.json`` (what was trained: method, base model, target value, data,
hyperparameters, versions) and renders ``README.md`` from it: a Hub model card built with
``huggingface_hub``'s ``ModelCardData`` (no hand-written YAML). When `vat-hf run` has scored the
adapter, :func:`add_vat_result` stores the VAT result in the JSON and renders the card again:
the results reach the card's ``model-index`` as ``EvalResult`` entries (gain, tax and vat on the
item set, named with its fingerprint as the dataset revision) and its Markdown body.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

from vat_hf.io import atomic_write_text, read_json, write_json
from vat_hf.metrics import formatting as fmt
from vat_hf.prompts import ADVICE_TEMPLATE
from vat_hf.redaction import redact

TRAINING_INFO = "vat_training.json"
CARD = "README.md"
METHOD_NAMES = {"sft": "supervised fine-tuning (TRL SFTTrainer)", "dpo": "Direct Preference Optimization (TRL DPOTrainer)"}


def _vat_section(vat: Mapping, experiment: Optional[str] = None) -> str:
    lines = ["## Value Alignment Tax", ""]
    target = vat.get("target_value")
    where = f" (experiment `{experiment}`)" if experiment else ""
    lines.append(f"Measured by `vat-hf run`{where} on {vat.get('n_items', '?')} test items (scenes never used for "
                 "training).")
    lines.append("")
    lines.append("| quantity | value |")
    lines.append("|---|---|")
    lines += [f"| {key} | {text} |" for key, text in fmt.summary_items(vat)]
    drift = vat.get("drift")
    if isinstance(drift, Mapping):
        drift_ci = (vat.get("ci") or {}).get("drift") or {}
        lines.append("")
        lines.append(f"Rating drift of each value (post - pre; {target} is the target):")
        lines.append("")
        lines.append("| value | drift |")
        lines.append("|---|---|")
        for name, value in drift.items():
            lines.append(f"| {name} | {fmt.estimate(value, drift_ci.get(name), signed=True)} |")
    lines += ["", "(gain: change of the target value's expression, resolved when its interval lies above 0; tax: mean "
              "|drift| of the other values, beside its level by chance; vat = tax / gain, defined only for a resolved "
              "gain; see the VAT metric card in vat-hf for definitions.)"]
    return "\n".join(lines)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _vat_is_defined(vat: Mapping) -> bool:
    """Whether vat may be shown as a number: the gain is resolved (``gain_status``), or, for a
    result without a status, the metric gave a number."""
    status = vat.get("gain_status")
    return _number(vat.get("vat")) and (status == "resolved" or status is None)


def _gain_status_note(vat: Mapping) -> Optional[str]:
    """The card's sentence, in words, when vat is not reported as a number."""
    if _vat_is_defined(vat):
        return None
    status = vat.get("gain_status")
    why = f"the gain's status is {fmt.gain_status_words(status)}" if status else "the metric gave no value"
    return f"vat (the tax relative to the gain) is not reported as a number: {why} (see the VAT metric card)."


def _title(info: Mapping) -> str:
    return info.get("name") or f"{Path(str(info.get('base_model'))).name}-{info['method']}-{info['target_value'].lower()}"


def eval_results(info: Mapping) -> List:
    """The card's ``model-index`` entries for the stored VAT result: ``gain`` always, ``tax``
    when the metric reports it, ``vat`` only when the gain is resolved."""
    from huggingface_hub import EvalResult

    vat = info.get("vat") or {}
    data = info.get("vat_data") or {}
    target = info["target_value"]
    source = str(data.get("source") or "builtin")
    split = data.get("split") or "test"
    common = dict(
        task_type="text-generation", task_name=f"Value Alignment Tax toward {target}",
        dataset_type="vat-hf/builtin" if source == "builtin" else source,
        dataset_name=f"vat-hf scenario-action items ({source}, {split} scenes)", dataset_split=split,
        dataset_revision=data.get("fingerprint"),
    )
    metrics = [("gain", f"gain (drift of {target})")]
    if "tax" in vat:
        metrics.append(("tax", "tax (mean |drift| of the other values)"))
    if _vat_is_defined(vat):
        metrics.append(("vat", "vat (tax / |gain|)"))
    return [EvalResult(metric_type=key, metric_name=name, metric_value=float(vat[key]), **common)
            for key, name in metrics if _number(vat.get(key))]


def card_data(info: Mapping):
    """The card's metadata as ``huggingface_hub.ModelCardData``."""
    from huggingface_hub import ModelCardData

    results = eval_results(info) if info.get("vat") else []
    return ModelCardData(
        library_name="peft" if info.get("peft") else "transformers",
        tags=["vat-hf", "trl", info["method"], "value-alignment", f"schwartz-{info['target_value'].lower()}"],
        license="apache-2.0",
        base_model=info.get("base_model_hub_id") or None,
        model_name=_title(info),
        eval_results=results or None,
    )


# The card is its metadata (rendered by huggingface_hub) followed by the Markdown body.
CARD_TEMPLATE = "---\n{{ card_data }}\n---\n\n{{ body }}"


def render_card(info: Mapping):
    """The ``huggingface_hub.ModelCard`` of a training-info mapping."""
    from huggingface_hub import ModelCard

    return ModelCard.from_template(card_data(info), template_str=CARD_TEMPLATE, body=card_body(info))


def card_body(info: Mapping) -> str:
    """The card's Markdown (everything below the metadata)."""
    method = info["method"]
    peft = info.get("peft")
    base = info.get("base_model")
    data = info.get("data", {})
    hp = info.get("hyperparameters", {})
    lines = [f"# {_title(info)}", ""]
    kind = "A LoRA adapter" if peft else "A fully fine-tuned model"
    lines += [f"{kind} trained with {METHOD_NAMES.get(method, method)} to align `{base}` toward the Schwartz value "
              f"**{info['target_value']}**, made by vat-hf to measure the Value Alignment Tax "
              "(the gain on the target value against the drift of the others).", ""]
    if peft:
        lines += ["Load it on the base model without merging:", "",
                  "```python",
                  "from transformers import AutoModelForCausalLM",
                  "from peft import PeftModel",
                  f"base = AutoModelForCausalLM.from_pretrained({str(info.get('base_model_hub_id') or base)!r})",
                  "model = PeftModel.from_pretrained(base, 'path/or/hub-id/of/this/adapter')",
                  "```", "",
                  "or judge items with it: `vat-hf eval --model BASE --adapter THIS -o judgments.jsonl`.", ""]
    lines += ["## Training data", "",
              f"- source: `{data.get('source')}`, **train scenes only** ({data.get('n_scenes')} scenes; "
              f"no test scene is ever used for training)",
              f"- {data.get('n_examples')} {'preference pairs' if method == 'dpo' else 'examples'} for target value "
              f"{info['target_value']}",
              ]
    if method == "dpo":
        lines.append("- chosen: an action expressing the target value; rejected: one going against it, same scene")
    else:
        lines.append("- completion: an action expressing the target value (loss on the completion only)")
    lines += ["", "User turn (from `vat_hf.prompts.ADVICE_TEMPLATE`, the evaluator's scene wording):", "",
              "```", ADVICE_TEMPLATE, "```", ""]
    lines += ["## Hyperparameters", "", "| key | value |", "|---|---|"]
    lines += [f"| {key} | {fmt.plain(value)} |" for key, value in hp.items() if value is not None]
    lines.append("")
    if info.get("train_metrics"):
        lines += ["## Training", "", "| metric | value |", "|---|---|"]
        lines += [f"| {k} | {fmt.plain(v)} |" for k, v in info["train_metrics"].items()]
        lines.append("")
    if info.get("vat"):
        lines += [_vat_section(info["vat"], info.get("vat_experiment")), ""]
        note = _gain_status_note(info["vat"])
        if note:
            lines += [note, ""]
    else:
        lines += ["## Value Alignment Tax", "", "Not measured yet: `vat-hf run` adds it here after evaluating this adapter.", ""]
    versions = info.get("versions") or {}
    if versions:
        lines += ["## Framework versions", ""]
        lines += [f"- {name}: {version}" for name, version in versions.items() if version]
        lines.append("")
    return "\n".join(lines)


def write_model_card(output_dir, info: Mapping) -> Path:
    """Store ``info`` as ``vat_training.json`` and render ``README.md`` next to the weights
    (both written atomically, without secrets: :func:`vat_hf.redaction.redact`; the card is
    rendered first, so a failure changes neither)."""
    output_dir = Path(output_dir)
    info = redact(dict(info))
    text = str(render_card(info))
    write_json(output_dir / TRAINING_INFO, dict(info))
    return atomic_write_text(output_dir / CARD, text)


def read_training_info(output_dir) -> Optional[Dict]:
    path = Path(output_dir) / TRAINING_INFO
    return read_json(path) if path.exists() else None


def add_vat_result(output_dir, vat: Mapping, data: Optional[Mapping] = None,
                   experiment: Optional[str] = None) -> Optional[Path]:
    """Add a VAT result (and ``data``: the judged item set's source, split and fingerprint;
    ``experiment``: the experiment's name, for a sweep's cell ``<sweep>/<cell id>``) to the card
    of a vat-hf-trained adapter (no-op for other folders)."""
    info = read_training_info(output_dir)
    if info is None:
        return None
    info["vat"] = dict(vat)
    if experiment:
        info["vat_experiment"] = experiment
    if data is not None:
        info["vat_data"] = {key: data.get(key) for key in ("source", "split", "n_items", "n_scenes", "fingerprint")}
    return write_model_card(output_dir, info)
