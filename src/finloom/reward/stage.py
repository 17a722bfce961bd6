"""The ``reward`` stage: a scalar reward model from the SFT model, Bradley-Terry + MSE to absolute scores.

The loss is TRL's RewardTrainer's Bradley-Terry loss plus ``score_alpha`` times the squared error of both
rewards to the pair's normalised absolute scores where the pair has them (``finloom.reward.trainer``).
A deterministic share of pairs (``holdout``) is held out; on them the stage reports what a user checks
before trusting the model as a reward: pairwise accuracy, and calibration: the correlation of rewards
with absolute scores where pairs have them, and the reward distribution per data source
(``reward/heldout_rewards.jsonl`` holds every held-out pair's rewards).
"""

from __future__ import annotations

import random

import torch
from datasets import Dataset
from transformers import AutoModelForSequenceClassification

from finloom.errors import BadInput
from finloom.files import atomic_write_jsonl
from finloom.llm.chat_data import load_preferences
from finloom.llm.chat_template import ensure_chat_template, resize_for_template
from finloom.llm.loading import load_tokenizer, load_trainable
from finloom.recipe import ChatSource, RewardSection
from finloom.reward.calibration import calibration
from finloom.reward.trainer import ScoredRewardConfig, ScoredRewardTrainer
from finloom.stages import RunContext, StageResult
from finloom.training import train_and_save, trainer_kwargs


def split_pairs(rows: list[dict], seed: int, share: float) -> tuple[list[dict], list[dict]]:
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    held = max(1, int(len(rows) * share)) if len(rows) >= 10 and share else 0
    return [rows[i] for i in order[held:]], [rows[i] for i in order[:held]]


def with_scores(rows: list[dict], score_range: tuple[float, float]) -> list[dict]:
    """Each pair with ``score_chosen`` / ``score_rejected`` mapped to [0, 1] and ``scored`` (0 without scores)."""
    low, high = score_range
    out = []
    for row in rows:
        scored = "score_chosen" in row and "score_rejected" in row
        scores = {}
        for key in ("score_chosen", "score_rejected"):
            value = row.get(key)
            if scored and not low <= value <= high:
                raise BadInput(f"reward.score_range: a score of {value} in {row['source']} lies outside "
                               f"[{low}, {high}]; set score_range to the scale the data uses (e.g. [1, 10])")
            scores[key] = (value - low) / (high - low) if scored else 0.0
        out.append(dict(row, **scores, scored=scored))
    return out


def run(section: RewardSection, ctx: RunContext) -> StageResult:
    recipe = ctx.recipe
    _, model_path = ctx.input_model()
    rows = with_scores(load_preferences(section.datasets, recipe.resolve, ctx.stage_dir / "rejects.jsonl", "reward",
                                        keep_scores=True), section.score_range) if section.datasets else []
    built = ctx.artifact("prefs", "pairs") if recipe.prefs.enabled else None
    if built is not None and built.stat().st_size:  # the preference builder's pairs, scored in [0, 1]
        pairs = load_preferences([ChatSource(path=str(built))], recipe.resolve, ctx.stage_dir / "rejects_prefs.jsonl",
                                 "reward", keep_scores=True)
        rows += with_scores([dict(pair, source="stage:prefs") for pair in pairs], (0.0, 1.0))
    if not rows:
        raise BadInput("reward: no preference pairs (the datasets are empty and the prefs stage kept none)")
    train_rows, eval_rows = split_pairs(rows, recipe.seed, section.holdout)
    tokenizer = load_tokenizer(model_path, recipe.model)
    ensure_chat_template(tokenizer, recipe.model.chat_template, recipe.resolve)
    model = load_trainable(model_path, recipe.model, model_class=AutoModelForSequenceClassification, num_labels=1)
    resize_for_template(model, tokenizer)
    model.config.pad_token_id = tokenizer.pad_token_id  # the score is read at the last non-pad token
    config = ScoredRewardConfig(
        **trainer_kwargs(section.train, ctx.stage_dir / "checkpoints", recipe.seed, f"{recipe.name}/reward"),
        max_length=section.train.seq_len,
        per_device_eval_batch_size=section.train.batch_size,
        score_alpha=section.score_alpha,
    )
    trainer = ScoredRewardTrainer(
        model=model, args=config, processing_class=tokenizer,
        train_dataset=Dataset.from_list(train_rows),
        eval_dataset=(Dataset.from_list([dict(row, pair_index=i) for i, row in enumerate(eval_rows)])
                      if eval_rows else None),
    )
    # TRL leaves out pairs longer than max_length; the manifest counts them (pairs = used + too long)
    metrics = train_and_save(trainer, ctx.stage_dir, ctx.resume, "reward", recipe.report_to, section.train)
    used = len(trainer.train_dataset)
    metrics.update(train_pairs=used, train_pairs_too_long=len(train_rows) - used,
                   built_pairs=sum(row["source"] == "stage:prefs" for row in rows),
                   scored_pairs=sum(row["scored"] for row in rows), score_alpha=section.score_alpha)
    if eval_rows:
        rewards = heldout_rewards(trainer, eval_rows)
        atomic_write_jsonl(ctx.stage_dir / "heldout_rewards.jsonl", rewards)
        metrics.update(eval_pairs=len(rewards), eval_pairs_too_long=len(eval_rows) - len(rewards), **calibration(rewards))
    return StageResult(outputs={"model": "reward/model"}, metrics=metrics)


def heldout_rewards(trainer: ScoredRewardTrainer, rows: list[dict]) -> list[dict]:
    """The trained model's reward for both answers of every held-out pair the trainer kept (``pair_index`` into
    ``rows``), beside the pair itself, its scores and its source."""
    dataset = trainer.eval_dataset
    model = trainer.model.eval()
    collate = trainer.data_collator
    out = []
    with torch.no_grad():
        for start in range(0, len(dataset), trainer.args.per_device_eval_batch_size):
            batch = collate([dataset[i] for i in range(start, min(len(dataset), start + trainer.args.per_device_eval_batch_size))])
            logits = model(input_ids=batch["input_ids"].to(model.device),
                           attention_mask=batch["attention_mask"].to(model.device)).logits.squeeze(-1).float().cpu()
            chosen, rejected = torch.chunk(logits, 2)
            for offset, (r_w, r_l) in enumerate(zip(chosen.tolist(), rejected.tolist())):
                row = rows[dataset[start + offset]["pair_index"]]
                out.append({"source": row["source"], "reward_chosen": round(r_w, 5), "reward_rejected": round(r_l, 5),
                            "score_chosen": row["score_chosen"] if row["scored"] else None,
                            "score_rejected": row["score_rejected"] if row["scored"] else None,
                            **{key: row[key] for key in ("prompt", "chosen", "rejected")}})
    return out
