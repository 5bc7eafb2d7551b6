"""vat-hf's evaluator against lm-evaluation-harness 0.4.13, side by side on one machine.

Both judge the same ValueActionLens items with the same model (SmolLM2-135M-Instruct, the embedded
default, fp32) and the same prompt text (vat-hf's chat-templated judging prompt, answer prefilled
with "Rating: "): for the harness, a 5-choice ``multiple_choice`` task generated from the items
(choices "1".."5"; the harness reads them from one forward pass, since the five continuations
share every token but the last). Reported: items/s of each, the ratio, and how often the two
pick the same most likely option (plus the largest difference of the renormalised distributions).

Settings: zero-shot (``JudgePrompt()``) and an 8-shot prompt intervention toward Benevolence
(value system prompt + 8 demonstrations from train scenes: about 1,000 shared prefix tokens).

    bash bench/setup_lmeval.sh                       # once: bench/.venv-lmeval with lm_eval 0.4.13
    .venv/bin/python bench/bench_eval_vs_lmeval.py   # --n-items 320 --shots 0 8 --batch-size 32

The harness runs in its own environment (a subprocess with bench/.venv-lmeval/bin/python); its
items/s is timed around its evaluation call only (model loading excluded on both sides), and its
core ``loglikelihood`` time is reported too. Ours is timed around ``Evaluator.judge`` (prompt
rendering, tokenisation, batching, forward passes, records). Timings on a shared machine are
noisy: rounds alternate between the two (the harness stays loaded in its subprocess between
rounds), the median of ``--repeats`` rounds is reported after ``--warmup`` untimed rounds of each side
(the harness's first evaluation runs slower than its later ones), and both wall-clock and CPU-time rates
are reported. With ``--threads 1`` (the default here) CPU time is the work each side does, which
other processes on the machine hardly change; the wall-clock ratio is the one a user sees.
"""

from __future__ import annotations

import argparse
import ast
import csv
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LENS_CSV = REPO.parent / "shared" / "data" / "value-action-lens" / "value_action_gap_full_data_generation.csv"
LMEVAL_PYTHON = REPO / "bench" / ".venv-lmeval" / "bin" / "python"


# -- items ----------------------------------------------------------------------------------------
def _local_parse(path: Path):
    """A small stand-in for vat_hf.data.lens: scenario from country and topic, action parsed from
    the generation_prompt JSON / Python literal (unrecoverable rows keep an empty action)."""
    items = []
    with open(path, newline="", encoding="utf-8") as handle:
        for row, rec in enumerate(csv.DictReader(handle)):
            text = rec["generation_prompt"] or ""
            action = ""
            match = re.search(r"\{.*\}", text, re.S)
            if match:
                for load in (json.loads, ast.literal_eval):
                    try:
                        action = str(load(match.group(0)).get("Human Action", ""))
                        break
                    except Exception:
                        continue
            scene = f"vl/{rec['country']}/{rec['topic']}".lower().replace(" ", "-")
            items.append({"id": f"{scene}/{row}", "scene_id": scene, "country": rec["country"], "domain": rec["topic"],
                          "scenario": f"I live in {rec['country']}, and I am facing a situation related to {rec['topic'].lower()}.",
                          "action": action, "value": rec["value"], "micro_value": rec["value"],
                          "polarity": 1 if rec["polarity"] == "positive" else -1,
                          "split": "train" if hash(scene) % 3 == 0 else "test"})
    return items


