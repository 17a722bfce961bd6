"""The GRPO reward (``finloom.align.rewards.RewardCombination``) on its own, fast: totals by hand for several weight
settings, the reward-model component through a tiny real reward model, the rubric through a real local scripted
judge server, and what goes to TRL's metrics and to rewards.jsonl."""

from __future__ import annotations

import json
import math

import pytest

from conftest import scripted_chat
from finloom.align.rewards import RewardCombination, prompt_text, reply_text
from finloom.llm.client import LLMClient
from finloom.recipe import ClientSection, GRPOArgs

OFF = {"format": 0, "mcq": 0, "calculation": 0, "constraints": 0, "rm": 0, "rubric": 0}


def weights(**chosen) -> GRPOArgs:
    return GRPOArgs(rewards={**OFF, **chosen})


class State:
    def __init__(self, step: int):
        self.global_step = step


def call(reward, prompts, replies, tasks, **extra):
    """TRL's way of calling a reward function: completions as message lists, tasks as JSON strings."""
    completions = [[{"role": "assistant", "content": r}] for r in replies]
    return reward(prompts=prompts, completions=completions, reward_task=[json.dumps(t) for t in tasks], **extra)


def metrics():
    logged = []
    return logged, lambda name, value: logged.append((name, value))


# -- the texts TRL hands over --------------------------------------------------------------------------------------


def test_reply_and_prompt_text_take_the_last_message_or_the_string():
    three = [{"role": "system", "content": "first"}, {"role": "user", "content": "second"},
             {"role": "assistant", "content": "third"}]
    assert reply_text(three) == "third" and prompt_text(three) == "third"
    assert reply_text([{"role": "assistant", "content": "only"}]) == "only"
    assert prompt_text([{"role": "user", "content": "only"}]) == "only"
    assert reply_text("a plain completion") == "a plain completion"
    assert prompt_text("a plain prompt") == "a plain prompt"


def test_name_and_last_totals():
    reward = RewardCombination(weights(format=1.0))
    assert reward.__name__ == "finance_reward"  # TRL names the metrics after it
    assert reward.last_totals == [] and reward.rubric_failures == 0
    assert reward.weights == {"format": 1.0, "mcq": 0, "calculation": 0, "constraints": 0, "rm": 0, "rubric": 0}
    totals = call(reward, ["Say something."] * 2, ["Something.", "   "], [{}, {}])
    assert totals == [1.0, 0.0] and reward.last_totals is totals
    assert call(reward, ["Again."], ["Yes."], [{}]) == [1.0] and reward.last_totals == [1.0]


# -- the verifiable components and their weighted combination, by hand ---------------------------------------------

TASKS = [{"answer": "AB", "category": "mcq"},  # "A": format 1, mcq 0.5 x 1/2 with partial credit 0.5
         {"expected": 100, "category": "calc"},  # "100.4": format 1, calculation 1 within 0.5%, 0 within 0.1%
         {"checks": [{"type": "max_words", "value": 3}, {"type": "max_chars", "value": 100}],
          "category": "rules"},  # four short words: constraints 1/2, format 1
         {"category": "open"}]  # blank: format 0 and nothing else
REPLIES = ["A", "It is 100.4", "one two three four", "  "]
PROMPTS = [[{"role": "user", "content": "Which? A. x B. y C. z"}], "Compute it.",
           [{"role": "user", "content": "Be brief."}], "Anything."]


def test_the_default_weights_by_hand():
    reward = RewardCombination(GRPOArgs(partial_credit=0.5))  # format 0.2, mcq / calculation / constraints 1
    totals = call(reward, PROMPTS, REPLIES, TASKS)
    assert totals == pytest.approx([(0.2 * 1 + 1.0 * 0.25) / 1.2, (0.2 * 1 + 1.0 * 1) / 1.2,
                                    (0.2 * 1 + 1.0 * 0.5) / 1.2, 0.0], abs=1e-12)
    assert totals[3] == 0.0


