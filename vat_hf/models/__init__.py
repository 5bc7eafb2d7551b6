"""Model loading: Hub ids, local folders, PEFT adapters and the embedded default."""

from vat_hf.models.loading import (
    DEFAULT_MODEL,
    LoadedModel,
    cache_dir,
    embedded_model_dir,
    is_embedded,
    load_model,
    load_tokenizer,
    resolve_model_path,
)

__all__ = ["DEFAULT_MODEL", "LoadedModel", "cache_dir", "embedded_model_dir", "is_embedded", "load_model",
           "load_tokenizer", "resolve_model_path"]
