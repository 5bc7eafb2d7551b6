"""vat-hf: measure the Value Alignment Tax of aligning a language model toward one Schwartz value."""

__version__ = "0.1.0"
