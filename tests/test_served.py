"""The served-model backend (``--backend openai``) against a small local server the test controls
(tests/fake_openai_server.py): real log-probabilities from the tiny model, faults on demand.

The reference is the transformers evaluator on the same model in the same process, so every
path's judgments are checked against real numbers; the faults check that nothing judged is lost
and that the judgment cache resumes a run that failed midway. The same backend against a real
vLLM server is in tests_vllm/test_serve.py."""

from __future__ import annotations

import logging
import socket
from pathlib import Path

import pytest

pytest.importorskip("openai", reason="the served-model backend needs the openai extra (pip install 'vat-hf[openai]')")

from fake_openai_server import FakeOpenAIServer  # noqa: E402

from vat_hf.evaluation import EvalConfig, Evaluator, run_evaluation  # noqa: E402
from vat_hf.evaluation.config import EvalConfigError  # noqa: E402
from vat_hf.evaluation.served import ServedEvaluator, ServedModelError, read_api_key  # noqa: E402
from vat_hf.io import read_jsonl  # noqa: E402
from vat_hf.prompts import JudgePrompt  # noqa: E402

from test_evaluator_scale import TOL, items, max_diff  # noqa: E402

KEY = "sk-vat-hf-test-0123456789-SECRET"


@pytest.fixture(scope="module")
def reference(sharp_model):
    """The transformers evaluator's judgments of the items, on the same model."""
    return Evaluator(sharp_model.model, sharp_model.tokenizer, progress=False).judge(items(12))


def served(server, tokenizer, **kwargs) -> ServedEvaluator:
    kwargs.setdefault("max_retries", 2)
    kwargs.setdefault("request_timeout", 20)
    return ServedEvaluator(server.base_url, model_name=server.name, tokenizer=tokenizer, progress=False,
                           api_key=server.api_key, **kwargs)


def paths(records):
    return {r.get("score_path") for r in records}


def config(server, tmp_path, **kwargs) -> EvalConfig:
    kwargs.setdefault("max_retries", 2)
    kwargs.setdefault("request_timeout", 20)
    return EvalConfig(backend="openai", base_url=server.base_url, model_name=server.name, progress=False,
                      cache_dir=str(tmp_path / "cache"), **kwargs)


# -- every scoring path gives the transformers evaluator's numbers ---------------------------------

def test_token_ids_path_equals_the_transformers_evaluator(sharp_model, reference):
    with FakeOpenAIServer(sharp_model.model, sharp_model.tokenizer) as server:
        backend = served(server, sharp_model.tokenizer)
        records = backend.judge(items(12))
    assert paths(records) == {"token-ids"} and backend.supports["token_ids"] is True
    assert max_diff(reference, records) < TOL
    assert [r["n_tokens"] for r in records] == [r["n_tokens"] for r in reference]
    # One request per item, each asking for exactly the five options' token ids.
    assert len(server.answered) == 12
    assert all(b["logprob_token_ids"] == backend.option_ids and b["max_tokens"] == 1 for b in server.answered)


def test_top_k_path_where_the_server_ignores_token_ids(sharp_model, reference):
    """A server that does not know ``logprob_token_ids`` ignores it; the backend sees that the
    options did not all come back, stops asking, and reads them from a top-k wide enough."""
    vocab = len(sharp_model.tokenizer)
    with FakeOpenAIServer(sharp_model.model, sharp_model.tokenizer, token_ids=False, max_logprobs=vocab) as server:
        backend = served(server, sharp_model.tokenizer, top_logprobs=vocab)
        records = backend.judge(items(12))
    assert paths(records) == {"top-k"} and backend.supports["token_ids"] is False
    assert max_diff(reference, records) < TOL
    assert sum("logprob_token_ids" in b for b in server.answered) == 1  # asked once, then no more


def test_items_whose_options_are_not_in_the_top_k_are_scored_per_option(sharp_model, reference):
    """With a top 5 of a random model's 49k tokens the options are missing: each such item is
    scored exactly, each option appended to the prompt with ``echo``."""
    with FakeOpenAIServer(sharp_model.model, sharp_model.tokenizer, token_ids=False) as server:
        backend = served(server, sharp_model.tokenizer, top_logprobs=5)
        records = backend.judge(items(6))
    assert paths(records) == {"per-option"} and backend.supports["echo"] is True
    assert max_diff(reference[:6], records) < TOL
    assert sum(bool(b.get("echo")) for b in server.answered) == 5 * 6


