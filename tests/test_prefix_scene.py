"""Prefix reuse down to the scene: items of one scene continue from their scene's prefix.

Every test compares with full encoding (no prefix reuse, one item per batch): reuse must change
the cost of judging, never the judgments."""

import logging

import pytest
import torch

from vat_hf.evaluation import Evaluator
from vat_hf.evaluation import judge as judge_module
from vat_hf.evaluation.prefix import NODE_KINDS, PrefixCache, common_prefix_length, scene_dummies
from vat_hf.evaluation.task import JudgeStats
from vat_hf.prompts import JudgePrompt

TOL = 1e-4


def scene_items(n_scenes=4, per_scene=3, prefix="i"):
    """``per_scene`` items per scene, scenarios and actions of different lengths."""
    out = []
    for s in range(n_scenes):
        scenario = f"I live in country {s}, and a neighbour asks me for help. " * (1 + s % 3)
        for a in range(per_scene):
            out.append({"id": f"{prefix}{s}-{a}", "scene_id": f"scene-{s}", "scenario": scenario,
                        "action": "I help them " + "gladly and at once " * (a % 3) + f"(option {a}).",
                        "value": "Benevolence", "polarity": 1 if a % 2 else -1, "split": "test"})
    return out


def few_shot_prompt(k=2):
    demos = tuple((f"Scenario: a demonstration scene {j} " * 4 + f"\nAction: I act {j}.", f"Rating: {1 + j % 5}")
                  for j in range(k))
    return JudgePrompt(system="You value kindness above all.", demonstrations=demos, name=f"test-k{k}")


def full_encoding(model, prompt, its, tokenizer=None):
    return Evaluator(model.model, tokenizer or model.tokenizer, prompt=prompt, max_batch_size=1, prefix_reuse=False,
                     progress=False).judge(its)


def max_diff(a, b, key="probs"):
    return max(abs(x - y) for r, s in zip(a, b) for x, y in zip(r[key], s[key]))


def record_attention_forms(monkeypatch):
    """The names of the shared-prefix attention forms each layer of each packed pass takes (the
    prefix read once and merged, or copied into the rows), in call order."""
    from vat_hf.evaluation import prefix as prefix_module

    forms = []
    for name in ("attend_with_shared_prefix", "attend_with_copied_prefix"):
        original = getattr(prefix_module, name)
        monkeypatch.setattr(prefix_module, name, lambda *a, _f=original, _n=name: forms.append(_n) or _f(*a))
    return forms


def assert_same_judgments(got, want):
    assert [r["id"] for r in got] == [r["id"] for r in want]
    assert max_diff(got, want) < TOL
    assert max(abs(a["rating"] - b["rating"]) for a, b in zip(got, want)) < TOL
    assert max(abs(a["option_mass"] - b["option_mass"]) / b["option_mass"] for a, b in zip(got, want)) < TOL
    assert [a["argmax"] for a in got] == [b["argmax"] for b in want]


def test_scene_prefixes_equal_full_encoding_and_read_fewer_tokens(sharp_model):
    prompt = few_shot_prompt(2)
    its = scene_items(4, 3)
    ev = Evaluator(sharp_model.model, sharp_model.tokenizer, prompt=prompt, max_batch_size=4, progress=False)
    got = ev.judge(its)
    assert ev.stats.n_prefix == len(its) and ev.stats.n_scene_prefix == len(its)
    # Four scenes, all run by the scene pass (the root comes from the check's full encoding), below
    # one stem: "I live in country" is the common start of every scenario.
    assert ev.stats.scene_prefixes == 4 and ev.stats.stem_prefixes == 1 and ev.stats.scene_tokens > 3 * 10
    root_only = Evaluator(sharp_model.model, sharp_model.tokenizer, prompt=prompt, max_batch_size=4, progress=False)
    root_only.shared_prefix().scene_reuse = False
    baseline = root_only.judge(its)
    assert root_only.stats.n_scene_prefix == 0 and root_only.stats.n_prefix == len(its)
    # Each scene's tokens below the root are read once instead of once per item.
    saved = 2 * ev.stats.scene_tokens  # 3 items per scene: its tokens are read once, not 3 times
    assert ev.stats.tokens_read <= root_only.stats.tokens_read - saved + 2 * max(len(x) for x in ev.encode(its))
    want = full_encoding(sharp_model, prompt, its)
    assert_same_judgments(got, want)
    assert_same_judgments(baseline, want)
    # The distributions differ between items (and scenes), so the comparison is not vacuous.
    assert max_diff(want[:1] * len(want), want) > 1e-3


