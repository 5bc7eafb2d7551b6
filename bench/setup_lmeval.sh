#!/usr/bin/env bash
# A separate environment for lm-evaluation-harness, used only by bench/bench_eval_vs_lmeval.py.
# It is kept apart from the project's .venv so lm_eval's dependency pins never touch vat-hf's.
# torch==2.13.0 is installed first (the CPU build on this machine's wheel cache; a bare `torch`
# would pull a multi-GB CUDA build), then lm_eval[hf]==0.4.13.
# Usage: bash bench/setup_lmeval.sh   (then: .venv/bin/python bench/bench_eval_vs_lmeval.py)
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${LMEVAL_VENV:-$HERE/.venv-lmeval}"
PYTHON="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/pip" install -q --upgrade pip
"$VENV/bin/pip" install -q torch==2.13.0
# The same transformers as the project's environment (when there is one), so both sides run the
# same modeling code; the hf extra brings accelerate and peft.
PIN=""
if [ -x "$HERE/../.venv/bin/python" ]; then
  PIN="transformers==$("$HERE/../.venv/bin/python" -c 'import transformers; print(transformers.__version__)')"
fi
"$VENV/bin/pip" install -q "lm_eval[hf]==0.4.13" $PIN
"$VENV/bin/python" -c "import lm_eval, torch, transformers; print('lm_eval', lm_eval.__version__ if hasattr(lm_eval, '__version__') else '0.4.13', 'torch', torch.__version__, 'transformers', transformers.__version__)"
echo "lm-evaluation-harness environment ready: $VENV"
