"""The ``align`` stage: the SFT model aligned by one method, ``align.method``: grpo (default), ppo, dpo or kto.

Every method starts from the model before it (SFT or merged) as both policy and frozen reference, and is a TRL
trainer with a finloom config: GRPO through ``finloom.align.grpo`` (TRL's GRPOTrainer with Baichuan Alignment's
KL changes), PPO through ``finloom.align.ppo`` (the same loop with a value head and GAE), DPO and KTO through
TRL's own trainers. The method's setup returns the trainer and a function that turns the finished trainer into
the stage's metrics.
"""

from __future__ import annotations

import json
import random
from collections import defaultdict
from collections.abc import Callable

import torch
from datasets import Dataset
from trl import DPOConfig, DPOTrainer, KTOConfig, KTOTrainer
from trl.import_utils import is_vllm_available

from finloom.align.categories import CategoryEvaluation, shares
from finloom.align.grpo import FinloomGRPOConfig, FinloomGRPOTrainer
from finloom.align.ppo import FinloomPPOConfig, FinloomPPOTrainer
from finloom.align.rewards import TASK_FIELDS, RewardCombination
from finloom.errors import BadInput
from finloom.files import atomic_write_jsonl
from finloom.llm.chat_data import load_conversations, load_labelled_answers, load_preferences, read_prompts
from finloom.llm.chat_template import (
    ensure_chat_template,
    resize_for_template,
    stop_at_end_of_turn,
    tokenize_with_assistant_mask,
)
from finloom.llm.client import LLMClient
from finloom.llm.loading import load_causal_lm, load_tokenizer, load_trainable
from finloom.llm.reward_scorer import reward_scorer
from finloom.recipe import AlignSection, ChatSource
from finloom.stages import RunContext, StageResult
from finloom.training import train_and_save, trainer_kwargs

Finish = Callable[[object], dict]


def run(section: AlignSection, ctx: RunContext) -> StageResult:
    recipe = ctx.recipe
    _, model_path = ctx.input_model()
    tokenizer = load_tokenizer(model_path, recipe.model)
    ensure_chat_template(tokenizer, recipe.model.chat_template, recipe.resolve)
    policy, reference = load_trainable(model_path, recipe.model), load_causal_lm(model_path, recipe.model)
    for model in (policy, reference):
        resize_for_template(model, tokenizer)
    stop_at_end_of_turn(policy, tokenizer)
    setup = {"grpo": _grpo, "ppo": _ppo, "dpo": _dpo, "kto": _kto}[section.method]
    trainer, finish = setup(section, ctx, policy, reference, tokenizer)
    metrics = train_and_save(trainer, ctx.stage_dir, ctx.resume, "align", recipe.report_to, section.train)
    metrics.update(method=section.method, **finish(trainer))
    return StageResult(outputs={"model": "align/model"}, metrics=metrics)


def _base_config(section: AlignSection, ctx: RunContext) -> dict:
    recipe = ctx.recipe
    return trainer_kwargs(section.train, ctx.stage_dir / "checkpoints", recipe.seed, f"{recipe.name}/align")


def _last_logged(trainer, names: dict[str, str]) -> dict:
    """The last logged value of each TRL metric in ``names`` (TRL name -> finloom name), rounded."""
    found = {}
    for entry in trainer.state.log_history:
        for trl_name, name in names.items():
            if trl_name in entry:
                found[name] = round(entry[trl_name], 4)
    return found


def _dpo(section, ctx, policy, reference, tokenizer) -> tuple[DPOTrainer, Finish]:
    rows = load_preferences(section.datasets, ctx.recipe.resolve, ctx.stage_dir / "rejects.jsonl", "align")
    config = DPOConfig(**_base_config(section, ctx), beta=section.dpo.beta, loss_type=section.dpo.loss_type,
                       max_length=section.train.seq_len)
    trainer = DPOTrainer(model=policy, ref_model=reference, args=config, train_dataset=Dataset.from_list(rows),
                         processing_class=tokenizer)
    return trainer, lambda t: {"pairs": len(rows), **_last_logged(t, {"rewards/accuracies": "reward_accuracy",
                                                                       "rewards/margins": "reward_margin"})}


