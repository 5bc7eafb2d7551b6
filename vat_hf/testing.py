"""Tiny random models for tests and examples: seconds to build, nothing downloaded.

The tokenizer is SmolLM2's (taken from the embedded default's converted folder, so chat template
and option tokens are real); the weights are a 2-layer random Llama of that vocabulary.
"""

from __future__ import annotations

from pathlib import Path

import torch


def make_tiny_model_dir(path, seed: int = 0, hidden_size: int = 32, num_layers: int = 2) -> Path:
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from vat_hf.models import embedded_model_dir

    path = Path(path)
    tokenizer = AutoTokenizer.from_pretrained(embedded_model_dir())
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=4096, tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
