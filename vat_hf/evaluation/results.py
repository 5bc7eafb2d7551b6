"""The result schema, in the manner of lm-evaluation-harness: one results file per evaluation,
per-sample records beside it, and per-intervention results that point to both.

Files of one evaluation named ``<name>`` (``vat-hf eval``, ``python -m vat_hf.evaluate``, and
every stage of ``vat-hf run``)::

    <output>                        judgments: one record per item, in item order (the metric reads these)
    <log_dir>/results_<name>.json   EVALUATION_SCHEMA: provenance (config, versions, seed, data
                                    fingerprint, date, timing, model/adapter/prompt/scoring
                                    fingerprints), the model and prompt, mode, summary, missing
                                    items with reasons, cache and batching statistics, files
    <log_dir>/samples_<name>.jsonl  one line per item (``log_samples``): doc_id, id, the item,
                                    the exact prompt text and its sha256, rating, distribution,
                                    option log-probabilities and mass, mode, missing reason

A ``vat-hf run`` intervention's result (``results/<name>.json``, INTERVENTION_SCHEMA) carries the
same provenance block, the two evaluations' summaries with the paths of their files, and the VAT
metric's output (``vat``) exactly as the metric returned it.
"""

from __future__ import annotations

import hashlib
from typing import Any, Dict, List, Mapping, Optional, Sequence

SCHEMA_VERSION = 1
EVALUATION_SCHEMA = "vat-hf/evaluation"
INTERVENTION_SCHEMA = "vat-hf/intervention"

SAMPLE_OUTPUT_KEYS = ("n_tokens", "mode", "rating", "probs", "option_logprobs", "option_mass", "argmax",
                      "missing_reason", "generated", "truncated_tokens", "score_path")


def prompt_text_hash(text: str) -> str:
    """sha256 of the exact prompt text the model read (lm-evaluation-harness's ``prompt_hash``)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def sample_records(items: Sequence[Mapping], records: Sequence[Mapping], tokenizer, prompt) -> List[Dict]:
    """The per-sample records of one evaluation: for each item, its record's outputs with the
    exact prompt text (rendered with ``tokenizer``'s chat template) and that text's hash."""
    from vat_hf.prompts import judge_text

    lines = []
    for doc_id, (item, record) in enumerate(zip(items, records)):
        try:  # no tokenizer (a served model judged through chat): the server renders the prompt
            text: Optional[str] = judge_text(tokenizer, prompt, item) if tokenizer is not None else None
        except Exception:  # an item that cannot even be rendered (its record says why)
            text = None
        lines.append({
            "doc_id": doc_id,
            "id": item.get("id"),
            "item": dict(item),
            "prompt": text,
            "prompt_hash": prompt_text_hash(text) if text is not None else None,
            "prompt_fingerprint": record.get("prompt_hash"),
            **{key: record.get(key) for key in SAMPLE_OUTPUT_KEYS},
        })
    return lines


def data_block(data_config: Mapping[str, Any], items: Sequence[Mapping], limit: Optional[int] = None) -> Dict[str, Any]:
    """What was judged: the data settings, the counts, the items' fingerprint and the item-id
    spelling it covers (:data:`vat_hf.data.ITEM_ID_VERSION`)."""
    from vat_hf.data import ITEM_ID_VERSION, items_fingerprint

    return {**dict(data_config), "limit": limit, "n_items": len(items),
            "n_scenes": len({item.get("scene_id") for item in items}), "fingerprint": items_fingerprint(items),
            "item_id_version": ITEM_ID_VERSION}


def evaluation_result(*, name: str, provenance: Mapping[str, Any], model: Mapping[str, Any], prompt, mode: str,
                      template: Optional[str], summary: Mapping[str, Any], records: Sequence[Mapping],
                      stats: Mapping[str, Any], world_size: int, files: Mapping[str, str]) -> Dict[str, Any]:
    """The results file of one evaluation (:data:`EVALUATION_SCHEMA`)."""
    return {
        "schema": EVALUATION_SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "name": name,
        **provenance,
        "model": dict(model),
        "prompt": {**prompt.to_dict(), "fingerprint": prompt.fingerprint()},
        "mode": mode,
        "template": template,
        "world_size": world_size,
        "summary": dict(summary),
        "missing": [{"id": r["id"], "reason": r.get("missing_reason")} for r in records if r["rating"] is None],
        "stats": dict(stats),
        "files": dict(files),
    }


def evaluation_pointer(result: Mapping[str, Any]) -> Dict[str, Any]:
    """How an intervention result refers to one of its evaluations: the summary, the files and
    the fingerprints."""
    return {**result["summary"], "name": result["name"], "fingerprints": result["fingerprints"], **result["files"]}


def intervention_result(*, name: str, target_value: str, model: Mapping[str, Any], intervention: Mapping[str, Any],
                        provenance: Mapping[str, Any], pre: Mapping[str, Any], post: Mapping[str, Any],
                        vat: Mapping[str, Any]) -> Dict[str, Any]:
    """The result of one intervention of ``vat-hf run`` (:data:`INTERVENTION_SCHEMA`): its two
    evaluations (``pre``, ``post``: their results dicts) and the VAT metric's output, untouched."""
    return {
        "schema": INTERVENTION_SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "name": name,
        "target_value": target_value,
        **provenance,
        "model": dict(model),
        "intervention": dict(intervention),
        "evaluation": {"pre": evaluation_pointer(pre), "post": evaluation_pointer(post)},
        "vat": vat,
    }