def _kto(section, ctx, policy, reference, tokenizer) -> tuple[KTOTrainer, Finish]:
    rows = load_labelled_answers(section.datasets, ctx.recipe.resolve, ctx.stage_dir / "rejects.jsonl", "align")
    config = KTOConfig(**_base_config(section, ctx), beta=section.kto.beta, max_length=section.train.seq_len,
                       desirable_weight=section.kto.desirable_weight,
                       undesirable_weight=section.kto.undesirable_weight)
    trainer = KTOTrainer(model=policy, ref_model=reference, args=config, train_dataset=Dataset.from_list(rows),
                         processing_class=tokenizer)
    good = sum(row["label"] for row in rows)
    return trainer, lambda t: {"answers": len(rows), "good_answers": good,
                               **_last_logged(t, {"rewards/margins": "reward_margin", "kl": "kl"})}


# -- GRPO ---------------------------------------------------------------------------------------------------------


def prompt_rows(sources: list[ChatSource], resolve) -> tuple[list[dict], list[dict]]:
    """Online-RL prompts as TRL rows, ``prompt`` (messages), ``reward_task`` (the task fields, JSON) and
    ``category`` (default: general), and the records rejected with their reasons."""
    prompts, rejects = read_prompts(sources, resolve, (*TASK_FIELDS, "category"))
    rows = []
    for prompt in prompts:
        task = {key: value for key, value in prompt.items() if key not in ("id", "messages")}
        task.setdefault("category", "general")
        rows.append({"prompt": prompt["messages"], "reward_task": json.dumps(task, ensure_ascii=False),
                     "category": task["category"], "id": prompt["id"]})
    return rows, rejects


def grpo_prompts(section: AlignSection, ctx: RunContext) -> list[dict]:
    rows, rejects = prompt_rows(section.datasets, ctx.recipe.resolve)
    atomic_write_jsonl(ctx.stage_dir / "rejects.jsonl", rejects)
    if not rows:
        raise BadInput(f"align.datasets: no usable prompts ({len(rejects)} rejected, see "
                       f"{ctx.stage_dir / 'rejects.jsonl'})")
    return rows


def split_heldout(rows: list[dict], share: float, seed: int) -> tuple[list[dict], dict[str, list[dict]]]:
    """Hold out ``share`` of each category (at least one prompt where the category has two or more)."""
    by_category = defaultdict(list)
    for row in rows:
        by_category[row["category"]].append(row)
    rng = random.Random(seed)
    train, heldout = [], {}
    for name in sorted(by_category):
        members = list(by_category[name])
        rng.shuffle(members)
        count = max(1, round(share * len(members))) if len(members) > 1 else 0
        heldout[name], train = members[:count], train + members[count:]
        if not heldout[name]:
            del heldout[name]
    return train, heldout


def _sft_rows(section: AlignSection, ctx: RunContext, tokenizer) -> list[dict]:
    recipe = ctx.recipe
    sources = list(section.grpo.sft_datasets or recipe.sft.datasets)
    if not section.grpo.sft_datasets and recipe.prompts.enabled:
        sources.append(ChatSource(path=str(ctx.artifact("prompts", "sft")), format="messages"))
    return load_conversations(
        sources, recipe.resolve, ctx.stage_dir / "sft_rejects.jsonl", "align.grpo.sft_datasets",
        prepare=lambda row: tokenize_with_assistant_mask(tokenizer, row["messages"], section.train.seq_len))


def _reward(section: AlignSection, ctx: RunContext, log: bool) -> RewardCombination:
    grpo = section.grpo
    scorer = None
    if source := grpo.reward_model_source():
        where = str(ctx.artifact("reward", "model")) if source == "stage:reward" else source
        scorer = reward_scorer(where, ctx.recipe.resolve)
    judge = LLMClient(ctx.teacher(), "align rubric judge") if grpo.rewards.rubric else None
    return RewardCombination(grpo, scorer, judge, log_path=ctx.stage_dir / "rewards.jsonl" if log else None)


