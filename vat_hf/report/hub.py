"""A sweep's results on the Hub, as a dataset: results, never items.

:func:`push_grid_summary` uploads, in one commit (:func:`vat_hf.data.hub.commit_files`, the one
upload of vat-hf), two configurations a reader loads with ``load_dataset(repo_id, "cells")`` or
``load_dataset(repo_id, "matrix")``:

* ``cells``: one row per cell of the grid (model, target, intervention, strength, status, gain
  with its interval and status, tax with its interval and chance level, vat, option mass, and the
  drift and gain-normalised drift of each value); ``vat`` and ``gnd_*`` are empty unless the
  cell's gain is resolved, and a flagged or failed cell has no numbers at all;
* ``matrix``: the trade-off matrices in long form (:func:`vat_hf.metrics.grid.matrix_csv_rows`);

with ``grid_summary.json`` and a ``README.md`` built from ``huggingface_hub.DatasetCardData``
(licence, tags, the two configurations) and :data:`CARD_TEMPLATE`.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

from vat_hf.io import read_json
from vat_hf.values import BASIC_VALUES

__all__ = ["grid_card", "grid_files", "grid_rows", "push_grid_summary"]

CELLS_FILE = "data/cells-00000-of-00001.parquet"
MATRIX_FILE = "data/matrix-00000-of-00001.parquet"
CARD_TAGS = ["vat-hf", "value-alignment", "schwartz-values", "value-alignment-tax", "evaluation-results"]

CARD_TEMPLATE = """---
{{ card_data }}
---

# {{ pretty_name }}

Results of a **Value Alignment Tax** sweep made with vat-hf: {{ n_cells }} cells ({{ counts }}), each one model \
aligned toward one Schwartz value by one intervention and judged before and after on the same \
scenario–action items. These are results, not items: the items are {{ items }}.

- models: {{ models }}
- target values: {{ targets }}
- interventions: {{ interventions }}

```python
from datasets import load_dataset
cells = load_dataset({{ repo_id }}, "cells")["train"]    # one row per cell
matrix = load_dataset({{ repo_id }}, "matrix")["train"]  # trade-off matrices, long form
```

## The `cells` configuration

| column | meaning |
|---|---|
| `cell`, `model`, `target_value`, `intervention`, `type`, `strength` | the cell |
| `status` | done, flagged (evaluated but not scored: option mass below `min_option_mass`), failed, not run |
| `gain`, `gain_low`, `gain_high`, `gain_status` | drift of the target value with its {{ confidence }} bootstrap interval (unit: {{ unit }}); resolved when the interval lies above 0 |
| `tax`, `tax_low`, `tax_high`, `tax_chance`, `tax_p` | mean absolute drift of the other values, its interval, its level by chance and the sign-flip p-value |
| `vat`, `vat_low`, `vat_high` | tax / gain, **empty unless the gain is resolved** |
| `option_mass_post` | mean probability on the five rating options after the intervention |
| `drift_<value>`, `gnd_<value>` | each value's drift, and its drift / gain (empty unless the gain is resolved) |

## The `matrix` configuration

For each model x intervention, the target (rows) x value (columns) drift with its interval, in circumplex \
order; the diagonal is each row's gain; `gnd` is empty where the row's gain is not resolved and \
`gnd_status` says why.

Measured with vat-hf ([Chen & Shen, 2026]({{ paper_url }})).

```bibtex
{{ citation }}
```
"""


def _ci(ci, k: int):
    return ci[k] if isinstance(ci, (list, tuple)) and len(ci) == 2 else None


def grid_rows(grid_dir) -> Tuple[List[Dict[str, Any]], List[Dict[str, Any]], Dict[str, Any]]:
    """``(cell rows, matrix rows, summary)`` read from a sweep's ``grid/`` folder."""
    from vat_hf.metrics.grid import matrix_csv_rows

    grid = Path(grid_dir)
    summary = read_json(grid / "summary.json")
    rows = []
    for c in summary["cells"]:
        status = c.get("status")
        resolved = c.get("gain_status") == "resolved"
        row = {"cell": c["cell"], "model": c.get("model_slug"), "target_value": c.get("target_value"),
               "intervention": c.get("intervention"), "type": c.get("type"), "strength": c.get("strength"),
               "status": status, "seconds": c.get("seconds"), "error": c.get("error"),
               "gain": c.get("gain"), "gain_low": _ci(c.get("gain_ci"), 0), "gain_high": _ci(c.get("gain_ci"), 1),
               "gain_status": c.get("gain_status"), "tax": c.get("tax"), "tax_low": _ci(c.get("tax_ci"), 0),
               "tax_high": _ci(c.get("tax_ci"), 1), "tax_chance": c.get("tax_null"), "tax_p": c.get("tax_p"),
               "vat": c.get("vat") if resolved else None, "vat_low": _ci(c.get("vat_ci"), 0) if resolved else None,
               "vat_high": _ci(c.get("vat_ci"), 1) if resolved else None, "option_mass_post": c.get("option_mass_post"),
               "n_items": c.get("n_items"), "data_fingerprint": c.get("data_fingerprint")}
        drift, gnd = c.get("drift") or {}, c.get("gnd") or {}
        for v in BASIC_VALUES:
            row[f"drift_{v}"] = drift.get(v)
            row[f"gnd_{v}"] = gnd.get(v) if resolved else None
        rows.append(row)
    matrix_rows = []
    for stem in summary.get("matrices") or []:
        matrix_rows += matrix_csv_rows(read_json(grid / "matrix" / f"{stem}.json"))
    return rows, matrix_rows, summary