def test_stems_run_the_scenes_common_tokens_once(sharp_model, monkeypatch):
    """Scenes that open alike (here "I live in country ..."): the scene pass runs their common
    tokens once, as a stem, and each scene only its tokens past it; judgments stay those of full
    encoding, in the shared and the stitched layouts."""
    prompt = few_shot_prompt(1)
    its = scene_items(5, 2)
    want = full_encoding(sharp_model, prompt, its)
    runs = {}
    for layout in ("shared", "stitched"):
        ev = Evaluator(sharp_model.model, sharp_model.tokenizer, prompt=prompt, max_batch_size=4, progress=False)
        if layout == "stitched":
            ev._shared_attention = False
        got = ev.judge(its)
        assert ev.prefix_attention == layout and ev.stats.n_scene_prefix == len(its)
        assert ev.stats.stem_prefixes == 1 and ev.stats.scene_prefixes == 5
        assert_same_judgments(got, want)
        runs[layout] = ev.stats.scene_tokens
    monkeypatch.setattr(judge_module, "scene_stems", lambda *args: [])
    without = Evaluator(sharp_model.model, sharp_model.tokenizer, prompt=prompt, max_batch_size=4, progress=False)
    assert_same_judgments(without.judge(its), want)
    assert without.stats.stem_prefixes == 0
    root = without.shared_prefix()
    stem_tokens = common_prefix_length(without.encode(its)) - len(root)
    assert stem_tokens >= 4
    # The stem's tokens are run once instead of once per scene.
    assert runs["shared"] == runs["stitched"] == without.stats.scene_tokens - 4 * stem_tokens


def test_every_node_kind_has_its_counter_and_no_other_kind_is_made():
    # The scene pass counts each node it runs in ``JudgeStats.<kind>_prefixes``.
    assert all(isinstance(getattr(JudgeStats(), f"{kind}_prefixes"), int) for kind in NODE_KINDS)
    root = PrefixCache([0])
    assert root.kind == "root" and PrefixCache([0, 1], parent=root, kind="action").kind == "action"
    with pytest.raises(ValueError, match="expected one of"):
        PrefixCache([0, 1], parent=root, kind="leaf")


