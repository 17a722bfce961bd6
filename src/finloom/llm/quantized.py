"""LoRA on a quantised base (QLoRA: 4-bit NormalFloat; LLM.int8): the load, and the merge back to full precision.

bitsandbytes weights are placed on their device when they load and cannot be moved afterwards, so the load
names the process's device. The frozen base then goes through PEFT's k-bit preparation (the weights it leaves
unquantised, such as norms and embeddings, in float32). A stage's saved model is a plain full-precision model like
every finloom model directory: the trained adapters are merged into the original weights, loaded afresh, as
QLoRA's authors and axolotl do, not into the dequantised ones, which would bake the quantisation error in.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from finloom.errors import BadInput

_SOURCE = "_finloom_full_precision"  # (path, loading) of the original weights, kept on the quantised model


def quantization_config(method: str, bf16: bool):
    """The ``BitsAndBytesConfig`` of ``lora.quantize``; computing in bfloat16 when the stage trains in it."""
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise BadInput(f"lora.quantize: {method} needs bitsandbytes (pip install -e '.[qlora]', or "
                       "'.[gpu]' on a GPU machine)") from None
    from transformers import BitsAndBytesConfig

    if method == "int8":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=torch.bfloat16 if bf16 else torch.float32)


def load_quantized(path: str | Path, loading, method: str, bf16: bool, load, **kwargs):
    """``load`` (finloom's safe loader) with the base quantised on this process's device; remembers the source.

    Each process holds its own quantised copy (plain or DDP launches): FSDP and ZeRO-3 would shard the packed
    weights, which finloom does not set up (QLoRA-FSDP needs a bf16 quant storage and its own wrapping)."""
    from accelerate import PartialState

    for variable, engine in (("ACCELERATE_USE_FSDP", "FSDP"), ("ACCELERATE_USE_DEEPSPEED", "DeepSpeed")):
        if os.environ.get(variable, "").lower() == "true":
            raise BadInput(f"lora.quantize: {method} holds one quantised copy of the base per process; launch without "
                           f"{engine} (plain or multi-GPU DDP), or set quantize: none to shard a full-precision base")

    model = load(path, loading, quantization_config=quantization_config(method, bf16),
                 device_map={"": PartialState().device}, **kwargs)
    setattr(model, _SOURCE, (str(path), loading))
    return model


def quantization_of(model) -> str | None:
    """How the weights of ``model`` (or of a PEFT model's base) are held: nf4, int8, or None for full precision."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = getattr(base.config, "quantization_config", None)
    if config is None:
        return None
    config = config if isinstance(config, dict) else config.to_dict()
    if config.get("load_in_4bit"):
        return config.get("bnb_4bit_quant_type", "nf4")
    return "int8" if config.get("load_in_8bit") else config.get("quant_method", "quantised")


def has_quantized_base(peft_model) -> bool:
    return hasattr(peft_model.get_base_model(), _SOURCE)


def merged_into_full_precision(peft_model):
    """The adapters of ``peft_model`` merged into a float32 load of the weights its quantised base came from.

    Every floating-point tensor of the trained model that the fresh one has under the same name and shape (the
    adapters, norms, embeddings including rows a chat template added) is copied over; the quantised weights
    (packed uint8 / int8) are not, so those come from the original file."""
    from peft import get_peft_model

    from finloom.llm.loading import load_causal_lm

    source, loading = getattr(peft_model.get_base_model(), _SOURCE)
    base = load_causal_lm(source, loading.model_copy(update={"dtype": "float32"}))
    rows = peft_model.get_input_embeddings().weight.shape[0]
    if base.get_input_embeddings().weight.shape[0] != rows:
        base.resize_token_embeddings(rows)
    full = get_peft_model(base, peft_model.peft_config[peft_model.active_adapter])
    trained = peft_model.state_dict()
    with torch.no_grad():
        for name, tensor in full.state_dict().items():
            value = trained.get(name)
            if value is not None and value.is_floating_point() and value.shape == tensor.shape:
                tensor.copy_(value.to(device=tensor.device, dtype=tensor.dtype))
    return full.merge_and_unload()
