"""Load and save Hugging Face models safely.

Weights load only from safetensors unless the recipe sets ``allow_pickle`` (pickle files can run
code), and model code shipped with a checkpoint runs only with ``trust_remote_code``. Every model
finloom writes is a plain HF directory (config, safetensors, tokenizer with chat template,
generation config) that ``from_pretrained`` and vLLM open directly.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from finloom.errors import BadInput
from finloom.files import atomic_dir, hash_path
from finloom.recipe import ModelLoading

DTYPES = {"auto": "auto", "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _check_weights(path: Path, allow_pickle: bool) -> None:
    if not path.is_dir():
        return  # a Hub id: from_pretrained enforces use_safetensors itself
    if not any(path.glob("*.safetensors")) and not allow_pickle:
        raise BadInput(
            f"{path}: no .safetensors weights; finloom loads pickle weights only with model.allow_pickle: true"
        )


SAFE = ModelLoading()
"""Safetensors only, no remote code, the checkpoint's own dtype: how a model loads when no recipe says otherwise."""


def load_tokenizer(path: str | Path, loading: ModelLoading = SAFE) -> PreTrainedTokenizerBase:
    tokenizer = AutoTokenizer.from_pretrained(str(path), trust_remote_code=loading.trust_remote_code)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_causal_lm(path: str | Path, loading: ModelLoading = SAFE, model_class=AutoModelForCausalLM,
                   **kwargs) -> PreTrainedModel:
    """Load a model directory (or Hub id) as the recipe's model section says (``recipe.model`` is a
    ``ModelLoading``): its safety switches and its dtype, the one place every stage loads a model through.

    Hub kernels stay off unless ``hub_kernels``: transformers 5 turns them on by default, and on a GPU the first
    ``model.train()`` then downloads kernels, which fails on an offline machine (seen on an H200)."""
    _check_weights(Path(path), loading.allow_pickle)
    try:
        return model_class.from_pretrained(
            str(path),
            use_safetensors=None if loading.allow_pickle else True,
            trust_remote_code=loading.trust_remote_code,
            dtype=DTYPES[loading.dtype],
            use_kernels=loading.hub_kernels,
            **kwargs,
        )
    except OSError as error:
        raise BadInput(f"cannot load model {path}: {error}") from None


def load_trainable(path: str | Path, loading: ModelLoading = SAFE, model_class=AutoModelForCausalLM,
                   quantize: str = "none", bf16: bool = False, **kwargs) -> PreTrainedModel:
    """The model a stage trains, in float32 whatever ``dtype`` says or the checkpoint holds: the master weights.

    ``train.bf16`` then computes in bfloat16 (autocast) while the optimiser updates float32 weights. Trained in
    bfloat16 itself, an Adam step below half a bf16 ulp is lost: at lr 2e-5, 71% of a 1.5B model's weights did
    not move in 3 steps. ``dtype`` still sets the frozen references' and inference's precision.

    ``quantize`` (``lora.quantize``: nf4, int8) holds the frozen base quantised for LoRA adapters instead
    (``llm.quantized``), computing in bfloat16 when ``bf16``."""
    full = loading.model_copy(update={"dtype": "float32"})
    if quantize != "none":
        from finloom.llm.quantized import load_quantized

        return load_quantized(path, full, quantize, bf16, partial(load_causal_lm, model_class=model_class), **kwargs)
    return load_causal_lm(path, full, model_class, **kwargs)


def save_model(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, path: Path) -> Path:
    """Write a complete HF model directory atomically (safetensors weights)."""
    with atomic_dir(path) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
    return path


def model_identity(model: str | Path) -> str:
    """A hash of everything that makes a model what it is: every file of its directory (weights in any format,
    config, tokenizer). A Hub id is resolved to its snapshot first, so two ids, or two revisions, never share one."""
    path = Path(model)
    if not path.is_dir():
        from huggingface_hub import snapshot_download

        try:
            path = Path(snapshot_download(str(model)))
        except Exception as error:  # offline and not cached, or no such repository
            raise BadInput(f"model.hf: cannot resolve {model!r} to its files ({type(error).__name__}: {error})") from None
    return hash_path(path)