@pytest.mark.parametrize("min_action_tokens", [1, 4])
def test_action_nodes_run_the_opening_words_items_of_a_scene_share_once(sharp_model, monkeypatch, min_action_tokens):
    """Items of one scene whose actions open alike (items 0-2 of each scene: "I help them", fewer
    than 4 tokens; items 1 and 2: "I help them gladly and at once ..."): the scene pass runs those
    tokens once, as action nodes below the scene (the short common opening only with
    ``min_action_tokens`` 1, the default), and each item reads only its tokens past its node;
    judgments stay those of full encoding, in the shared and the stitched layouts."""
    prompt = few_shot_prompt(1)
    its = scene_items(3, 3)
    want = full_encoding(sharp_model, prompt, its)
    short = min_action_tokens == 1  # items 0-2's common opening is a node too
    runs = {}
    for layout in ("shared", "stitched"):
        ev = Evaluator(sharp_model.model, sharp_model.tokenizer, prompt=prompt, max_batch_size=4, progress=False)
        ev.min_action_tokens = min_action_tokens
        if layout == "stitched":
            ev._shared_attention = False
        got = ev.judge(its)
        assert ev.prefix_attention == layout and ev.stats.n_scene_prefix == len(its)
        assert ev.stats.action_prefixes == (6 if short else 3) and ev.stats.n_action_prefix == (9 if short else 6)
        assert ev.stats.scene_prefixes == 3 and ev.stats.stem_prefixes == 1
        assert_same_judgments(got, want)
        runs[layout] = ev.stats
    monkeypatch.setattr(judge_module, "action_nodes", lambda root, scene, rows, min_tokens: [scene] * len(rows))
    without = Evaluator(sharp_model.model, sharp_model.tokenizer, prompt=prompt, max_batch_size=4, progress=False)
    assert_same_judgments(without.judge(its), want)
    assert without.stats.action_prefixes == 0 and without.stats.n_action_prefix == 0
    encoded = without.encode(its)
    scene = common_prefix_length(without.encode(scene_dummies(its[0])))
    opening = common_prefix_length(encoded[1:3]) - scene  # items 1 and 2
    common = common_prefix_length(encoded[:3]) - scene  # items 0-2
    assert opening >= 4 and 1 <= common < 4
    # Items 1 and 2 no longer read their opening, item 0 (with short nodes) its common part.
    saved = 2 * opening + (common if short else 0)
    for stats in runs.values():
        # The scene pass runs each scene's shared opening once (both nodes together: ``opening``).
        assert stats.scene_tokens == without.stats.scene_tokens + 3 * opening
        assert stats.tokens_read <= without.stats.tokens_read - 3 * (saved - opening)


def _root_with_nodes(n_layers, lengths=(3, 5, 2), root_len=4, kv_heads=2, head_dim=4):
    """A root whose batch-1 cache has ``n_layers`` layers, and one node below it per length with
    random own keys/values (what the scene pass stores: layers, 2, kv_heads, tokens, head_dim)."""
    from transformers import DynamicCache

    torch.manual_seed(n_layers)
    root = PrefixCache(list(range(root_len)))
    root._cache = DynamicCache()
    for layer in range(n_layers):
        root._cache.update(torch.randn(1, kv_heads, root_len, head_dim), torch.randn(1, kv_heads, root_len, head_dim),
                           layer)
    nodes = []
    for n in lengths:
        node = PrefixCache(list(range(root_len + n)), parent=root)
        node.own = torch.randn(n_layers, 2, kv_heads, n, head_dim)
        nodes.append(node)
    return root, nodes


@pytest.mark.parametrize("shared", [False, True])
def test_a_scene_batch_copies_each_node_once_whatever_the_layer_count(shared):
    """prefix_batch lays each row's scene part (left-padded) into the batch's cache with one copy
    per distinct node, not one per layer and row: on a GPU each copy is a kernel launch, and with
    one per layer a 28-layer model's scene batches cost more than the tokens they saved."""
    from vat_hf.evaluation.prefix import prefix_batch

    copies = {}
    for n_layers in (2, 8):
        root, nodes = _root_with_nodes(n_layers)
        rows = [nodes[0], nodes[1], root, nodes[0], nodes[2], nodes[0]]  # node 0 in three rows
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            cache, mask, offsets = prefix_batch(root, rows, model=None, device="cpu", shared=shared)
        copies[n_layers] = sum(e.name in ("aten::copy_", "aten::index_put_") for e in prof.events())
        width = max(n.own_length for n in nodes)
        assert mask.shape == (len(rows), len(root) + width)
        for layer in range(n_layers):
            layer_cache = cache.layers[layer]
            parts = ((layer_cache.keys, layer_cache.values) if shared
                     else (layer_cache.scene_keys, layer_cache.scene_values))
            for kv, part in enumerate(parts):
                assert part.shape == (len(rows), 2, width, 4)
                for row, node in enumerate(rows):
                    n = 0 if node is root else node.own_length
                    assert torch.equal(part[row, :, width - n:], node.own[layer, kv] if n else part[row, :, width:])
                    assert not part[row, :, :width - n].any() and not mask[row, len(root):len(root) + width - n].any()
    # Three distinct nodes: as many copies with 2 layers as with 8 (with one per layer and row,
    # 20 and 80), at most two per node (its part, and the index of its rows when it has several).
    assert copies[2] == copies[8] <= 2 * 3