def _ppo(section, ctx, policy, reference, tokenizer) -> tuple[FinloomPPOTrainer, Finish]:
    ppo = section.ppo
    return _grpo(section, ctx, policy, reference, tokenizer, FinloomPPOTrainer, FinloomPPOConfig,
                 {"gae_lambda": ppo.gae_lambda, "value_coef": ppo.value_coef, "value_clip": ppo.value_clip})


def vllm_sampling(setting: str, gpu: bool, vllm_installed: bool) -> bool:
    """Whether online RL samples with vLLM (colocated): ``on`` insists (an error where it cannot run), ``auto`` uses
    it where both a GPU and vLLM are here, ``off`` never does; otherwise HF generate samples."""
    if setting == "on" and not (gpu and vllm_installed):
        raise BadInput("align.grpo.vllm: on, but " + ("vLLM is not installed (pip install -e '.[gpu]')" if gpu
                                                     else "no GPU is visible")
                       + "; use auto to sample with HF generate where vLLM cannot run")
    return setting == "on" or (setting == "auto" and gpu and vllm_installed)


def _grpo(section, ctx, policy, reference, tokenizer, trainer_class=None, config_class=None,
          extra: dict | None = None) -> tuple[FinloomGRPOTrainer, Finish]:
    """GRPO, or (with PPO's trainer, config and its settings in ``extra``) PPO: the same loop."""
    trainer_class, config_class = trainer_class or FinloomGRPOTrainer, config_class or FinloomGRPOConfig
    grpo = section.grpo
    rows, heldout = split_heldout(grpo_prompts(section, ctx), grpo.reweighting.holdout, ctx.recipe.seed)
    if not rows:
        raise BadInput("align.datasets: every prompt was held out for the per-category evaluation; add prompts")
    use_vllm = vllm_sampling(grpo.vllm, torch.cuda.is_available(), is_vllm_available())
    config = config_class(
        **_base_config(section, ctx), **(extra or {}), num_generations=grpo.group_size,
        max_completion_length=grpo.max_completion_tokens, temperature=grpo.temperature, kl_beta=grpo.beta,
        kl_top_k=grpo.top_k, sft_kl_gamma=grpo.gamma, sft_kl_batch_size=grpo.sft_batch_size,
        use_vllm=use_vllm, vllm_mode="colocate", log_completions=False)
    if not ctx.resume:
        (ctx.stage_dir / "rewards.jsonl").unlink(missing_ok=True)
    categories = [row["category"] for row in rows]
    trainer = trainer_class(
        model=policy, reward_funcs=[_reward(section, ctx, log=True)], args=config, train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer, ref_model=reference,
        sft_rows=_sft_rows(section, ctx, tokenizer) if grpo.gamma > 0 else None,
        prompt_categories=categories if grpo.reweighting.enabled else None)
    evaluation = CategoryEvaluation(
        trainer, {name: members[:grpo.reweighting.max_prompts] for name, members in heldout.items()},
        _reward(section, ctx, log=False), grpo.reweighting, shares(categories), grpo.max_completion_tokens,
        ctx.stage_dir / "categories.jsonl")
    trainer.add_callback(evaluation)

    def finish(done) -> dict:
        first, last = evaluation.rows[0]["scores"], evaluation.rows[-1]["scores"]
        return {"prompts": len(rows), "heldout_prompts": sum(len(m) for m in evaluation.heldout.values()),
                "heldout_reward_before": first, "heldout_reward_after": last, "generation": "vllm" if use_vllm else "hf",
                **_last_logged(done, {"reward": "reward", "kl": "kl", "kl_penalty": "kl_penalty", "sft_kl": "sft_kl",
                                      "value_loss": "value_loss"})}

    return trainer, finish
