"""finloom: turn a general base LLM into a finance-specialised chat model, and measure that it worked."""

__version__ = "0.1.0"