def test_scene_prefixes_need_one_key_shape_in_every_layer():
    """A node's keys are stacked across layers, so a cache whose layers differ in key/value heads
    (or keys from values in head size) uses the root only."""
    from transformers import DynamicCache

    from vat_hf.evaluation.prefix import supports_scene_prefixes

    root, _ = _root_with_nodes(3)
    assert supports_scene_prefixes(root._cache)
    uneven = DynamicCache()
    uneven.update(torch.randn(1, 2, 4, 4), torch.randn(1, 2, 4, 4), 0)
    uneven.update(torch.randn(1, 1, 4, 4), torch.randn(1, 1, 4, 4), 1)
    assert not supports_scene_prefixes(uneven)
    values_wider = DynamicCache()
    values_wider.update(torch.randn(1, 2, 4, 4), torch.randn(1, 2, 4, 8), 0)
    assert not supports_scene_prefixes(values_wider)


def test_a_scene_prefix_is_the_prompt_up_to_the_action(sharp_model):
    ev = Evaluator(sharp_model.model, sharp_model.tokenizer, prompt=few_shot_prompt(1), progress=False)
    root = ev.shared_prefix()
    item = scene_items(1, 1)[0]
    encoded = ev.encode(scene_dummies(item))
    ids = encoded[0][:common_prefix_length(encoded)]
    text = sharp_model.tokenizer.decode(ids[len(root):])
    assert text.startswith(" " + item["scenario"].split()[0]) and text.endswith("\nAction:")
    assert ev.encode([item])[0][:len(ids)] == ids


def test_mixed_scenes_in_one_batch(sharp_model, monkeypatch):
    """Rows of different scenes (different scene prefix lengths, and root-only rows) share a
    batch: each row's scene part is left-padded and masked inside the batch's cache."""
    prompt = few_shot_prompt(2)
    its = scene_items(3, 2) + [{**scene_items(1, 1, prefix="solo")[0], "scenario": "A scene of its own, alone."}]
    seen = []
    original = judge_module.prefix_batch

    def recording(root, nodes, *args, **kwargs):
        seen.append({id(n) for n in nodes})
        return original(root, nodes, *args, **kwargs)

    monkeypatch.setattr(judge_module, "prefix_batch", recording)
    ev = Evaluator(sharp_model.model, sharp_model.tokenizer, prompt=prompt, max_batch_size=64, progress=False)
    got = ev.judge(its)
    assert ev.stats.n_scene_prefix == 6 and ev.stats.n_prefix == 7
    assert max(len(s) for s in seen) == 4  # one batch held the three scenes and the root-only item
    assert_same_judgments(got, full_encoding(sharp_model, prompt, its))


def test_a_scene_whose_items_share_no_text_past_the_question(sharp_model):
    """Items of one scene id whose scenarios differ (and a scene of one item) get no scene prefix:
    the scene level groups by the rendered tokens, not by the id."""
    prompt = few_shot_prompt(1)
    its = [{**item, "scene_id": "one-scene", "scenario": f"Scenario text number {k} differs."}
           for k, item in enumerate(scene_items(1, 4))]
    ev = Evaluator(sharp_model.model, sharp_model.tokenizer, prompt=prompt, progress=False)
    got = ev.judge(its)
    assert ev.stats.n_prefix == 4 and ev.stats.n_scene_prefix == 0 and ev.stats.scene_prefixes == 0
    assert_same_judgments(got, full_encoding(sharp_model, prompt, its))