def _parquet(rows: List[Mapping[str, Any]]) -> bytes:
    import datasets

    buffer = io.BytesIO()
    datasets.Dataset.from_list([dict(r) for r in rows]).to_parquet(buffer)
    return buffer.getvalue()


def grid_card(summary: Mapping[str, Any], repo_id: Optional[str] = None, license: str = "apache-2.0",
              pretty_name: Optional[str] = None):
    """The README.md of a pushed sweep as a :class:`huggingface_hub.DatasetCard`."""
    from huggingface_hub import DatasetCard, DatasetCardData

    from vat_hf import CITATION, PAPER_URL

    cells = summary["cells"]
    data = summary.get("data") or {}
    first_ci = next((c.get("gain_ci") for c in cells if c.get("gain_ci")), None)
    card_data = DatasetCardData(
        license=license, language=["en"], pretty_name=pretty_name or f"{summary['name']} (VAT sweep results)",
        tags=CARD_TAGS, size_categories=["n<1K"] if len(cells) < 1000 else ["1K<n<10K"],
        configs=[{"config_name": "cells", "data_files": [{"split": "train", "path": "data/cells-*.parquet"}]},
                 {"config_name": "matrix", "data_files": [{"split": "train", "path": "data/matrix-*.parquet"}]}])
    items = (f"{data.get('n_items')} items of {data.get('n_scenes')} {data.get('split') or ''} scenes of "
             f"`{data.get('source')}` (fingerprint `{data.get('fingerprint')}`)") if data else "not recorded"
    return DatasetCard.from_template(
        card_data, template_str=CARD_TEMPLATE, pretty_name=card_data.pretty_name, n_cells=len(cells),
        counts=", ".join(f"{v} {k}" for k, v in (summary.get("status_counts") or {}).items()), items=items,
        models=", ".join(sorted({str(c.get("model_slug")) for c in cells})),
        targets=", ".join(dict.fromkeys(str(c.get("target_value")) for c in cells)),
        interventions=", ".join(dict.fromkeys(str(c.get("intervention")) for c in cells)),
        repo_id=json.dumps(repo_id or "<repo id>"), confidence="95%" if first_ci else "", unit="scenes",
        paper_url=PAPER_URL, citation=CITATION)


def grid_files(grid_dir, repo_id: Optional[str] = None, license: str = "apache-2.0",
               pretty_name: Optional[str] = None) -> Tuple[Dict[str, bytes], str]:
    """The files of a grid push and the card's text."""
    rows, matrix_rows, summary = grid_rows(grid_dir)
    card = str(grid_card(summary, repo_id=repo_id, license=license, pretty_name=pretty_name))
    files = {CELLS_FILE: _parquet(rows), "grid_summary.json": (json.dumps(summary, indent=2) + "\n").encode(),
             "README.md": card.encode()}
    if matrix_rows:
        files[MATRIX_FILE] = _parquet(matrix_rows)
    return files, card


def push_grid_summary(output_dir: Union[str, Path], repo_id: str, *, license: str = "apache-2.0",
                      pretty_name: Optional[str] = None, private: Optional[bool] = None, token: Optional[str] = None,
                      revision: Optional[str] = None, create_pr: bool = False, dry_run_dir=None, api: Any = None):
    """Push the grid summary of the sweep in ``output_dir`` (its ``grid/`` folder) as a Hub
    dataset, in one commit; ``dry_run_dir`` writes the files there instead."""
    from vat_hf.data.hub import commit_files

    grid = Path(output_dir) / "grid"
    if not (grid / "summary.json").exists():
        from vat_hf.errors import VatHfError

        raise VatHfError(f"{grid / 'summary.json'} does not exist", fix="run the sweep first (vat-hf run RECIPE)")
    files, card = grid_files(grid, repo_id=repo_id, license=license, pretty_name=pretty_name)
    n = len(read_json(grid / "summary.json")["cells"])
    return commit_files(repo_id, files, card, private=private, token=token, revision=revision, create_pr=create_pr,
                        commit_message=f"Upload vat-hf sweep results ({n} cells)", dry_run_dir=dry_run_dir, api=api)