def test_without_log_probabilities_the_answer_is_generated(sharp_model):
    with FakeOpenAIServer(sharp_model.model, sharp_model.tokenizer, token_ids=False, echo=False,
                          logprobs=False) as server:
        backend = served(server, sharp_model.tokenizer)
        records = backend.judge(items(4))
    assert paths(records) == {"generate"} and {r["mode"] for r in records} == {"generate"}
    assert all(r.get("generated") is not None for r in records)
    assert backend.supports["echo"] is False


def test_multitoken_mode_scores_per_option(sharp_model, reference):
    with FakeOpenAIServer(sharp_model.model, sharp_model.tokenizer) as server:
        records = served(server, sharp_model.tokenizer, mode="logprob-multitoken").judge(items(6))
    multi = Evaluator(sharp_model.model, sharp_model.tokenizer, mode="logprob-multitoken", progress=False).judge(items(6))
    assert paths(records) == {"per-option"} and {r["mode"] for r in records} == {"logprob-multitoken"}
    assert max_diff(multi, records) < TOL


def test_chat_with_the_answer_prefilled_equals_the_evaluator(sharp_model, reference):
    with FakeOpenAIServer(sharp_model.model, sharp_model.tokenizer) as server:
        backend = served(server, sharp_model.tokenizer, api="chat")
        records = backend.judge(items(12))
    assert paths(records) == {"token-ids"}
    assert max_diff(reference, records) < TOL
    assert all(b["messages"][-1] == {"role": "assistant", "content": "Rating: "} and b["continue_final_message"]
               for b in server.answered)


def test_chat_on_a_server_without_prefill_sends_the_messages_alone(sharp_model):
    with FakeOpenAIServer(sharp_model.model, sharp_model.tokenizer, prefill=False) as server:
        backend = served(server, None, api="chat")
        records = backend.judge(items(3))
    assert backend.supports["prefill"] is False
    assert all(b["messages"][-1]["role"] == "user" for b in server.answered)
    assert all(r["score_path"] in ("top-k", "token-ids", "generate") for r in records)


def test_a_prompt_over_the_servers_context_is_recorded_missing_with_its_words(sharp_model):
    its = items(3)
    its[1] = dict(its[1], scenario="a long scenario " * 200)
    with FakeOpenAIServer(sharp_model.model, sharp_model.tokenizer, max_model_len=400) as server:
        backend = served(server, sharp_model.tokenizer, max_length=10_000)  # the server's limit, not ours
        records = backend.judge(its)
    assert records[1]["rating"] is None and "maximum context length is 400" in records[1]["missing_reason"]
    assert records[0]["rating"] is not None and records[2]["rating"] is not None


def test_top_logprobs_over_the_servers_limit_is_a_clear_error(sharp_model):
    with FakeOpenAIServer(sharp_model.model, sharp_model.tokenizer, token_ids=False, max_logprobs=20) as server:
        with pytest.raises(ServedModelError, match="top_logprobs"):
            served(server, sharp_model.tokenizer, top_logprobs=50).judge(items(3))


# -- faults: retried, nothing lost ------------------------------------------------------------------

def test_faults_are_retried_and_change_nothing(sharp_model, reference):
    """A 500, a 429 with Retry-After, a timeout, a malformed body and a connection dropped
    halfway through the answer: each request is retried and the judgments are the reference's."""
    with FakeOpenAIServer(sharp_model.model, sharp_model.tokenizer, slow_s=3.0) as server:
        server.faults = ["500", "429", "timeout", "malformed", "drop", "500", None, "drop"]
        backend = served(server, sharp_model.tokenizer, max_retries=3, request_timeout=1.5, max_concurrency=4)
        records = backend.judge(items(12))
    assert max_diff(reference, records) < TOL and paths(records) == {"token-ids"}
    assert server.posts >= 12 + 7  # every fault cost a retry


