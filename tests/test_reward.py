"""The reward model's loss (Bradley-Terry + MSE to scores) and score handling (calibration: test_reward_calibration.py)."""

from __future__ import annotations

import math

import pytest
import torch
from datasets import Dataset
from transformers import LlamaConfig, LlamaForSequenceClassification
from trl import RewardConfig, RewardTrainer
from trl.trainer.reward_trainer import DataCollatorForPreference

from finloom.errors import BadInput
from finloom.llm.scratch import train_tokenizer
from finloom.reward.stage import with_scores
from finloom.reward.trainer import ScoredRewardConfig, ScoredRewardTrainer, score_error

PAIRS = [
    {"prompt": [{"role": "user", "content": "What is a bond?"}],
     "chosen": [{"role": "assistant", "content": "A bond is a loan to an issuer that pays interest."}],
     "rejected": [{"role": "assistant", "content": "No idea."}], "score_chosen": 0.9, "score_rejected": 0.2, "scored": True},
    {"prompt": [{"role": "user", "content": "What is equity?"}],
     "chosen": [{"role": "assistant", "content": "Ownership in a company."}],
     "rejected": [{"role": "assistant", "content": "A kind of loan."}], "score_chosen": 0.0, "score_rejected": 0.0,
     "scored": False},
    {"prompt": [{"role": "user", "content": "What is a dividend?"}],
     "chosen": [{"role": "assistant", "content": "A payment of profit to shareholders."}],
     "rejected": [{"role": "assistant", "content": "A tax."}], "score_chosen": 0.7, "score_rejected": 0.4, "scored": True},
]


def test_score_error_by_hand():
    rewards = torch.tensor([1.0, 0.5, 0.0, -1.0])  # chosen of pairs 1, 2; then rejected of pairs 1, 2
    scores = {"score_chosen": torch.tensor([0.8, 0.3]), "score_rejected": torch.tensor([0.1, 0.9]),
              "scored": torch.tensor([1.0, 0.0])}
    expected = ((1.0 - 0.8) ** 2 + (0.0 - 0.1) ** 2 + 0) / 2  # the unscored pair adds nothing but still counts
    assert float(score_error(rewards, scores)) == pytest.approx(expected)


@pytest.fixture(scope="module")
def reward_parts(tmp_path_factory):
    tokenizer = train_tokenizer([m["content"] for p in PAIRS for k in ("prompt", "chosen", "rejected") for m in p[k]] * 5,
                                300)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, num_labels=1, pad_token_id=tokenizer.pad_token_id)
    model = LlamaForSequenceClassification(config)
    return tokenizer, model, tmp_path_factory.mktemp("reward")


def trainer_loss(trainer_class, config_class, parts, alpha=None, collator=None, training=True):
    """The trainer's loss on the three pairs as one batch from its own data loader (its column filter, then its
    collator), with the model in training or eval mode; the model's rewards on that batch; the trainer."""
    tokenizer, model, folder = parts
    extra = {} if alpha is None else {"score_alpha": alpha}
    config = config_class(output_dir=str(folder), per_device_eval_batch_size=3, report_to="none", use_cpu=True,
                          bf16=False, max_length=64, **extra)
    trainer = trainer_class(model=model, args=config, processing_class=tokenizer, data_collator=collator,
                            train_dataset=Dataset.from_list(PAIRS), eval_dataset=Dataset.from_list(PAIRS))
    batch = next(iter(trainer.get_eval_dataloader()))  # in order, unlike the train loader
    model.train(training)
    try:
        with torch.no_grad():
            loss = trainer.compute_loss(model, dict(batch))
            rewards = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.squeeze(-1)
    finally:
        model.train(True)
    return float(loss), rewards, trainer


def bt_and_mse_by_hand(rewards):
    """Mean -log sigmoid(r_w - r_l) and mean (r_w - s_w)^2 + (r_l - s_l)^2 of PAIRS' scored pairs (0 for the
    unscored one, which still counts in the mean)."""
    chosen, rejected = rewards[:3].tolist(), rewards[3:].tolist()
    bt = sum(-math.log(1 / (1 + math.exp(-(w - l)))) for w, l in zip(chosen, rejected)) / 3
    mse = sum(p["scored"] * ((w - p["score_chosen"]) ** 2 + (l - p["score_rejected"]) ** 2)
              for p, w, l in zip(PAIRS, chosen, rejected)) / 3
    return bt, mse


@pytest.mark.parametrize("alpha, weight", [(None, 1.0), (0.7, 0.7)], ids=["default-alpha-is-1", "alpha-0.7"])
def test_loss_is_bradley_terry_plus_alpha_times_squared_error(reward_parts, alpha, weight):
    loss, rewards, _ = trainer_loss(ScoredRewardTrainer, ScoredRewardConfig, reward_parts, alpha=alpha)
    bt, mse = bt_and_mse_by_hand(rewards)
    assert mse > 1e-3
    assert loss == pytest.approx(bt + weight * mse, abs=1e-5)


def test_with_alpha_zero_the_loss_is_trls(reward_parts):
    ours, _, _ = trainer_loss(ScoredRewardTrainer, ScoredRewardConfig, reward_parts, alpha=0.0)
    stock, _, _ = trainer_loss(RewardTrainer, RewardConfig, reward_parts)
    assert ours == pytest.approx(stock, abs=1e-6)


def test_batches_without_score_columns_get_trls_loss_and_no_score_metric(reward_parts):
    """A collator of its own that adds no score columns (TRL's here): Bradley-Terry alone, whatever the alpha."""
    tokenizer = reward_parts[0]
    ours, _, trainer = trainer_loss(ScoredRewardTrainer, ScoredRewardConfig, reward_parts, alpha=1.0,
                                    collator=DataCollatorForPreference(pad_token_id=tokenizer.pad_token_id))
    stock, _, _ = trainer_loss(RewardTrainer, RewardConfig, reward_parts)
    assert ours == pytest.approx(stock, abs=1e-6)
    assert "score_mse" not in trainer._metrics["train"]


@pytest.mark.parametrize("training, mode, other", [(True, "train", "eval"), (False, "eval", "train")])
def test_score_mse_is_logged_under_the_models_mode(reward_parts, training, mode, other):
    _, rewards, trainer = trainer_loss(ScoredRewardTrainer, ScoredRewardConfig, reward_parts, alpha=0.7,
                                       training=training)
    _, mse = bt_and_mse_by_hand(rewards)
    assert trainer._metrics[mode]["score_mse"] == [pytest.approx(mse, abs=1e-6)]
    assert "score_mse" not in trainer._metrics[other]


def test_scores_are_mapped_to_unit_range_and_out_of_range_named():
    rows = [{"source": "u.jsonl", "score_chosen": 8.5, "score_rejected": 3.0}, {"source": "u.jsonl"}]
    mapped = with_scores(rows, (1.0, 10.0))
    assert mapped[0]["score_chosen"] == pytest.approx(7.5 / 9) and mapped[0]["scored"]
    assert mapped[1]["scored"] is False and mapped[1]["score_chosen"] == 0.0
    with pytest.raises(BadInput, match=r"reward.score_range: a score of 8.5 in u.jsonl lies outside \[0.0, 1.0\]"):
        with_scores(rows, (0.0, 1.0))