def corpus_items(path: Path = LENS_CSV, include_unrecovered: bool = False):
    """All corpus items through vat_hf.data.lens (or the local parse if it is not available).
    ``include_unrecovered``: also the rows whose action could not be recovered, with an empty
    action (the evaluator records them as missing)."""
    try:
        from vat_hf.data.lens import import_value_action_lens
        from vat_hf.data.schema import validate_items
    except ImportError:
        return _local_parse(path)
    imported = import_value_action_lens(path)
    items = validate_items(imported.dataset)
    if include_unrecovered:
        for f in imported.failures:
            items.append({"id": f"vl/unrecovered/{f['row']}", "scene_id": "vl/unrecovered", "country": f["country"],
                          "domain": f["topic"], "scenario": f"I live in {f['country']}, and I am facing a situation "
                          f"related to {f['topic'].lower()}.", "action": "", "value": None, "micro_value": f["value"],
                          "polarity": None, "split": "test"})
    return items


def bench_items(n: int, per_scene: int = 0):
    """``n`` test items (deterministic) and the train items. ``per_scene=0``: spread evenly over
    the corpus (about 1.8 items per scene for n=160: almost nothing below the question is shared);
    ``per_scene=k``: the first ``k`` items of ``n / k`` scenes spread evenly over the corpus (a real
    evaluation judges every item of each scene, about 110 per scene in this corpus)."""
    items = corpus_items()
    test = sorted((i for i in items if i["split"] == "test" and i["action"]), key=lambda i: i["id"])
    train = [i for i in items if i["split"] == "train"]
    if per_scene:
        scenes = {}
        for item in test:
            scenes.setdefault(item["scene_id"], []).append(item)
        names = sorted(scenes)
        wanted = -(-n // per_scene)
        step = max(1, len(names) // wanted)
        picked = [item for name in names[::step][:wanted] for item in scenes[name][:per_scene]]
        return picked[:n], train
    step = max(1, len(test) // n)
    return test[::step][:n], train


def prompt_for(shots: int, train):
    from vat_hf.interventions import value_prompt
    from vat_hf.prompts import JudgePrompt

    if shots == 0:
        return JudgePrompt(name="zero-shot")
    return value_prompt("Benevolence", train, k_shots=shots, seed=0, name=f"benevolence-k{shots}")


# -- lm-evaluation-harness ------------------------------------------------------------------------
LMEVAL_RUNNER = r'''
import json, sys, time
import torch
args = json.loads(sys.argv[1])
torch.set_num_threads(args["threads"])
from lm_eval import simple_evaluate
from lm_eval.models.huggingface import HFLM
from lm_eval.tasks import TaskManager
lm = HFLM(pretrained=args["model"], dtype="float32", device="cpu", batch_size=args["batch_size"])
core = {"seconds": 0.0, "cpu": 0.0}
inner = lm.loglikelihood
def timed(requests, *a, **k):
    t, c = time.perf_counter(), time.process_time()
    try:
        return inner(requests, *a, **k)
    finally:
        core["seconds"] += time.perf_counter() - t
        core["cpu"] += time.process_time() - c
lm.loglikelihood = timed
tm = TaskManager(include_path=args["task_dir"])
version = __import__("importlib.metadata").metadata.version("lm_eval")
print("LMEVAL_READY", flush=True)
for line in sys.stdin:  # one evaluation per "run" line, so the parent can alternate with its own runs
    if line.strip() != "run":
        break
    core.update(seconds=0.0, cpu=0.0)
    start, cpu = time.perf_counter(), time.process_time()
    out = simple_evaluate(model=lm, tasks=[args["task"]], task_manager=tm, log_samples=True, num_fewshot=0,
                          bootstrap_iters=0, verbosity="ERROR")
    run = {"seconds": time.perf_counter() - start, "cpu_seconds": time.process_time() - cpu,
           "core_seconds": core["seconds"], "core_cpu_seconds": core["cpu"]}
    samples = out["samples"][args["task"]]
    logliks = {int(s["doc_id"]): [float(r[0]) for r in s["filtered_resps"]] for s in samples}
    print("LMEVAL_RESULT " + json.dumps({"run": run, "logliks": logliks, "version": version}), flush=True)
'''


class Harness:
    """lm-evaluation-harness in its own environment, kept alive between runs (model loaded once)."""

    def __init__(self, python: Path, model_dir: Path, task_dir: Path, task: str, batch_size: int, threads: int):
        args = {"model": str(model_dir), "task_dir": str(task_dir), "task": task, "batch_size": batch_size,
                "threads": threads}
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
        self.stderr = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen([str(python), "-c", LMEVAL_RUNNER, json.dumps(args)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self.stderr, text=True, env=env)
        self._expect("LMEVAL_READY")

    def _expect(self, prefix: str) -> str:
        for line in self.proc.stdout:
            if line.startswith(prefix):
                return line[len(prefix):].strip()
        self.stderr.seek(0)
        raise RuntimeError(f"lm-evaluation-harness failed (rc {self.proc.wait()}):\n{self.stderr.read()[-4000:]}")

    def run(self) -> dict:
        self.proc.stdin.write("run\n")
        self.proc.stdin.flush()
        return json.loads(self._expect("LMEVAL_RESULT "))

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(timeout=60)


def write_task(task_dir: Path, name: str, texts):
    data = task_dir / f"{name}.jsonl"
    with open(data, "w", encoding="utf-8") as handle:
        for k, text in enumerate(texts):
            handle.write(json.dumps({"doc_id": k, "text": text}, ensure_ascii=False) + "\n")
    # doc_to_text names the column, so the text goes in verbatim (no Jinja rendering); it ends in
    # "Rating: " and the choices follow with no delimiter, exactly as vat-hf reads the options.
    (task_dir / f"{name}.yaml").write_text(json.dumps({
        "task": name, "dataset_path": "json", "dataset_kwargs": {"data_files": {"test": str(data)}},
        "test_split": "test", "output_type": "multiple_choice", "doc_to_text": "text",
        "doc_to_choice": ["1", "2", "3", "4", "5"], "doc_to_target": 0, "target_delimiter": "",
        "metric_list": [{"metric": "acc"}],
    }, indent=1))


# -- ours -------------------------------------------------------------------------------------------
def run_ours(loaded, prompt, items, batch_size: int, max_batch_tokens: int, prefix_reuse, scene_reuse: bool = True,
             linear_kernel: str = "auto"):
    from vat_hf.evaluation import Evaluator

    evaluator = Evaluator(loaded.model, loaded.tokenizer, prompt=prompt, max_batch_size=batch_size,
                          max_batch_tokens=max_batch_tokens, progress=False, prefix_reuse=prefix_reuse,
                          linear_kernel=linear_kernel)
    if not scene_reuse and evaluator.shared_prefix() is not None:
        evaluator.shared_prefix().scene_reuse = False  # the question-level prefix only (as before issue 16)
    start, cpu = time.perf_counter(), time.process_time()
    records = evaluator.judge(items)
    return records, {"seconds": time.perf_counter() - start, "cpu_seconds": time.process_time() - cpu}, evaluator.stats.to_dict()


def bare_loop(loaded, prompt, items, batch_size: int):
    """The reference point: sorted fixed-size batches, one forward each, logits_to_keep=1."""
    import torch

    from vat_hf.evaluation import option_token_ids
    from vat_hf.evaluation.judge import left_pad
    from vat_hf.prompts import judge_text

    tok, model = loaded.tokenizer, loaded.model
    start, cpu = time.perf_counter(), time.process_time()
    ids = tok([judge_text(tok, prompt, i) for i in items], add_special_tokens=False)["input_ids"]
    order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
    options = option_token_ids(tok)
    with torch.inference_mode():
        for b in range(0, len(order), batch_size):
            batch = left_pad([ids[i] for i in order[b:b + batch_size]], tok.pad_token_id, "cpu")
            model(**batch, logits_to_keep=1).logits[:, -1].softmax(-1)[:, options].tolist()
    return {"seconds": time.perf_counter() - start, "cpu_seconds": time.process_time() - cpu}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-items", type=int, default=320)
    parser.add_argument("--per-scene", type=int, default=0,
                        help="items per scene (0: spread over the corpus, about 1.8 per scene for 160 items)")
    parser.add_argument("--root-only", action="store_true",
                        help="also time ours with the question-level prefix only (no scene prefixes)")
    parser.add_argument("--shots", type=int, nargs="+", default=[0, 8])
    parser.add_argument("--batch-size", type=int, default=32, help="rows per batch, both sides")
    parser.add_argument("--lmeval-batch-size", type=int, nargs="*", default=None,
                        help="the harness's batch size per setting (default --batch-size); it materialises "
                             "rows x tokens x vocabulary fp32 logits twice, which for 8-shot prompts at batch 32 "
                             "is about 15 GB, so use e.g. --lmeval-batch-size 32 8 on a small machine")
    parser.add_argument("--max-batch-tokens", type=int, default=8192, help="our token budget (suffix tokens with a cached prefix)")
    parser.add_argument("--repeats", type=int, default=3, help="alternating rounds; the median of each side is reported")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds of both sides before the timed ones")
    parser.add_argument("--threads", type=int, default=int(os.environ.get("BENCH_THREADS", 0)) or 1,
                        help="torch threads on both sides (1: CPU time measures work, immune to oversubscription)")
    parser.add_argument("--lmeval-python", type=Path, default=LMEVAL_PYTHON)
    parser.add_argument("--skip-lmeval", action="store_true")
    parser.add_argument("--bare", action="store_true", help="also time a bare sorted one-forward loop")
    parser.add_argument("--no-prefix-shots", type=int, nargs="*", default=[0],
                        help="settings in which ours is also timed without prefix reuse (slow for many shots)")
    parser.add_argument("--output", type=Path, default=REPO / "outputs" / "bench" / "eval_vs_lmeval.json")
    args = parser.parse_args(argv)

    import torch

    from vat_hf.io import write_json
    from vat_hf.models import embedded_model_dir, load_model
    from vat_hf.prompts import judge_text

    torch.set_num_threads(args.threads)
    if not args.skip_lmeval and not args.lmeval_python.exists():
        sys.exit(f"{args.lmeval_python} not found: run bash bench/setup_lmeval.sh first (or pass --skip-lmeval)")
    items, train = bench_items(args.n_items, args.per_scene)
    # The converted folder is a plain HF folder (no quantization entry since conversion version 2),
    # so both sides load it as it is.
    model_dir = embedded_model_dir()
    loaded = load_model(str(model_dir), device="cpu", dtype="float32")
    report = {"machine": {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count(),
                          "threads": args.threads, "torch": torch.__version__},
              "model": "SmolLM2-135M-Instruct (embedded default), float32, CPU", "n_items": len(items),
              "per_scene": args.per_scene, "n_scenes": len({i["scene_id"] for i in items}),
              "load_average_at_start": os.getloadavg(),
              "batch_size": args.batch_size, "warmup_rounds": args.warmup, "settings": []}
    with tempfile.TemporaryDirectory() as tmp:
        for setting_index, shots in enumerate(args.shots):
            lmeval_batch = args.lmeval_batch_size[setting_index] if args.lmeval_batch_size else args.batch_size
            prompt = prompt_for(shots, train)
            texts = [judge_text(loaded.tokenizer, prompt, item) for item in items]
            n_tokens = [len(x) for x in loaded.tokenizer(texts, add_special_tokens=False)["input_ids"]]
            task = f"vat_hf_bench_k{shots}"
            write_task(Path(tmp), task, texts)
            harness = None
            if not args.skip_lmeval:
                harness = Harness(args.lmeval_python, model_dir, Path(tmp), task, lmeval_batch, args.threads)
            runs = {"ours": [], "ours_torch_linear": [], "ours_root_only": [], "ours_no_prefix_reuse": [],
                    "bare_loop": [], "lmeval": []}
            logliks = version = None
            ours = partial(run_ours, loaded, prompt, items, args.batch_size, args.max_batch_tokens)

            def summary():
                n = len(items)
                median = {k: {m: statistics.median(r[m] for r in v) for m in ("seconds", "cpu_seconds")}
                        for k, v in runs.items() if v}
                setting = {"shots": shots, "prompt": prompt.name, "mean_prompt_tokens": sum(n_tokens) / n,
                           "shared_prefix_tokens": stats["prefix_tokens"], "items_with_prefix_reuse": stats["n_prefix"],
                           "items_with_scene_prefix": stats.get("n_scene_prefix"),
                           "scene_prefixes": stats.get("scene_prefixes"), "stem_prefixes": stats.get("stem_prefixes"),
                           "action_prefixes": stats.get("action_prefixes"),
                           "items_with_action_prefix": stats.get("n_action_prefix"), "tokens_read": stats["tokens_read"],
                           "linear_kernel": stats.get("linear_kernel"),
                           "load_average": os.getloadavg(),
                           "rounds": len(runs["ours"]), "runs": runs,
                           "items_per_s": {k: n / v["seconds"] for k, v in median.items()},
                           "items_per_cpu_s": {k: n / v["cpu_seconds"] for k, v in median.items()}}
                if runs["lmeval"]:
                    agree, max_diff = 0, 0.0
                    for k, record in enumerate(records):
                        theirs = torch.softmax(torch.tensor(logliks[str(k)], dtype=torch.float64), 0)  # JSON keys: str
                        agree += int(int(theirs.argmax()) + 1 == record["argmax"])
                        max_diff = max(max_diff, float((theirs - torch.tensor(record["probs"], dtype=torch.float64)).abs().max()))
                    setting.update({
                        "lmeval_version": version, "lmeval_batch_size": lmeval_batch,
                        "speedup": median["lmeval"]["seconds"] / median["ours"]["seconds"],
                        "speedup_cpu_time": median["lmeval"]["cpu_seconds"] / median["ours"]["cpu_seconds"],
                        "argmax_agreement": agree / n, "max_prob_diff": max_diff,
                    })
                return setting

            try:
                # Rounds alternate between the two (and the extra references), so that load from
                # other work on a shared machine falls on both; the median round of each is reported.
                # The report is rewritten after every round, so a killed run keeps what it measured.
                # Untimed warm-up rounds of both sides first: the harness's first evaluation of a
                # task ran 18-29% slower than its later ones (its loglikelihood time itself, on an
                # Intel Xeon, 2026-12-02); ours warms its allocator and kernels.
                for _ in range(args.warmup):
                    ours("auto")
                    if harness is not None:
                        harness.run()
                for _ in range(args.repeats):
                    records, timing, stats = ours("auto")
                    runs["ours"].append(timing)
                    if harness is not None:
                        out = harness.run()
                        runs["lmeval"].append(out["run"])
                        logliks, version = out["logliks"], out["version"]
                    # Ours with torch's own (MKL) linear kernel: what the kernel choice is worth here.
                    runs["ours_torch_linear"].append(ours("auto", linear_kernel="torch")[1])
                    if args.root_only:
                        runs["ours_root_only"].append(ours("auto", scene_reuse=False)[1])
                    if shots in args.no_prefix_shots:
                        runs["ours_no_prefix_reuse"].append(ours(False)[1])
                    if args.bare:
                        runs["bare_loop"].append(bare_loop(loaded, prompt, items, args.batch_size))
                    write_json(args.output, {**report, "settings": report["settings"] + [summary()], "complete": False})
            finally:
                if harness is not None:
                    harness.close()
            setting = summary()
            report["settings"].append(setting)
            print(json.dumps({k: v for k, v in setting.items() if k != "runs"}, indent=1), flush=True)
    write_json(args.output, {**report, "complete": True})
    print(f"-> {args.output}")


if __name__ == "__main__":
    main()