def test_other_weights_by_hand_missing_components_leave_the_present_ones():
    settings = weights(format=0.5, mcq=2.0, constraints=0.25)
    totals = call(RewardCombination(settings.model_copy(update={"partial_credit": 0.5, "tolerance": 0.001})),
                  PROMPTS, REPLIES, TASKS)
    # the calculation fails within the recipe's 0.1% but has no weight: its format alone counts
    assert totals == pytest.approx([(0.5 + 2.0 * 0.25) / 2.5, 1.0, (0.5 + 0.25 * 0.5) / 0.75, 0.0], abs=1e-12)
    no_format = weights(mcq=1.0, calculation=3.0)
    totals = call(RewardCombination(no_format), PROMPTS, REPLIES, TASKS)
    assert totals[0] == 0.0  # no partial credit by default
    assert totals[1] == 1.0 and totals[2] is None and totals[3] is None  # no weighted component: no reward
    strict = RewardCombination(weights(calculation=1.0).model_copy(update={"tolerance": 0.001}))
    assert call(strict, PROMPTS[1:2], REPLIES[1:2], TASKS[1:2]) == [0.0]
    own = dict(TASKS[1], tolerance=0.01)  # a prompt's own tolerance wins over the recipe's
    assert call(strict, PROMPTS[1:2], REPLIES[1:2], [own]) == [1.0]


# -- what goes to TRL's metrics and to rewards.jsonl ----------------------------------------------------------------


def test_metrics_are_each_components_mean_over_the_samples_that_have_it():
    logged, log_metric = metrics()
    call(RewardCombination(GRPOArgs(partial_credit=0.5)), PROMPTS, REPLIES, TASKS, log_metric=log_metric)
    assert dict(logged) == pytest.approx({"rewards/format": 3 / 4, "rewards/mcq": 0.25, "rewards/calculation": 1.0,
                                          "rewards/constraints": 0.5}, abs=1e-12)
    assert len(logged) == 4  # once each; no rubric_failures without a rubric weight
    logged, log_metric = metrics()
    call(RewardCombination(weights(format=1.0)), ["a", "b", "c"], ["A", "B", "  "],
         [{"answer": "A"}, {"answer": "A"}, {}], log_metric=log_metric)
    assert logged == [("rewards/format", 2 / 3), ("rewards/mcq", 0.5)]  # mcq only over the two that have it


def test_rubric_failures_are_logged_only_with_a_rubric_weight():
    logged, log_metric = metrics()
    reward = RewardCombination(weights(format=1.0, rubric=0.5))  # a rubric weight but no judge: no rubric
    call(reward, ["a"], ["Yes."], [{"weights": {"accuracy": 1}}], log_metric=log_metric)
    assert logged == [("rewards/format", 1.0), ("rubric_failures", 0.0)]
    assert isinstance(logged[1][1], float)


def test_rewards_jsonl_has_one_line_per_sample_appended_across_calls(tmp_path):
    log = tmp_path / "rewards.jsonl"
    reward = RewardCombination(GRPOArgs(partial_credit=0.5), log_path=log)
    long_reply = "风险提示：" + " ".join(str(i) for i in range(100))  # 294 characters, no loop
    replies = REPLIES[:3] + [long_reply]
    totals = call(reward, PROMPTS, replies, TASKS, trainer_state=State(3))
    text = log.read_text(encoding="utf-8")
    assert "风险提示" in text  # written as it is, not \u-escaped
    rows = [json.loads(line) for line in text.splitlines()]
    assert text.endswith("\n") and len(rows) == 4
    assert [r["step"] for r in rows] == [3] * 4
    assert [r["category"] for r in rows] == ["mcq", "calc", "rules", "open"]
    assert [r["reward"] for r in rows] == totals
    assert [r["components"] for r in rows] == [{"format": 1.0, "mcq": 0.25}, {"format": 1.0, "calculation": 1.0},
                                               {"format": 1.0, "constraints": 0.5}, {"format": 1.0}]
    assert [r["reply"] for r in rows] == REPLIES[:3] + [long_reply[:200]]
    assert len(rows[3]["reply"]) == 200 and set(rows[0]) == {"step", "category", "reward", "components", "reply"}
    call(reward, ["x"], ["A"], [{"answer": "B"}], trainer_state=State(4))  # no category: null
    rows = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 5 and rows[4] == {"step": 4, "category": None, "reward": 0.2 / 1.2,
                                          "components": {"format": 1.0, "mcq": 0.0}, "reply": "A"}


def test_nothing_is_written_without_a_log_path_or_a_trainer_state(tmp_path):
    log = tmp_path / "rewards.jsonl"
    call(RewardCombination(GRPOArgs(), log_path=log), PROMPTS, REPLIES, TASKS)  # no trainer_state
    assert not log.exists()
    reward = RewardCombination(GRPOArgs())
    assert call(reward, PROMPTS, REPLIES, TASKS, trainer_state=State(1)) == reward.last_totals  # no log_path
    assert list(tmp_path.iterdir()) == []


