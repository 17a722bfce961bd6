"""The padding-safe SDPA GRPO and PPO train with: no query row attends to nothing, and nothing else changes."""

from __future__ import annotations

import json

import pytest
import torch
import transformers.integrations.sdpa_attention as sdpa_module
from transformers import LlamaConfig, LlamaForCausalLM

from finloom.llm.padded_attention import NAME, use_padded_sdpa


def tiny_llama(attention: str = "sdpa") -> LlamaForCausalLM:
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2, attn_implementation=attention))


def left_padded() -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.randint(5, 256, (3, 16), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[1, :4], mask[2, :9] = 0, 0
    return ids.masked_fill(mask == 0, 0), mask


def real_outputs_and_gradients(model):
    """Logits at real positions and every parameter's gradient of a loss over real next tokens (as GRPO's:
    no padding position's logits are scored)."""
    ids, mask = left_padded()
    model.zero_grad()
    logits = model(input_ids=ids, attention_mask=mask).logits
    scored = mask[:, :-1] * mask[:, 1:]
    (logits.log_softmax(-1)[:, :-1].gather(-1, ids[:, 1:, None]).squeeze(-1) * scored).sum().backward()
    return logits.detach()[mask.bool()], {name: p.grad.clone() for name, p in model.named_parameters()}


@pytest.fixture
def sdpa_masks(monkeypatch):
    """Every boolean mask torch's SDPA receives from transformers (the real function still runs)."""
    seen, real = [], sdpa_module.torch.nn.functional.scaled_dot_product_attention

    def recording(*args, attn_mask=None, **kwargs):
        if attn_mask is not None:
            seen.append(attn_mask)
        return real(*args, attn_mask=attn_mask, **kwargs)

    monkeypatch.setattr(sdpa_module.torch.nn.functional, "scaled_dot_product_attention", recording)
    return seen


def test_no_query_row_attends_to_nothing_where_plain_sdpa_has_such_rows(sdpa_masks):
    model = tiny_llama()
    real_outputs_and_gradients(model)
    assert any((~mask.any(-1)).any() for mask in sdpa_masks)  # left padding gives plain SDPA empty rows
    sdpa_masks.clear()
    use_padded_sdpa(model)
    real_outputs_and_gradients(model)
    assert sdpa_masks and all(mask.any(-1).all() for mask in sdpa_masks)


def test_real_positions_outputs_and_gradients_are_unchanged():
    model = tiny_llama()
    logits, gradients = real_outputs_and_gradients(model)
    use_padded_sdpa(model)
    assert model.config._attn_implementation == NAME
    padded_logits, padded_gradients = real_outputs_and_gradients(model)
    torch.testing.assert_close(padded_logits, logits, rtol=0, atol=1e-6)
    for name, gradient in gradients.items():
        torch.testing.assert_close(padded_gradients[name], gradient, rtol=0, atol=1e-6, msg=name)


def test_other_attentions_are_left_alone_and_the_saved_config_names_none(tmp_path):
    eager = tiny_llama("eager")
    use_padded_sdpa(eager)
    assert eager.config._attn_implementation == "eager"
    model = tiny_llama()
    use_padded_sdpa(model)
    model.save_pretrained(tmp_path)
    assert NAME not in (tmp_path / "config.json").read_text(encoding="utf-8")
    assert "attn_implementation" not in json.loads((tmp_path / "config.json").read_text(encoding="utf-8"))


def test_a_lora_policy_switches_the_model_under_its_adapters():
    from peft import LoraConfig, get_peft_model

    policy = get_peft_model(tiny_llama(), LoraConfig(r=4, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    use_padded_sdpa(policy)
    assert policy.get_base_model().config._attn_implementation == NAME
