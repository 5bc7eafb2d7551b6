import pytest
import torch

from vat_hf.models import loading


def test_embedded_default_converts_once_and_is_reused(monkeypatch):
    folder = loading.embedded_model_dir()  # converts on a fresh machine, reuses afterwards
    assert (folder / "config.json").exists() and (folder / "vat_hf_conversion.json").exists()
    assert loading.embedded_gguf_file().suffix == ".gguf"

    def no_conversion(*args, **kwargs):
        raise AssertionError("a second load converted the GGUF again")

    monkeypatch.setattr("transformers.AutoModelForCausalLM.from_pretrained", no_conversion)
    assert loading.embedded_model_dir() == folder
    assert loading.resolve_model_path(None) == str(folder)
    assert loading.resolve_model_path("smollm2-135m-instruct") == str(folder)


def test_conversion_is_looked_up_in_the_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("VAT_HF_CACHE", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="has not been converted"):
        loading.embedded_model_dir(convert=False)


def test_missing_paths_are_clear_errors(tiny_model_dir):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        loading.load_model("./no/such/model")
    with pytest.raises(FileNotFoundError, match="adapter path .* does not exist"):
        loading.load_model(str(tiny_model_dir), adapter="./no/such/adapter")
    with pytest.raises(ValueError, match="unknown dtype"):
        loading.parse_dtype("float8")


def test_local_folder_and_peft_adapter_load(tiny_model_dir, tmp_path):
    from peft import LoraConfig, get_peft_model

    base = loading.load_model(str(tiny_model_dir), device="cpu")
    assert base.tokenizer.padding_side == "left" and base.adapter is None
    peft_model = get_peft_model(base.model, LoraConfig(r=2, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    peft_model.save_pretrained(tmp_path / "adapter")
    loaded = loading.load_model(str(tiny_model_dir), adapter=str(tmp_path / "adapter"), device="cpu")
    assert loaded.adapter == str(tmp_path / "adapter")
    from peft import PeftModel

    assert isinstance(loaded.model, PeftModel)
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.inference_mode():
        with_adapter = loaded.model(ids).logits
        without = loading.load_model(str(tiny_model_dir), device="cpu").model(ids).logits
    assert not torch.allclose(with_adapter, without)  # the (non-zero) adapter is applied, not merged away


@pytest.mark.slow
def test_conversion_is_plain_replaces_a_stale_folder_and_loads_without_quantization(monkeypatch, tmp_path):
    """The converted folder claims no quantization (its weights are dequantised fp32: a folder
    that says GGUF is refused by vLLM and by trainers), and a folder of an older conversion version
    (here: version 1's marker, config and a leftover file) is converted again, swapped in whole."""
    import json

    from transformers import AutoConfig, AutoModelForCausalLM

    monkeypatch.setenv("VAT_HF_CACHE", str(tmp_path))
    stale = tmp_path / "models" / loading.DEFAULT_MODEL
    stale.mkdir(parents=True)
    (stale / loading.CONVERSION_MARKER).write_text(json.dumps({"source": "x.gguf", "source_bytes": 1}))
    (stale / "config.json").write_text(json.dumps({"quantization_config": {"quant_method": "gguf"}}))
    (stale / "leftover.bin").write_text("from the old conversion")
    folder = loading.embedded_model_dir()
    assert folder == stale
    assert json.loads((folder / loading.CONVERSION_MARKER).read_text())["version"] == loading.CONVERSION_VERSION
    assert not (folder / "leftover.bin").exists()
    assert "quantization_config" not in json.loads((folder / "config.json").read_text())
    assert not [p for p in folder.parent.iterdir() if p.name != folder.name]  # no temporary folder left beside it
    assert getattr(AutoConfig.from_pretrained(folder), "quantization_config", None) is None
    model = AutoModelForCausalLM.from_pretrained(folder)
    assert getattr(model, "hf_quantizer", None) is None and model.dtype == torch.float32
    # The same weights as reading the GGUF file directly.
    gguf = loading.embedded_gguf_file()
    direct = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    ids = torch.tensor([[1, 2, 3, 4, 5]])
    with torch.inference_mode():
        assert torch.allclose(model(ids).logits, direct(ids).logits, atol=1e-5)
    # A second call reuses it.
    monkeypatch.setattr("transformers.AutoModelForCausalLM.from_pretrained", lambda *a, **k: 1 / 0)
    assert loading.embedded_model_dir() == folder


@pytest.mark.parametrize("capabilities, flags, expected", [
    ({"amx_bf16": True, "avx512_bf16": True}, set(), "amx_bf16"),
    ({"amx_bf16": False, "avx512_bf16": True}, set(), "avx512_bf16"),
    ({"amx_bf16": False, "avx512_bf16": False}, set(), None),
    ({}, {"avx2", "avx512_bf16"}, "avx512_bf16"),  # torch cannot say: /proc/cpuinfo can
    ({"architecture": "aarch64"}, {"fp", "asimd", "bf16"}, "bf16"),
])
def test_cpu_bf16_capability_is_detected_not_assumed(monkeypatch, capabilities, flags, expected):
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: capabilities)
    monkeypatch.setattr(loading, "_cpuinfo_flags", lambda: flags)
    assert loading.cpu_bf16_capability() == expected
    cpu = torch.device("cpu")
    # The CPU default stays float32 unless asked for; asked for, bf16 only where the CPU has it.
    assert loading.default_dtype(cpu) == torch.float32
    assert loading.default_dtype(cpu, prefer_bf16_on_cpu=True) == (torch.bfloat16 if expected else torch.float32)
    assert loading.dtype_record(cpu, loading.default_dtype(cpu)) == {"dtype": "float32", "device": "cpu",
                                                                    "cpu_bf16": expected}


def test_loaded_model_records_its_dtype(tiny_model_dir):
    assert loading.load_model(str(tiny_model_dir), device="cpu").dtype == "float32"
    loaded = loading.load_model(str(tiny_model_dir), device="cpu", dtype="bf16")
    assert loaded.dtype == "bfloat16" and next(loaded.model.parameters()).dtype == torch.bfloat16