class MergingTokenizer:
    """SmolLM2's tokenizer, except that ":" followed by " Zed" becomes one token (as a BPE vocabulary
    with a ": Zed" merge would do): for an action starting with "Zed", the scene's last prefix
    token is not a token of the item's own encoding."""

    def __init__(self, tokenizer, merged_id):
        self._tokenizer = tokenizer
        self._pair = (tokenizer.encode(":", add_special_tokens=False)[0], tokenizer.encode(" Zed", add_special_tokens=False)[0])
        self._merged = merged_id

    def __getattr__(self, name):
        return getattr(self._tokenizer, name)

    def _merge(self, ids):
        out, i = [], 0
        while i < len(ids):
            if tuple(ids[i:i + 2]) == self._pair:
                out.append(self._merged)
                i += 2
            else:
                out.append(ids[i])
                i += 1
        return out

    def __call__(self, texts, **kwargs):
        encoded = self._tokenizer(texts, **kwargs)
        return {"input_ids": [self._merge(ids) for ids in encoded["input_ids"]]}


def test_a_tokenizer_that_merges_across_the_scene_boundary(sharp_model):
    """The scene prefix is found on token ids and an item continues from it only if its own
    encoding starts with exactly those ids: an item whose first action token merged with the
    prefix's last one is judged from the root prefix instead, with unchanged results."""
    tokenizer = MergingTokenizer(sharp_model.tokenizer, merged_id=1000)
    prompt = few_shot_prompt(1)
    its = scene_items(1, 3)
    its.append({**its[0], "id": "merged", "action": "Zed helps the neighbour."})
    ev = Evaluator(sharp_model.model, tokenizer, prompt=prompt, progress=False)
    assert 1000 in ev.encode([its[-1]])[0]  # the merge really happens
    got = ev.judge(its)
    assert ev.stats.n_prefix == 4 and ev.stats.n_scene_prefix == 3
    assert_same_judgments(got, full_encoding(sharp_model, prompt, its, tokenizer=tokenizer))


def test_the_scene_level_check_catches_reuse_that_changes_results(sharp_model, monkeypatch, caplog):
    """If continuing from a scene prefix does not reproduce full encoding (here: positions after
    the scene part shifted, as a model with other position handling would), the one-time check at
    that level turns it off with a warning; the root level stays on."""
    original = judge_module.prefix_batch

    def shifted(root, nodes, *args, **kwargs):
        cache, mask, offsets = original(root, nodes, *args, **kwargs)
        if mask.shape[1] > len(root):
            offsets = offsets - 3
        return cache, mask, offsets

    monkeypatch.setattr(judge_module, "prefix_batch", shifted)
    prompt = few_shot_prompt(2)
    its = scene_items(2, 3)
    ev = Evaluator(sharp_model.model, sharp_model.tokenizer, prompt=prompt, progress=False)
    with caplog.at_level(logging.WARNING):
        got = ev.judge(its)
    assert "scene prefix key/value reuse changed" in caplog.text
    assert ev.stats.n_prefix == len(its) and ev.stats.n_scene_prefix == 0
    assert ev.shared_prefix().scene_reuse is False
    monkeypatch.setattr(judge_module, "prefix_batch", original)
    assert_same_judgments(got, full_encoding(sharp_model, prompt, its))


def test_scene_prefixes_in_multitoken_and_generate_modes(sharp_model):
    prompt = few_shot_prompt(1)
    its = scene_items(2, 3)
    for mode in ("logprob-multitoken", "generate"):
        ev = Evaluator(sharp_model.model, sharp_model.tokenizer, prompt=prompt, mode=mode, max_new_tokens=3,
                       progress=False)
        got = ev.judge(its)
        assert ev.stats.n_scene_prefix == len(its)
        want = Evaluator(sharp_model.model, sharp_model.tokenizer, prompt=prompt, mode=mode, max_new_tokens=3,
                         prefix_reuse=False, max_batch_size=1, progress=False).judge(its)
        if mode == "generate":
            assert [r.get("generated") for r in got] == [r.get("generated") for r in want]
        else:
            assert_same_judgments(got, want)


