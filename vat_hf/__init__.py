"""vat-hf: measure the Value Alignment Tax of aligning a language model toward one Schwartz value."""

__version__ = "0.1.0"

PAPER_URL = "https://arxiv.org/abs/2602.12134"
CITATION = """@inproceedings{chen2026valuealignmenttax,
  title     = {Value Alignment Tax: Measuring Value Trade-offs in LLM Alignment},
  author    = {Chen, Jiajun and Shen, Hua},
  booktitle = {Findings of the Association for Computational Linguistics: ACL 2026},
  year      = {2026},
  url       = {https://arxiv.org/abs/2602.12134}
}"""
