"""An item set on the Hugging Face Hub: its dataset card and its upload.

The card (:func:`dataset_card`) is a :class:`huggingface_hub.DatasetCard` built from a
:class:`huggingface_hub.DatasetCardData` (licence, language, task, tags, size) and a Jinja
template (:data:`CARD_TEMPLATE`, rendered by ``DatasetCard.from_template``) with sections on the
schema, the taxonomy, the construction, the splits, quality, the licence and the citation. The
``dataset_info`` (features, split sizes) and ``configs`` (which files hold which split) entries
are written into the card data by ``datasets``' own ``DatasetInfosDict.to_dataset_card_data``
and ``MetadataConfigs.to_dataset_card_data``: the public methods ``Dataset.push_to_hub`` itself
uses for its card, so ``load_dataset(repo_id)`` reads our card exactly as it reads one that
``datasets`` wrote.

The upload (:func:`push_to_hub`) is one commit: one Parquet file per split under ``data/``,
``vat_hf_metadata.json`` and ``README.md``; a dry run writes the same files to a folder.
"""

from __future__ import annotations

import io
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import datasets
from datasets.info import DatasetInfo, DatasetInfosDict
from datasets.utils.metadata import MetadataConfigs
from huggingface_hub import DatasetCard, DatasetCardData

from vat_hf import CITATION, PAPER_URL
from vat_hf.data.quality import check_items, quality_summary
from vat_hf.data.schema import FIELD_DOCS, FIELDS, ITEM_FEATURES, to_dataset
from vat_hf.data.storage import METADATA_FILE, items_metadata, read_items, read_metadata, split_parts
from vat_hf.io import atomic_write_bytes
from vat_hf.values import BASIC_VALUES, MICRO_VALUES, VALUES

logger = logging.getLogger(__name__)

HUB_SPLIT_FILE = "data/{split}-00000-of-00001.parquet"  # the layout of Dataset.push_to_hub
HUB_SPLIT_PATTERN = "data/{split}-*.parquet"
CARD_TAGS = ["schwartz-values", "value-alignment", "scenario-action", "vat-hf"]

# ---------------------------------------------------------------------------------------------
# The dataset card
# ---------------------------------------------------------------------------------------------

NOT_CONSTRUCTION = ("citation", "vat_hf_item_set", "quality", "license", "pretty_name")  # shown elsewhere in the card
MAX_CELL_CHARS = 600

CARD_TEMPLATE = """---
{{ card_data }}
---

# {{ pretty_name }}

Scenario–action items for measuring the **Value Alignment Tax** (VAT): how aligning a language model toward one \
Schwartz value moves its judgments of actions tied to the other values. Each item is one action in one concrete \
scene, tied to one basic value, either expressing it (`polarity = +1`) or going against it (`polarity = -1`). Made \
with vat-hf for the Value Alignment Tax ([Chen & Shen, 2026]({{ paper_url }})) (version {{ vat_hf_version }}).

**{{ n_items }} items** in **{{ n_scenes }} scenes**; countries: {{ countries }}; domains: {{ domains }}.

```python
from datasets import load_dataset
items = load_dataset({{ repo_id }})  # splits: {{ split_names }}
```

## Schema

| field | type | meaning |
|---|---|---|
{% for f in schema %}| `{{ f.name }}` | {{ f.dtype }} | {{ f.doc }} |
{% endfor %}
## Taxonomy

The ten basic values of Schwartz's theory (Schwartz 1992; 2012), in circumplex order (adjacent values are \
compatible, opposite ones conflict), with their higher-order group\
{% if with_micro %} and the Schwartz Value Survey items that map to them{% endif %}:

| value | higher-order group | definition |{% if with_micro %} survey items |{% endif %}
|---|---|---|{% if with_micro %}---|{% endif %}
{% for v in taxonomy %}| {{ v.name }} | {{ v.group }} | {{ v.definition }} |{% if with_micro %} {{ v.items }} |{% endif %}
{% endfor %}
Hedonism is counted in Openness to Change (it shares elements with Self-Enhancement).

## Construction

{% if construction %}| key | value |
|---|---|
{% for k, v in construction %}| `{{ k }}` | {{ v }} |
{% endfor %}
The full construction record (generator, prompts, seed, sampling settings) is in `{{ metadata_file }}`.
{% else %}No construction record was given.
{% endif %}
## Splits

Splits are assigned **per scene**: every item of a scene is in the same split, so no scene used to build an \
intervention (`train`) is ever evaluated (`test`).

| split | items | scenes |
|---|---|---|
{% for s in splits %}| {{ s.name }} | {{ s.n_items }} | {{ s.n_scenes }} |
{% endfor %}{% if quality %}
## Quality checks

From `vat_hf.data.quality.check_items`:

{% for k, v in quality %}- **{{ k }}**: {{ v }}
{% endfor %}{% endif %}
## Licence

`{{ license }}`.{% if source_license %} {{ source_license }}.{% endif %}

## Citation

```bibtex
{{ citation }}
```
{% if source_citation %}
Source corpus:

```bibtex
{{ source_citation }}
```
{% endif %}"""
"""The card's Markdown (a Jinja template, as ``DatasetCard.from_template`` takes); ``{{ card_data }}``
is the YAML of the :class:`~huggingface_hub.DatasetCardData`."""