def test_a_run_that_fails_midway_keeps_what_it_judged_and_resumes(sharp_model, reference, tmp_path):
    its = items(12)
    with FakeOpenAIServer(sharp_model.model, sharp_model.tokenizer) as server:
        cfg = config(server, tmp_path, max_retries=1, max_concurrency=2)
        server.fail_from = 6  # the server breaks down after five answers
        with pytest.raises(ServedModelError, match="rerun the same command") as failed:
            run_evaluation(cfg, items=its, prompt=JudgePrompt(), output=tmp_path / "j.jsonl",
                           model=str(sharp_model.resolved_path))
        assert "5 of 12 items were judged" in str(failed.value)
        assert not (tmp_path / "j.jsonl").exists()
        caches = list((tmp_path / "cache" / "judgments").iterdir())
        assert len(caches) == 1 and len(read_jsonl(caches[0] / "part-0.jsonl")) == 5
        judged_before = {tuple(b["prompt"]) for b in server.answered}
        server.fail_from = None
        server.answered.clear()
        results = run_evaluation(cfg, items=its, prompt=JudgePrompt(), output=tmp_path / "j.jsonl",
                                 model=str(sharp_model.resolved_path))
    assert results["stats"]["n_cached"] == 5 and results["stats"]["n_computed"] == 7
    assert len(server.answered) == 7 and not judged_before & {tuple(b["prompt"]) for b in server.answered}
    assert max_diff(reference, read_jsonl(tmp_path / "j.jsonl")) < TOL


# -- clear errors ------------------------------------------------------------------------------------

def test_an_unreachable_server_is_a_clear_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once the socket is closed
    backend = ServedEvaluator(f"http://127.0.0.1:{port}/v1", model_name="m", api="chat", max_retries=0, progress=False)
    with pytest.raises(ServedModelError, match="cannot reach the server at http://127.0.0.1") as err:
        backend.judge(items(2))
    assert "is the server running" in str(err.value)


def test_a_bad_key_and_an_unknown_model_are_clear_errors(sharp_model):
    with FakeOpenAIServer(sharp_model.model, sharp_model.tokenizer, api_key=KEY) as server:
        bad = ServedEvaluator(server.base_url, model_name=server.name, tokenizer=sharp_model.tokenizer,
                              api_key="sk-wrong", progress=False, api_key_source="$MY_KEY")
        with pytest.raises(ServedModelError, match="refused the API key") as err:
            bad.judge(items(2))
        assert "$MY_KEY" in str(err.value) and "sk-wrong" not in str(err.value)
        unknown = ServedEvaluator(server.base_url, model_name="no-such-model", tokenizer=sharp_model.tokenizer,
                                  api_key=KEY, progress=False)
        with pytest.raises(ServedModelError, match="does not serve model 'no-such-model'") as err:
            unknown.judge(items(2))
        assert "'tiny'" in str(err.value)


def test_the_key_is_never_written(sharp_model, tmp_path, monkeypatch, caplog, capsys):
    """The key is read from the environment and sent to the server (which checks it), and
    appears in no file the run writes (judgments, results, samples, cache) nor in any log line."""
    monkeypatch.setenv("VAT_HF_TEST_KEY", KEY)
    caplog.set_level(logging.DEBUG)
    with FakeOpenAIServer(sharp_model.model, sharp_model.tokenizer, api_key=KEY) as server:
        server.faults = ["500", "malformed"]
        cfg = config(server, tmp_path, api_key_env="VAT_HF_TEST_KEY")
        results = run_evaluation(cfg, items=items(4), prompt=JudgePrompt(), output=tmp_path / "out" / "j.jsonl",
                                 model=str(sharp_model.resolved_path))
    assert server.authorizations and all(a == f"Bearer {KEY}" for a in server.authorizations)
    assert results["summary"]["n_missing"] == 0
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(written) >= 4
    for path in written:
        assert KEY not in path.read_text(encoding="utf-8", errors="replace"), path
    assert KEY not in caplog.text and KEY not in "".join(capsys.readouterr())
    assert "VAT_HF_TEST_KEY" in str(results["config"]["eval"]["api_key_env"])


