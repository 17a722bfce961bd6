"""Model merging: each method against its definition, tensor by tensor; inputs checked; the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import LlamaConfig, LlamaForCausalLM

from conftest import finloom_cli
from finloom.errors import BadInput
from finloom.llm.scratch import train_tokenizer
from finloom.sft.merge import merge_models


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    """A base and three fine-tunes of it (the base plus random deltas, partly shared), saved as safetensors."""
    folder = tmp_path_factory.mktemp("merge")
    tokenizer = train_tokenizer(["bank loan interest deposit bond equity dividend capital"] * 20, 300)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=False)
    base = LlamaForCausalLM(config)
    shared = {name: torch.randn_like(p) * 0.01 for name, p in base.state_dict().items()}
    paths = {}
    for name in ("base", "a", "b", "c"):
        model = LlamaForCausalLM(config)
        state = {key: value + (0 if name == "base" else shared[key] + torch.randn_like(value) * 0.01)
                 for key, value in base.state_dict().items()}
        model.load_state_dict(state)
        paths[name] = folder / name
        model.save_pretrained(paths[name], safe_serialization=True)
        tokenizer.save_pretrained(paths[name])
    (paths["a"] / "chat_template.jinja").write_text((paths["a"] / "chat_template.jinja").read_text() + "{# a #}")
    return paths


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(path / "model.safetensors")


def model_stock(base: torch.Tensor, tuned: list[torch.Tensor]) -> torch.Tensor:
    """Jang et al. 2024, eq. (2)-(3), for one tensor: written out here, not taken from mergekit."""
    deltas = [(t - base).flatten() for t in tuned]
    pairs = [(i, j) for i in range(len(deltas)) for j in range(i + 1, len(deltas))]
    cos = sum(float(torch.dot(deltas[i], deltas[j]) / (deltas[i].norm() * deltas[j].norm())) for i, j in pairs) / len(pairs)
    n = len(tuned)
    t = n * cos / (1 + (n - 1) * cos)
    return t * sum(tuned) / n + (1 - t) * base


@pytest.mark.parametrize("method,inputs,given", [
    ("linear", ["a", "b"], [0.25, 0.75]),
    ("task_arithmetic", ["a", "b", "c"], [0.5, 0.3, 0.2]),
    ("model_stock", ["a", "b"], None),
    ("model_stock", ["a", "b", "c"], None),
])
def test_each_method_matches_its_definition(models, tmp_path, method, inputs, given):
    out = merge_models(method, [models[name] for name in inputs], tmp_path / "merged",
                       base=models["base"] if method != "linear" else None, weights=given)
    merged, base = weights(out), weights(models["base"])
    tuned = [weights(models[name]) for name in inputs]
    share = given or [1 / len(inputs)] * len(inputs)
    assert set(merged) == set(base)
    for key in base:
        if method == "linear":
            expected = sum(w * t[key] for w, t in zip(share, tuned)) / sum(share)
        elif method == "task_arithmetic":
            expected = base[key] + sum(w * (t[key] - base[key]) for w, t in zip(share, tuned))
        else:
            expected = model_stock(base[key], [t[key] for t in tuned])
        assert torch.allclose(merged[key], expected, atol=1e-5), (method, key)
    assert not torch.allclose(merged["lm_head.weight"], tuned[0]["lm_head.weight"])
    # the chat model's template comes from the first input, not from the base
    assert "{# a #}" in (out / "chat_template.jinja").read_text()


def test_inputs_are_checked(models, tmp_path):
    with pytest.raises(BadInput, match="needs the base model"):
        merge_models("model_stock", [models["a"], models["b"]], tmp_path / "m")
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(BadInput, match="only safetensors"):
        merge_models("linear", [models["a"], pickled], tmp_path / "m")
    assert not (tmp_path / "m").exists()


def test_cli_merges_and_names_bad_arguments(models, tmp_path):
    done = finloom_cli("merge", str(models["a"]), str(models["b"]), "--out", str(tmp_path / "m"), "--method", "linear")
    assert done.returncode == 0, done.stderr[-2000:]
    merged, a, b = weights(tmp_path / "m"), weights(models["a"]), weights(models["b"])
    assert torch.allclose(merged["lm_head.weight"], (a["lm_head.weight"] + b["lm_head.weight"]) / 2, atol=1e-6)
    bad = finloom_cli("merge", str(models["a"]), str(models["b"]), "--out", str(tmp_path / "x"), "--method", "ties")
    assert bad.returncode == 2 and "--method" in bad.stderr and "Traceback" not in bad.stderr