def _size_category(n: int) -> str:
    for limit, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n < limit:
            return label
    return "1M<n<10M"


def _cell(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    text = text.replace("|", "\\|").replace("\n", "<br>")
    return text if len(text) <= MAX_CELL_CHARS else text[:MAX_CELL_CHARS - 3] + "..."


def card_data(ds: datasets.Dataset, license: str = "other", pretty_name: str = "vat-hf item set") -> DatasetCardData:
    """The card's metadata: licence, language, task, tags, size, and through ``datasets`` the
    ``dataset_info`` (features; per split the number of examples and their Arrow bytes) and the
    ``configs`` entry mapping each split to its files (:data:`HUB_SPLIT_PATTERN`)."""
    parts = split_parts(ds)
    data = DatasetCardData(license=license, language=["en"], pretty_name=pretty_name,
                           task_categories=["text-classification"], size_categories=[_size_category(len(ds))],
                           tags=list(CARD_TAGS))
    split_dict = datasets.SplitDict()
    for name, part in parts.items():
        arrow_bytes = part.with_format("arrow")[:].nbytes  # what datasets calls a split's num_bytes
        split_dict.add(datasets.SplitInfo(name=name, num_examples=len(part), num_bytes=arrow_bytes))
    info = DatasetInfo(features=ITEM_FEATURES, splits=split_dict, dataset_size=sum(s.num_bytes for s in split_dict.values()))
    DatasetInfosDict({"default": info}).to_dataset_card_data(data)
    files = [{"split": name, "path": HUB_SPLIT_PATTERN.format(split=name)} for name in parts]
    MetadataConfigs({"default": {"data_files": files}}).to_dataset_card_data(data)
    return data


def dataset_card(ds: datasets.Dataset, metadata: Optional[Mapping[str, Any]] = None, repo_id: Optional[str] = None,
                 license: str = "other", pretty_name: Optional[str] = None,
                 quality: Optional[Mapping[str, Any]] = None) -> DatasetCard:
    """The README.md of an item set as a :class:`huggingface_hub.DatasetCard` (``str(card)`` is its
    text): :func:`card_data` and sections on the schema, taxonomy, construction, splits, quality,
    licence and citation."""
    meta = {**read_metadata(ds), **(metadata or {})}
    parts = split_parts(ds)
    name = pretty_name or meta.get("pretty_name") or (repo_id.split("/")[-1] if repo_id else "vat-hf item set")
    with_micro = any(m for m in ds["micro_value"])
    return DatasetCard.from_template(
        card_data(ds, license=license, pretty_name=name), template_str=CARD_TEMPLATE,
        pretty_name=name, paper_url=PAPER_URL, vat_hf_version=meta.get("vat_hf_version", "?"),
        n_items=len(ds), n_scenes=len(set(ds["scene_id"])), countries=", ".join(sorted(set(ds["country"]))),
        domains=", ".join(sorted(set(ds["domain"]))), repo_id=repr(repo_id or "REPO_ID"), split_names=", ".join(parts),
        schema=[{"name": f, "dtype": ITEM_FEATURES[f].dtype, "doc": FIELD_DOCS[f]} for f in FIELDS],
        with_micro=with_micro,
        taxonomy=[{"name": v, "group": VALUES[v].higher_order, "definition": VALUES[v].definition,
                   "items": ", ".join(m for m, b in MICRO_VALUES.items() if b == v)} for v in BASIC_VALUES],
        construction=[(k, _cell(v)) for k, v in meta.items() if k not in NOT_CONSTRUCTION], metadata_file=METADATA_FILE,
        splits=[{"name": s, "n_items": len(part), "n_scenes": len(set(part["scene_id"]))} for s, part in parts.items()],
        quality=list((quality or {}).items()), license=license, source_license=meta.get("license"),
        citation=CITATION, source_citation=meta.get("citation"),
    )


# ---------------------------------------------------------------------------------------------
# Push to the Hub
# ---------------------------------------------------------------------------------------------


@dataclass
class PushResult:
    repo_id: str
    files: Dict[str, bytes]  # path in the repo -> content
    card: str
    commit: Any = None  # huggingface_hub.CommitInfo, None for a dry run
    deleted: List[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"https://huggingface.co/datasets/{self.repo_id}"


def hub_files(ds: datasets.Dataset, metadata: Optional[Mapping[str, Any]] = None, repo_id: Optional[str] = None,
              license: str = "other", pretty_name: Optional[str] = None, with_quality: bool = True) -> Tuple[Dict[str, bytes], str]:
    """The files of an upload: one Parquet file per split (:data:`HUB_SPLIT_FILE`), the metadata
    JSON and the card. Returns ``(files, card text)``."""
    meta = items_metadata({**read_metadata(ds), **(metadata or {})})
    quality = None
    if with_quality:
        quality = quality_summary(check_items(ds))
        meta["quality"] = quality
    card = str(dataset_card(ds, meta, repo_id=repo_id, license=license, pretty_name=pretty_name, quality=quality))
    files: Dict[str, bytes] = {}
    for split, part in split_parts(ds).items():
        buffer = io.BytesIO()
        part.to_parquet(buffer)
        files[HUB_SPLIT_FILE.format(split=split)] = buffer.getvalue()
    files[METADATA_FILE] = (json.dumps(meta, indent=2, ensure_ascii=False) + "\n").encode()
    files["README.md"] = card.encode()
    return files, card


def push_to_hub(items: Union[datasets.Dataset, Sequence[Mapping], str, Path], repo_id: str, *,
                metadata: Optional[Mapping[str, Any]] = None, license: str = "other", pretty_name: Optional[str] = None,
                private: Optional[bool] = None, token: Optional[str] = None, revision: Optional[str] = None,
                create_pr: bool = False, commit_message: Optional[str] = None, dry_run_dir: Optional[Union[str, Path]] = None,
                api: Any = None) -> PushResult:
    """Upload an item set to the Hub as a dataset repository, in one commit.

    ``items``: a Dataset, item rows, or a path of a saved item set. The set is validated first (a
    leaky or malformed set is never pushed). The commit holds one Parquet file per split under
    ``data/`` (loadable with ``load_dataset(repo_id)``), ``vat_hf_metadata.json`` and ``README.md``
    (:func:`dataset_card`); stale files under ``data/`` from earlier pushes are deleted in the same
    commit. ``dry_run_dir`` writes the files there instead (each atomically) and makes no network call.
    """
    if isinstance(items, (str, Path)):
        items = read_items(items)
    description = items.info.description if isinstance(items, datasets.Dataset) else ""
    ds = to_dataset(items)  # validate
    ds.info.description = description
    files, card = hub_files(ds, metadata, repo_id=repo_id, license=license, pretty_name=pretty_name)
    return commit_files(repo_id, files, card, private=private, token=token, revision=revision, create_pr=create_pr,
                        commit_message=commit_message or f"Upload vat-hf item set ({len(ds)} items)",
                        dry_run_dir=dry_run_dir, api=api)


def commit_files(repo_id: str, files: Mapping[str, bytes], card: str, *, commit_message: str,
                 private: Optional[bool] = None, token: Optional[str] = None, revision: Optional[str] = None,
                 create_pr: bool = False, dry_run_dir: Optional[Union[str, Path]] = None, api: Any = None) -> PushResult:
    """Upload ``files`` (path in the repo -> content) to a Hub dataset repository in one commit,
    deleting files under ``data/`` that an earlier push left and this one does not have;
    ``dry_run_dir`` writes them there instead (each atomically) and makes no network call. The
    one upload of vat-hf: item sets (:func:`push_to_hub`) and a sweep's results
    (:func:`vat_hf.report.hub.push_grid_summary`)."""
    files = dict(files)
    if dry_run_dir is not None:
        for name, content in files.items():
            atomic_write_bytes(Path(dry_run_dir) / name, content)
        return PushResult(repo_id=repo_id, files=files, card=card)

    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi

    api = api or HfApi(token=token)
    create_kwargs: Dict[str, Any] = {"repo_type": "dataset", "exist_ok": True}
    if private is not None:
        create_kwargs["private"] = private
    repo_url = api.create_repo(repo_id, **create_kwargs)
    repo_id = getattr(repo_url, "repo_id", None) or repo_id
    if revision is not None and not revision.startswith("refs/pr/"):
        api.create_branch(repo_id, branch=revision, repo_type="dataset", exist_ok=True)
    try:
        existing = api.list_repo_files(repo_id, repo_type="dataset", revision=revision)
    except Exception as err:  # a fresh repository, or a revision that does not exist yet
        logger.info("could not list %s (%s); nothing to delete", repo_id, err)
        existing = []
    stale = [p for p in existing if p.startswith("data/") and p not in files]
    operations: List[Any] = [CommitOperationDelete(path_in_repo=p) for p in stale]
    operations += [CommitOperationAdd(path_in_repo=name, path_or_fileobj=content) for name, content in files.items()]
    commit = api.create_commit(repo_id, operations=operations, repo_type="dataset", revision=revision, create_pr=create_pr,
                               commit_message=commit_message)
    return PushResult(repo_id=repo_id, files=files, card=card, commit=commit, deleted=stale)