@pytest.mark.slow
def test_embedded_model_scene_prefixes_equal_full_encoding(monkeypatch):
    """SmolLM2-135M-Instruct on built-in items (several items per scene), zero-shot: the two-level
    prefix cache gives the judgments of full encoding. The 78-token question is short beside each
    row's own keys, so the shared-prefix attention copies it into the rows (one attention call)."""
    from vat_hf.data import load_items
    from vat_hf.models import load_model

    forms = record_attention_forms(monkeypatch)
    loaded = load_model(None, device="cpu", dtype="float32")
    items = [i for i in load_items("builtin") if i.get("split") != "train"][:40]
    assert len({i["scenario"] for i in items}) < len(items) / 2
    ev = Evaluator(loaded.model, loaded.tokenizer, progress=False)
    got = ev.judge(items)
    assert ev.stats.n_scene_prefix >= len(items) // 2 and ev.prefix_attention == "shared"
    assert forms and set(forms) == {"attend_with_copied_prefix"}
    want = Evaluator(loaded.model, loaded.tokenizer, prefix_reuse=False, progress=False).judge(items)
    assert [a["argmax"] for a in got] == [b["argmax"] for b in want]
    assert max_diff(got, want) < TOL


@pytest.mark.parametrize("mode", ["logprob", "logprob-multitoken", "generate"])
def test_every_tensor_judging_sends_to_the_model_goes_through_host_to_device(sharp_model, monkeypatch, mode):
    """On a GPU a plain ``.to(device)`` (or ``torch.tensor(..., device=...)``) from pageable memory
    waits for the GPU to finish its queue, which would stop the host preparing a batch while the GPU
    runs the previous one; ``host_to_device`` copies through pinned memory without waiting. This CPU
    run records every such call made from the evaluation package's code while judging with scene
    prefixes in the stitched layout (the one GPUs take) and in each scoring mode."""
    import inspect
    from pathlib import Path

    from vat_hf.evaluation import prefix as prefix_module

    package = Path(prefix_module.__file__).parent
    plain, piped = [], []

    def caller():
        frame = inspect.currentframe().f_back.f_back
        path = Path(frame.f_code.co_filename)
        return f"{path.name}:{frame.f_lineno}" if path.parent == package and frame.f_code.co_name != "host_to_device" else None

    def is_device(value):
        return isinstance(value, torch.device) or (isinstance(value, str) and value.split(":")[0] in ("cpu", "cuda"))

    original_to, original_tensor, original_h2d = torch.Tensor.to, torch.tensor, prefix_module.host_to_device

    def to(self, *args, **kwargs):
        where = caller()
        if where and (any(is_device(a) for a in args) or "device" in kwargs):
            plain.append(where)
        return original_to(self, *args, **kwargs)

    def tensor(*args, **kwargs):
        where = caller()
        if where and kwargs.get("device") is not None:
            plain.append(where)
        return original_tensor(*args, **kwargs)

    def host_to_device(t, device):
        piped.append(t.shape)
        return original_h2d(t, device)

    monkeypatch.setattr(torch.Tensor, "to", to)
    monkeypatch.setattr(torch, "tensor", tensor)
    monkeypatch.setattr(prefix_module, "host_to_device", host_to_device)
    monkeypatch.setattr(judge_module, "host_to_device", host_to_device)
    ev = Evaluator(sharp_model.model, sharp_model.tokenizer, prompt=few_shot_prompt(2), mode=mode, max_batch_size=4,
                   progress=False)
    ev._shared_attention = False
    its = scene_items(3, 3)
    records = ev.judge(its)
    assert ev.stats.n_scene_prefix == len(its) and ev.stats.batches > 2
    assert len(records) == len(its)
    assert plain == []
    # Every batch sent its ids, mask and positions through it (the scene passes and items alike).
    assert len(piped) >= 3 * ev.stats.batches