def test_read_api_key_from_a_file_or_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("SOME_KEY", " from-env \n")
    assert read_api_key("SOME_KEY", None) == "from-env"
    (tmp_path / "key").write_text("from-file\nignored\n")
    assert read_api_key("SOME_KEY", str(tmp_path / "key")) == "from-file"
    assert read_api_key("UNSET_KEY_VARIABLE", None) is None
    with pytest.raises(ServedModelError, match="does not exist"):
        read_api_key(None, str(tmp_path / "nope"))


def test_config_refuses_a_key_in_the_address_and_a_missing_address():
    with pytest.raises(EvalConfigError, match="credentials"):
        EvalConfig(backend="openai", base_url="http://user:sk-123@host:8000/v1")
    with pytest.raises(Exception, match="needs base_url"):
        run_evaluation(EvalConfig(backend="openai"), items=items(2), prompt=JudgePrompt(), output="unused.jsonl")
    with pytest.raises(EvalConfigError, match="vllm_engine_args"):
        EvalConfig(vllm_engine_args="{not json")
    assert EvalConfig(vllm_engine_args='{"tensor_parallel_size": 2}').vllm_engine_args == {"tensor_parallel_size": 2}


# -- the command line --------------------------------------------------------------------------------

def test_vat_hf_eval_with_the_openai_backend(sharp_model, tmp_path):
    from vat_hf.evaluate import main
    from vat_hf.io import write_jsonl

    source = tmp_path / "items.jsonl"
    write_jsonl(source, [dict(i, country="Japan", domain="work") for i in items(12)])
    with FakeOpenAIServer(sharp_model.model, sharp_model.tokenizer) as server:
        code = main(["--backend", "openai", "--base_url", server.base_url, "--model_name", server.name,
                     "--model", str(sharp_model.resolved_path), "--source", str(source), "--split", "",
                     "-o", str(tmp_path / "j.jsonl"), "--cache_dir", str(tmp_path / "cache"), "--progress", "false"])
    assert code == 0
    from vat_hf.io import read_json

    results = read_json(tmp_path / "results_j.json")
    model = results["model"]
    assert model["backend"] == "openai" and model["model_name"] == "tiny" and model["dtype"] is None
    assert model["score_paths"] == {"token-ids": 12} and model["server_model"]["max_model_len"] == 4096
    samples = read_jsonl(tmp_path / "samples_j.jsonl")
    assert {s["score_path"] for s in samples} == {"token-ids"} and all(s["prompt"] for s in samples)
    from vat_hf.data import load_items

    loaded = load_items(str(source), split=None)  # as the command read them (the loader tidies the text)
    want = Evaluator(sharp_model.model, sharp_model.tokenizer, progress=False).judge(loaded)
    assert max_diff(want, read_jsonl(tmp_path / "j.jsonl")) < TOL


def test_an_adapter_on_a_served_model_is_refused(tmp_path):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    cfg = EvalConfig(backend="openai", base_url="http://127.0.0.1:9/v1", model_name="m", progress=False)
    with pytest.raises(Exception, match="cannot load an adapter"):
        run_evaluation(cfg, items=items(2), prompt=JudgePrompt(), output=tmp_path / "j.jsonl", adapter=str(adapter))


def test_results_of_a_fully_cached_run_need_no_server(sharp_model, tmp_path):
    with FakeOpenAIServer(sharp_model.model, sharp_model.tokenizer) as server:
        cfg = config(server, tmp_path)
        run_evaluation(cfg, items=items(4), prompt=JudgePrompt(), output=tmp_path / "a.jsonl",
                       model=str(sharp_model.resolved_path))
    # The server is gone; every judgment is cached, so the same run still completes.
    again = run_evaluation(cfg, items=items(4), prompt=JudgePrompt(), output=tmp_path / "b.jsonl",
                           model=str(sharp_model.resolved_path))
    assert again["stats"]["n_cached"] == 4 and read_jsonl(tmp_path / "a.jsonl") == read_jsonl(tmp_path / "b.jsonl")
    assert Path(again["files"]["results"]).exists()
