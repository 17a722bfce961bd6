"""The model to start from (an existing HF model or a tiny scratch one) and the teacher / judge LLM client."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from finloom.recipe.base import Section


MAX_SCRATCH_PARAMETERS = 20 * 10**9


class ScratchModel(Section):
    """A small Llama-architecture model and byte-level BPE tokenizer built from the recipe's corpus."""

    vocab_size: int = Field(4096, ge=300, le=2**20, description="BPE vocabulary size, special tokens included.")
    hidden_size: int = Field(128, ge=8, le=2**15)
    intermediate_size: int = Field(352, ge=8, le=2**17)
    num_layers: int = Field(4, ge=1, le=1024)
    num_heads: int = Field(4, ge=1, le=1024)
    num_kv_heads: int = Field(2, ge=1, description="Grouped-query attention: key/value heads.")
    max_position_embeddings: int = Field(512, ge=16, le=2**20)
    tokenizer_max_chars: int = Field(
        3_000_000, ge=1000, description="At most this many corpus characters train the tokenizer."
    )

    @model_validator(mode="after")
    def _heads_divide(self) -> "ScratchModel":
        if self.hidden_size % self.num_heads:
            raise ValueError("hidden_size must be a multiple of num_heads")
        if self.num_heads % self.num_kv_heads:
            raise ValueError("num_heads must be a multiple of num_kv_heads")
        if self.parameters() > MAX_SCRATCH_PARAMETERS:
            raise ValueError(f"about {self.parameters() / 1e9:.1f} billion parameters; a scratch model is built and "
                             f"pretrained here, so it is capped at {MAX_SCRATCH_PARAMETERS / 1e9:.0f} billion "
                             "(start from an existing model with model.hf instead)")
        return self

    def parameters(self) -> int:
        """The Llama model's parameter count: embeddings and head, attention and MLP of every layer."""
        head_dim = self.hidden_size // self.num_heads
        attention = 2 * self.hidden_size * self.hidden_size + 2 * self.hidden_size * self.num_kv_heads * head_dim
        mlp = 3 * self.hidden_size * self.intermediate_size
        return 2 * self.vocab_size * self.hidden_size + self.num_layers * (attention + mlp)


class ModelLoading(Section):
    """How every model of a run is loaded: the safety switches and the precision (``llm.loading`` reads these)."""

    allow_pickle: bool = Field(False, description="Allow loading non-safetensors weights.")
    trust_remote_code: bool = Field(False, description="Run model code shipped with the checkpoint.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    hub_kernels: bool = Field(False, description="Let transformers swap layers for kernels it downloads from the "
                                                 "Hugging Face Hub (kernels-community; its default since 5.x). Off: "
                                                 "nothing is fetched at run time, so an offline GPU machine trains.")


class ModelSection(ModelLoading):
    """Exactly one of ``hf`` (an existing model) or ``scratch`` (build a tiny one)."""

    hf: str | None = Field(None, description="Local directory or Hub id of a causal LM.")
    scratch: ScratchModel | None = None
    chat_template: str | None = Field(
        None, description="The chat stages' template: 'plain' (uses only the model's EOS token), 'chatml' (adds "
                          "<|im_start|> / <|im_end|>), or a Jinja file. Default: the model's own, else plain.")

    @model_validator(mode="after")
    def _exactly_one(self) -> "ModelSection":
        if (self.hf is None) == (self.scratch is None):
            raise ValueError("set exactly one of model.hf or model.scratch")
        return self


class ClientSection(Section):
    """The teacher / judge LLM: an OpenAI-compatible endpoint or a local HF model directory."""

    base_url: str | None = Field(None, description="e.g. http://127.0.0.1:8000/v1")
    local_model: str | None = Field(
        None, description="Local HF model directory, run in-process; 'stage:NAME' is that stage's model of the run "
                          "(a self-judging demo: the quickstart's scenarios are judged by its own align model).")
    model: str = "default"
    api_key_env: str | None = Field(None, description="Environment variable holding the API key.")
    timeout_s: float = Field(60.0, gt=0)
    max_retries: int = Field(4, ge=0)
    concurrency: int = Field(4, ge=1)

    @model_validator(mode="after")
    def _one_backend(self) -> "ClientSection":
        if (self.base_url is None) == (self.local_model is None):
            raise ValueError("set exactly one of base_url or local_model")
        return self