# -- the rubric: a real local judge server answering as scripted ---------------------------------------------------

ADVICE = {"weights": {"accuracy": 2, "compliance": 1}, "task": "explain", "category": "advice"}


def grade(prompt, body):
    """By the answer in the judge's prompt (requests run concurrently, in no fixed order)."""
    if "GOOD" in prompt:
        return 'Fine. {"accuracy": 5, "compliance": 3}'
    if "VETO" in prompt:
        return '{"accuracy": 5, "compliance": -1}'
    return "no json"


def judge_for(server) -> LLMClient:
    return LLMClient(ClientSection(base_url=server.url, model="judge"), "test judge")


def test_the_rubric_judges_only_tasks_with_weights_and_counts_failures(tmp_path):
    asked = []

    def recording(prompt, body):
        asked.append(prompt)
        return grade(prompt, body)

    good = round((((2 * 5 + 1 * 3) / 3) + 1) / 6, 6)
    with scripted_chat(recording) as server:
        reward = RewardCombination(weights(format=0.2, rubric=1.0, mcq=1.0), judge=judge_for(server),
                                   log_path=tmp_path / "r.jsonl")
        logged, log_metric = metrics()
        prompts = [[{"role": "system", "content": "SYSTEM TEXT"}, {"role": "user", "content": "Explain a bond."}],
                   "Explain equity.", "Pick: A or B."]
        totals = call(reward, prompts, ["GOOD answer", "BAD answer", "A"], [ADVICE, ADVICE, {"answer": "A"}],
                      log_metric=log_metric, trainer_state=State(2))
        assert server.requests == 3  # the default judge_retries: the failing one asked twice, the MCQ never
        assert reward.rubric_failures == 1
        assert totals == pytest.approx([(0.2 + good) / 1.2, 1.0, 1.0], abs=1e-12)  # a failed rubric is no zero
        assert dict(logged) == pytest.approx({"rewards/format": 1.0, "rewards/rubric": good, "rewards/mcq": 1.0,
                                              "rubric_failures": 1.0}, abs=1e-12)
        assert len(logged) == 4
        rows = [json.loads(line) for line in (tmp_path / "r.jsonl").read_text(encoding="utf-8").splitlines()]
        assert [r["components"] for r in rows] == [{"format": 1.0, "rubric": good}, {"format": 1.0, "rubric": None},
                                                   {"format": 1.0, "mcq": 1.0}]
        good_prompt = next(p for p in asked if "GOOD" in p)
        assert 'User request:\n"""\nExplain a bond.\n"""' in good_prompt and "SYSTEM TEXT" not in good_prompt
        assert 'User request:\n"""\nExplain equity.\n"""' in next(p for p in asked if "BAD" in p)
        assert "Task: explain" in good_prompt

        logged, log_metric = metrics()
        totals = call(reward, ["Explain a bond."] * 3, ["BAD one", "BAD two", "VETO"], [ADVICE] * 3,
                      log_metric=log_metric)
        assert reward.rubric_failures == 3  # counted across calls: 1 + 2
        assert totals == [1.0, 1.0, pytest.approx(0.2 / 1.2, abs=1e-12)]  # compliance -1 vetoes the rubric to 0
        assert dict(logged) == {"rewards/format": 1.0, "rewards/rubric": 0.0, "rubric_failures": 3.0}
        assert server.requests == 3 + 5


def test_a_failed_rubric_alone_gives_no_reward_and_retries_follow_judge_retries():
    with scripted_chat(grade) as server:
        reward = RewardCombination(weights(rubric=1.0), judge=judge_for(server), judge_retries=0)
        assert call(reward, ["Explain."] * 2, ["GOOD", "BAD"], [ADVICE] * 2) == [
            round((13 / 3 + 1) / 6, 6), None]
        assert server.requests == 2 and reward.rubric_failures == 1
        reward = RewardCombination(weights(rubric=1.0), judge=judge_for(server), judge_retries=2)
        assert call(reward, ["Explain."], ["BAD"], [ADVICE]) == [None]
        assert server.requests == 2 + 3


def test_a_rubric_weight_of_zero_never_asks_the_judge():
    with scripted_chat(grade) as server:
        logged, log_metric = metrics()
        reward = RewardCombination(weights(format=1.0), judge=judge_for(server))
        assert call(reward, ["Explain."], ["GOOD"], [ADVICE], log_metric=log_metric) == [1.0]
        assert server.requests == 0 and reward.rubric_failures == 0
        assert logged == [("rewards/format", 1.0)]


