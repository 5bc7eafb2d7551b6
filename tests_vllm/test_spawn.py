"""vLLM's CPU platform starts its engine and worker processes with ``spawn``
(``VLLM_WORKER_MULTIPROC_METHOD`` is forced to ``spawn``): every entry point that builds a
``vllm.LLM`` needs the ``if __name__ == "__main__":`` guard."""

from __future__ import annotations

import subprocess
import sys
import textwrap

SCRIPT = """
import vllm
llm = vllm.LLM(model={model!r}, dtype="float32", max_model_len=512, kv_cache_memory_bytes=1 << 28,
               enforce_eager=True)
print("OUT", llm.generate([{{"prompt_token_ids": [1, 2, 3]}}], vllm.SamplingParams(max_tokens=1), use_tqdm=False)[0]
      .outputs[0].token_ids)
"""


def run(path, timeout=600):
    return subprocess.run([sys.executable, str(path)], capture_output=True, text=True, timeout=timeout)


def test_a_script_without_the_main_guard_fails_and_with_it_works(model_dir, tmp_path):
    body = SCRIPT.format(model=str(model_dir))
    unguarded = tmp_path / "unguarded.py"
    unguarded.write_text(body)
    result = run(unguarded)
    assert result.returncode != 0
    assert "bootstrapping phase" in result.stderr or "freeze_support" in result.stderr
    guarded = tmp_path / "guarded.py"
    guarded.write_text("def main():\n" + textwrap.indent(body, "    ") + "\n\nif __name__ == '__main__':\n    main()\n")
    result = run(guarded)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "OUT [" in result.stdout
