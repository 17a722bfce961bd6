"""Model loading safety, the scratch tokenizer/template, and recipes that start from an HF model."""

from __future__ import annotations

import shutil

import pytest
import torch

from conftest import tiny_recipe, write_recipe
from finloom.errors import BadInput
from finloom.llm.loading import load_causal_lm, load_tokenizer
from finloom.recipe import ModelLoading, load_recipe
from finloom.runner import Runner
from finloom.stages import enabled_stages, read_manifest


def test_pickle_weights_need_allow_pickle(tiny_run, tmp_path):
    model = load_causal_lm(tiny_run / "base" / "model")
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    model.config.save_pretrained(pickled)
    torch.save(model.state_dict(), pickled / "pytorch_model.bin")
    load_tokenizer(tiny_run / "base" / "model").save_pretrained(pickled)
    assert not list(pickled.glob("*.safetensors"))
    with pytest.raises(BadInput, match="no .safetensors weights; .*allow_pickle: true"):
        load_causal_lm(pickled)
    loaded = load_causal_lm(pickled, ModelLoading(allow_pickle=True))
    for (name, expected), actual in zip(model.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(expected, actual), name


def test_scratch_tokenizer_round_trips_and_masks_assistant(tiny_run):
    tokenizer = load_tokenizer(tiny_run / "sft" / "model")
    text = "Deposit insurance 存款保险 covers ¥500,000 — ok?"
    assert tokenizer.decode(tokenizer(text, add_special_tokens=False)["input_ids"]) == text
    messages = [{"role": "system", "content": "Be careful."}, {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello"}]
    rendered = tokenizer.apply_chat_template(messages, tokenize=False)
    assert rendered == ("<|im_start|>system\nBe careful.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
                        "<|im_start|>assistant\nHello<|im_end|>\n")
    encoded = tokenizer.apply_chat_template(messages, return_assistant_tokens_mask=True, return_dict=True)
    masked = [t for t, m in zip(encoded["input_ids"], encoded["assistant_masks"]) if m]
    assert tokenizer.decode(masked) == "Hello<|im_end|>"


def test_recipe_starting_from_an_hf_model(tiny_run, tiny_data, tmp_path):
    start = tmp_path / "models" / "start"
    shutil.copytree(tiny_run / "pretrain" / "model", start)
    recipe = tiny_recipe()
    recipe["model"] = {"hf": str(start)}
    del recipe["base"]  # with model.hf there is nothing to build
    recipe["pretrain"]["train"]["max_steps"] = 2
    recipe["report"] = {"enabled": False}
    path = write_recipe(tiny_data, recipe, "from_hf.yaml")
    loaded = load_recipe(path)
    assert "base" not in enabled_stages(loaded)
    states = Runner(loaded, tmp_path / "run").run()
    assert list(states) == ["data", "pretrain", "sft", "reward", "align", "eval"]
    results = read_manifest(tmp_path / "run", "eval")["metrics"]["summary"]
    assert list(results) == ["start", "pretrain", "sft", "align"]
    assert read_manifest(tmp_path / "run", "pretrain")["inputs"]["stages"] == {
        "data": read_manifest(tmp_path / "run", "data")["fingerprint"]}


def test_hub_kernels_stay_off_unless_the_recipe_turns_them_on(tiny_run):
    """transformers 5 turns Hub kernels on by default; on a GPU the first model.train() then downloads them, and an
    offline machine fails (seen on an H200). finloom loads with them off; model.hub_kernels turns them on."""
    from pathlib import Path

    assert load_causal_lm(tiny_run / "base" / "model").use_kernels is False
    assert load_causal_lm(tiny_run / "base" / "model", ModelLoading(hub_kernels=True)).use_kernels is True
    source = Path(__file__).parents[1] / "src" / "finloom"
    loaders = [path.relative_to(source).as_posix() for path in source.rglob("*.py")
               if "Model.from_pretrained(" in path.read_text(encoding="utf-8")
               or "model_class.from_pretrained(" in path.read_text(encoding="utf-8")]
    assert loaders == ["llm/loading.py"]  # every model loads through load_causal_lm
