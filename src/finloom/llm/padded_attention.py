"""SDPA for left-padded batches that are trained on: every query row that may attend to nothing (a left-padding
position) attends to every key instead.

Why: GRPO and PPO score prompts left-padded, so each padding position is a query that no key may serve. PyTorch's
memory-efficient SDPA kernel returns zeros for such a row in the forward, but its backward can give NaN in that
row's query gradient: on an H200 in bfloat16, GRPO on a random 325M Llama stopped at step 5 with a NaN gradient
norm whatever the learning rate (1e-4 and 1e-5; ZeRO-3 gave inf), the first non-finite gradient being the last
layer's ``q_proj`` output; in float32 the same run trained. One NaN ruins the whole step.

Why it changes nothing else: a padding position's key is masked for every real query, so its output never
reaches a real token; the gradient into it is exactly zero, and so is what it sends back to the keys and values
it now attends to. Real positions' outputs and gradients are the same (tested).
"""

from __future__ import annotations

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

NAME = "finloom_padded_sdpa"


def padded_sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs):
    """transformers' SDPA attention with the boolean mask's empty rows opened (a no-op without padding)."""
    if attention_mask is not None and attention_mask.dtype == torch.bool:
        attention_mask = attention_mask | ~attention_mask.any(-1, keepdim=True)
    return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)


AttentionInterface.register(NAME, padded_sdpa_attention_forward)
AttentionMaskInterface.register(NAME, sdpa_mask)


def use_padded_sdpa(model) -> None:
    """Switch ``model`` from SDPA to the padding-safe SDPA above; any other attention (eager, flash) is left as is.
    Not saved: ``save_pretrained`` writes no attention implementation, so the exported model loads as usual."""
    if getattr(model.config, "_attn_implementation", None) == "sdpa":
        model.set_attn_implementation(NAME)
