#!/usr/bin/env bash
# Prepares, on this machine, what the GPU checks need on a lent device machine (no network there):
# wheels of the packages its image lacks (trl, datasets, evaluate, pydantic and their needs,
# at the versions of this .venv, for its Python 3.12) and SmolLM2's tokenizer, all under .whl/
# (git-ignored; about 5 MB). The image's own torch, transformers, accelerate, peft and
# huggingface_hub are used as they are. Then, through the device tool, with carry [".whl"]:
#     bash bench/gpu_checks.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
rm -rf .whl && mkdir -p .whl
pins=$($PY -m pip freeze | grep -iE '^(trl|datasets|evaluate|dill|multiprocess|pydantic|pydantic_core|annotated-types|typing-inspection|typing_extensions)==')
$PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl $pins
$PY - <<'PYEOF'
from transformers import AutoTokenizer

from vat_hf.models import embedded_model_dir

AutoTokenizer.from_pretrained(embedded_model_dir()).save_pretrained(".whl/smollm2-tokenizer")
PYEOF
ls .whl && du -sh .whl
