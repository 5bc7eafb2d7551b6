"""The model card saved with every trained adapter or model.

Training writes ``vat_training.json`` (what was trained: method, base model, target value, data,
hyperparameters, versions) and renders ``README.md`` from it: a Hub model card with YAML
metadata. When `vat-hf run` has scored the adapter, :func:`add_vat_result` stores the VAT
result in the JSON and renders the card again with a results section.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Mapping, Optional

import yaml

from vat_hf.io import read_json, write_json
from vat_hf.metrics import formatting as fmt
from vat_hf.prompts import ADVICE_TEMPLATE

TRAINING_INFO = "vat_training.json"
CARD = "README.md"
METHOD_NAMES = {"sft": "supervised fine-tuning (TRL SFTTrainer)", "dpo": "Direct Preference Optimization (TRL DPOTrainer)"}


def _vat_section(vat: Mapping) -> str:
    lines = ["## Value Alignment Tax", ""]
    target = vat.get("target_value")
    lines.append(f"Measured by `vat-hf run` on {vat.get('n_items', '?')} test items (scenes never used for training).")
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


def render_card(info: Mapping) -> str:
    """README.md text (YAML front matter + Markdown) from a training-info mapping."""
    method = info["method"]
    peft = info.get("peft")
    base = info.get("base_model")
    meta: Dict[str, Any] = {
        "library_name": "peft" if peft else "transformers",
        "tags": ["vat-hf", "trl", method, "value-alignment", f"schwartz-{info['target_value'].lower()}"],
        "license": "apache-2.0",
    }
    if info.get("base_model_hub_id"):
        meta["base_model"] = info["base_model_hub_id"]
    data = info.get("data", {})
    hp = info.get("hyperparameters", {})
    lines = ["---", yaml.safe_dump(meta, sort_keys=False).strip(), "---", ""]
    title = info.get("name") or f"{Path(str(base)).name}-{method}-{info['target_value'].lower()}"
    lines += [f"# {title}", ""]
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
        lines += [_vat_section(info["vat"]), ""]
    else:
        lines += ["## Value Alignment Tax", "", "Not measured yet: `vat-hf run` adds it here after evaluating this adapter.", ""]
    versions = info.get("versions") or {}
    if versions:
        lines += ["## Framework versions", ""]
        lines += [f"- {name}: {version}" for name, version in versions.items() if version]
        lines.append("")
    return "\n".join(lines)


def write_model_card(output_dir, info: Mapping) -> Path:
    """Store ``info`` as ``vat_training.json`` and render ``README.md`` next to the weights."""
    output_dir = Path(output_dir)
    write_json(output_dir / TRAINING_INFO, dict(info))
    path = output_dir / CARD
    path.write_text(render_card(info), encoding="utf-8")
    return path


def read_training_info(output_dir) -> Optional[Dict]:
    path = Path(output_dir) / TRAINING_INFO
    return read_json(path) if path.exists() else None


def add_vat_result(output_dir, vat: Mapping) -> Optional[Path]:
    """Add a VAT result to the card of a vat-hf-trained adapter (no-op for other folders)."""
    info = read_training_info(output_dir)
    if info is None:
        return None
    info["vat"] = dict(vat)
    return write_model_card(output_dir, info)