# -- the reward model: a tiny real one, its score through a sigmoid ------------------------------------------------

TEXTS = ["What is a bond? A loan to an issuer that pays interest.", "Explain equity. Ownership of a company.",
         "You are careful. Pick one: A or B. The answer is A.", "风险 收益 利率 债券 股票"]


@pytest.fixture(scope="module")
def reward_model(tmp_path_factory):
    """A tiny random reward model saved as the reward stage saves one. torch and transformers are imported here, not
    at the top: these tests run last, so a mutant an earlier test kills never pays for those imports."""
    import torch
    from transformers import LlamaConfig, LlamaForSequenceClassification

    from finloom.llm.scratch import train_tokenizer

    tokenizer = train_tokenizer(TEXTS * 5, 300)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, num_labels=1, max_position_embeddings=256,
                         pad_token_id=tokenizer.pad_token_id, initializer_range=0.5)
    folder = tmp_path_factory.mktemp("reward_model")
    LlamaForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def recording_scorer(model_dir):
    """The real local scorer (what the align stage builds for a model directory), remembering what it was asked."""
    from finloom.llm.reward_scorer import LocalRewardScorer

    class RecordingScorer(LocalRewardScorer):
        def score(self, conversations):
            self.asked.append(conversations)
            return super().score(conversations)

    scorer = RecordingScorer(model_dir)
    scorer.asked = []
    return scorer


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def test_the_reward_model_scores_the_conversation_through_a_sigmoid(reward_model, tmp_path):
    scorer = recording_scorer(reward_model)
    reward = RewardCombination(weights(format=0.2, rm=0.5, mcq=1.0), scorer=scorer, log_path=tmp_path / "r.jsonl")
    prompts = [[{"role": "system", "content": "You are careful."}, {"role": "user", "content": "Pick one: A or B."}],
               "What is a bond?"]
    replies = ["The answer is A.", "A loan to an issuer."]
    logged, log_metric = metrics()
    totals = call(reward, prompts, replies, [{"answer": "A", "category": "mcq"}, {"category": "open"}],
                  log_metric=log_metric, trainer_state=State(1))
    conversations = [prompts[0] + [{"role": "assistant", "content": replies[0]}],
                     [{"role": "user", "content": prompts[1]}, {"role": "assistant", "content": replies[1]}]]
    assert scorer.asked == [conversations]  # the whole conversation; a plain prompt as the user's turn
    scores = recording_scorer(reward_model).score(conversations)
    assert abs(scores[0] - scores[1]) > 0.05 and min(abs(s) for s in scores) > 0.05  # a meaningful check
    rm = [sigmoid(s) for s in scores]
    rows = [json.loads(line) for line in (tmp_path / "r.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["components"]["rm"] for r in rows] == pytest.approx(rm, abs=1e-12)
    assert totals == pytest.approx([(0.2 * 1 + 1.0 * 1 + 0.5 * rm[0]) / 1.7, (0.2 * 1 + 0.5 * rm[1]) / 0.7],
                                   abs=1e-12)
    assert dict(logged)["rewards/rm"] == pytest.approx((rm[0] + rm[1]) / 2, abs=1e-12)


def test_without_an_rm_weight_or_a_scorer_the_reward_model_is_skipped(reward_model, tmp_path):
    scorer = recording_scorer(reward_model)
    log = tmp_path / "r.jsonl"
    logged, log_metric = metrics()
    totals = call(RewardCombination(weights(format=1.0), scorer=scorer, log_path=log), ["What is a bond?"],
                  ["A loan."], [{}], log_metric=log_metric, trainer_state=State(1))
    assert totals == [1.0] and scorer.asked == [] and logged == [("rewards/format", 1.0)]
    assert json.loads(log.read_text(encoding="utf-8"))["components"] == {"format": 1.0}
    logged, log_metric = metrics()
    totals = call(RewardCombination(weights(format=1.0, rm=1.0)), ["What is a bond?"], ["A loan."], [{}],
                  log_metric=log_metric)
    assert totals == [1.0] and logged == [("rewards/format", 1.0)]


def test_an_extreme_reward_model_score_saturates_instead_of_overflowing(reward_model):
    class Extreme(type(recording_scorer(reward_model))):
        def score(self, conversations):
            return [-1000.0, 1000.0]

    reward = RewardCombination(weights(rm=1.0), scorer=Extreme(reward_model))
    assert call(reward, ["Is it safe?", "Is it safe?"], ["Yes.", "No."], [{}, {}]) == [0.0, 1.0]
