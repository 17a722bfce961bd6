"""The preference builder: near duplicates in Chinese, the three judge modes through a real server, the stage's
funnel and pairs, resume without asking twice, and the reward model training on what it built."""

from __future__ import annotations

import json
import random
import re
import shutil

import pytest

from conftest import scripted_chat, tiny_recipe, write_recipe
from finloom.llm.client import LLMClient
from finloom.recipe import ClientSection, load_recipe
from finloom.reward.judging import judged_scores, mode_for, verified_scores
from finloom.reward.prefs import near_duplicates
from finloom.runner import Runner
from finloom.stages import RunContext, read_manifest, upstream_stages


def test_near_duplicates_by_rouge_l_in_chinese_and_english():
    answers = ["银行承兑汇票是由银行承诺到期付款的商业汇票。", "银行承兑汇票是由银行承诺到期无条件付款的商业汇票。",
               "股票是股份公司发行的所有权凭证。", "A bond pays interest until it matures.",
               "A bond pays interest until maturity.", "Equity is ownership."]
    assert near_duplicates(answers, 0.7) == [1, 4]
    assert near_duplicates(answers, 0.99) == []


@pytest.mark.parametrize("prompt, configured, mode", [
    ({"answer": "A", "golden": "ref"}, "auto", "verified"),  # something to verify beats a reference
    ({"expected": 4}, "checks", "verified"),
    ({"checks": [{"kind": "contains", "value": "x"}]}, "absolute", "absolute"),  # a judge named in the recipe wins
    ({"kind": "reasoning"}, "checks", "checks"),  # nothing to verify: the stage rejects it
    ({"golden": "ref", "kind": "reasoning"}, "auto", "golden"),
    ({"golden": "", "kind": "reasoning"}, "auto", "pairwise"),  # an empty reference is none
    ({"kind": "open"}, "auto", "absolute"),
    ({}, "auto", "absolute"),
    ({"golden": "ref"}, "pairwise", "pairwise"),
    ({"golden": "ref", "kind": "reasoning"}, "absolute", "absolute"),  # a configured judge ignores the reference too
], ids=["answer-beats-reference", "expected-under-checks", "configured-judge-wins", "checks-with-nothing-to-verify",
        "reference-beats-reasoning", "empty-reference-reasoning", "open-kind", "bare-prompt", "configured-pairwise",
        "configured-absolute"])
def test_judge_mode_of_a_prompt(prompt, configured, mode):
    assert mode_for(prompt, configured) == mode


def test_verified_scores_weigh_format_option_and_number_equally():
    prompt = {"answer": "B", "expected": 12.5}
    # format, option and number all right: 1; well formed but wrong option and number: (1 + 0 + 0) / 3
    assert verified_scores(prompt, ["Answer: B. The result is 12.5.", "A, 3"]) == [1.0, pytest.approx(1 / 3)]


def scripted_judge(prompt: str, body: dict) -> str:
    """Absolute / golden: 10 for an answer containing the reference it is shown, 9 for one containing 'good', 2 for
    'bad', no JSON for 'broken'; pairwise: the
    answer containing 'good' wins, no JSON where either is 'broken'; otherwise (a tiny model's random answers) a
    score from the answer's length."""
    if "Answer A:" in prompt:
        a, b = (re.search(rf"Answer {side}:\n<<<\n(.*?)\n>>>", prompt, re.S).group(1) for side in "AB")
        if "broken" in a + b:
            return "I like both."
        return json.dumps({"same_result": False, "better": "A" if "good" in a else "B" if "good" in b else "tie"})
    answer = re.search(r"Response:\n<<<\n(.*?)\n>>>", prompt, re.S).group(1)
    reference = re.search(r"Reference answer:\n<<<\n(.*?)\n>>>", prompt, re.S)
    if reference and reference.group(1) in answer:  # golden mode: an answer that states the reference is best
        return json.dumps({"score": 10})
    if "broken" in answer:
        return "I like it."
    return json.dumps({"score": 9 if "good" in answer else 2 if "bad" in answer else 1 + len(answer) % 10})


@pytest.fixture(scope="module")
def judge():
    with scripted_chat(scripted_judge) as server:
        yield server


def test_judge_modes(judge):
    answers = ["a good answer", "a bad answer", "a broken answer"]
    with LLMClient(ClientSection(base_url=judge.url)) as client:
        (scores, replies), = judged_scores(client, [{"mode": "absolute", "prompt": "Explain bonds.", "answers": answers,
                                                      "golden": None}], retries=1)
        assert scores == [pytest.approx(8 / 9), pytest.approx(1 / 9), None] and len(replies[2]) == 2
        items = [{"mode": "golden", "prompt": "Explain bonds.", "answers": answers[:2], "golden": "A bond is a loan."},
                 {"mode": "pairwise", "prompt": "2+2?", "answers": ["good: 4", "5", "6"], "golden": None},
                 {"mode": "absolute", "prompt": "Explain loans.", "answers": ["bad", "good"], "golden": "ignored"}]
        asked = judge.requests
        (golden, _), (pairwise, replies), (absolute, _) = judged_scores(client, items, retries=0)
        assert golden == [pytest.approx(8 / 9), pytest.approx(1 / 9)]
        assert pairwise == [1.0, 0.25, 0.25] and len(replies) == 6  # both orders of 3 pairs; ties are half a win
        assert absolute == [pytest.approx(1 / 9), pytest.approx(8 / 9)]
        assert judge.requests - asked == 2 + 6 + 2  # every request of the three prompts, each once


def test_only_golden_mode_shows_the_judge_the_reference(judge):
    items = [{"mode": "golden", "prompt": "Explain bonds.", "answers": ["so: a bond is a loan", "a bad answer"],
              "golden": "a bond is a loan"},
             {"mode": "absolute", "prompt": "Explain bonds.", "answers": ["so: a bond is a loan, bad"],
              "golden": "a bond is a loan"}]
    with LLMClient(ClientSection(base_url=judge.url)) as client:
        (golden, _), (absolute, _) = judged_scores(client, items, retries=0)
    assert golden == [1.0, pytest.approx(1 / 9)]  # the judge saw the reference: 10 for the answer that states it
    assert absolute == [pytest.approx(1 / 9)]  # absolute mode rates without it


def test_pairwise_comparisons_that_never_parse_count_for_neither_answer(judge):
    items = [{"mode": "pairwise", "prompt": "2+2?", "answers": ["good: 4", "broken", "5"], "golden": None}]
    with LLMClient(ClientSection(base_url=judge.url)) as client:
        (scores, replies), = judged_scores(client, items, retries=0)
    # "good: 4" beats "5" in both orders (2 of 2); "broken" is in no comparison that parsed
    assert scores == [1.0, None, 0.0] and len(replies) == 6


def test_a_tie_is_half_a_win_for_each_answer_when_the_judge_ties_in_one_order_only():
    """A position-biased judge: it ties when "steady" is shown first and otherwise prefers whichever answer comes
    first. A consistent judge cannot tell a tie from a win for either side; this one can."""
    def biased(prompt: str, body: dict) -> str:
        first = re.search(r"Answer A:\n<<<\n(.*?)\n>>>", prompt, re.S).group(1)
        return json.dumps({"same_result": False, "better": "tie" if "steady" in first else "A"})

    items = [{"mode": "pairwise", "prompt": "Which fund?", "answers": ["steady", "bold"], "golden": None}]
    with scripted_chat(biased) as server, LLMClient(ClientSection(base_url=server.url)) as client:
        (scores, replies), = judged_scores(client, items, retries=0)
    # (steady, bold): a tie, half a win each; (bold, steady): bold wins
    assert scores == [0.25, 0.75] and len(replies) == 2


def test_prefs_stage_builds_scored_pairs_resumes_and_feeds_the_reward_model(tiny_data, tiny_run, tmp_path, judge):
    prompts = [{"id": f"open-{i}", "messages": [{"role": "user", "content": f"Explain {w} to a client."}]}
               for i, w in enumerate(["bond", "loan", "equity", "margin", "audit", "premium"])]
    prompts += [{"id": "mcq-1", "messages": [{"role": "user", "content": "Which is a debt security? A. bond B. stock"}],
                 "answer": "A"},
                {"id": "with-reference", "messages": [{"role": "user", "content": "What is a dividend?"},
                                                      {"role": "assistant", "content": "A share of profit."}]},
                {"id": "bad", "messages": [{"role": "assistant", "content": "no question"}]}]
    (tiny_data / "pref_prompts.jsonl").write_text("".join(json.dumps(p) + "\n" for p in prompts), encoding="utf-8")
    recipe = tiny_recipe(**{"prefs": {"sources": [{"path": "pref_prompts.jsonl"}], "samples": 3, "max_tokens": 12,
                                      "min_spread": 0.1, "batch_size": 3},
                            "teacher": {"base_url": judge.url, "concurrency": 2}})
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    loaded = load_recipe(write_recipe(tiny_data, recipe, "prefs.yaml"))
    assert Runner(loaded, run_dir).run(only="prefs") == {"prefs": "done"}
    metrics = read_manifest(run_dir, "prefs")["metrics"]
    decisions = [json.loads(line) for line in (run_dir / "prefs" / "decisions.jsonl").read_text().splitlines()]
    pairs = [json.loads(line) for line in (run_dir / "prefs" / "pairs.jsonl").read_text().splitlines()]
    assert metrics["read"] == 9 and metrics["rejected"] == 1 and metrics["prompts"] == len(decisions) == 8
    assert metrics["pairs"] == len(pairs) == sum(d["kept"] for d in decisions) > 0
    assert metrics["pairs"] + sum(metrics["dropped"].values()) == metrics["prompts"]
    assert metrics["modes"] == {"absolute": 6, "golden": 1, "verified": 1}
    for pair in pairs:
        decision = next(d for d in decisions if d["id"] == pair["id"])
        scored = [s for s in decision["scores"] if s is not None]
        assert pair["score_chosen"] == pytest.approx(max(scored)) and pair["score_rejected"] == pytest.approx(min(scored))
        assert pair["score_chosen"] - pair["score_rejected"] >= 0.1
        assert pair["chosen"][0]["content"] in decision["answers"] and decision["judge_replies"]

    # Run the stage again on its caches: nothing sampled or judged twice, the same pairs.
    asked = judge.requests
    from finloom.reward.prefs import run as run_prefs

    again = run_prefs(loaded.prefs, RunContext(run_dir, loaded, "prefs", resume=True))
    assert again.metrics["sampled_now"] == 0 and judge.requests == asked
    assert (run_dir / "prefs" / "pairs.jsonl").read_text().splitlines() == [json.dumps(p, ensure_ascii=False) for p in pairs]

    assert Runner(loaded, run_dir).run(only="reward") == {"reward": "done"}
    reward = read_manifest(run_dir, "reward")["metrics"]
    assert reward["built_pairs"] == len(pairs) and reward["scored_pairs"] == len(pairs)


def test_prefs_by_checks_alone_needs_no_teacher_and_samples_max_prompts(tiny_data, tiny_run, tmp_path):
    """judge: checks scores by the verifiable fields only: no teacher is read (a stage:align teacher later in the
    run is fine), prompts with nothing to verify are rejects with their reason, and max_prompts draws a seeded
    sample whose funnel still adds up."""
    recipe = tiny_recipe(**{"prefs": {"sources": [{"path": "rl.jsonl"}], "judge": "checks", "max_prompts": 10,
                                      "samples": 3, "max_tokens": 8, "min_spread": 0.01},
                            "teacher": {"local_model": "stage:align"}})
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    loaded = load_recipe(write_recipe(tiny_data, recipe, "prefs_checks.yaml"))
    assert "align" not in upstream_stages(loaded, "prefs")
    assert Runner(loaded, run_dir).run(only="prefs") == {"prefs": "done"}
    metrics = read_manifest(run_dir, "prefs")["metrics"]
    records = (tiny_data / "rl.jsonl").read_text().splitlines()
    assert metrics["read"] == len(records) and metrics["prompts"] == 10 and metrics["modes"] == {"verified": 10}
    assert metrics["rejected"] == 1 and metrics["not_sampled"] == len(records) - 1 - 10  # one record is broken
    assert metrics["pairs"] + sum(metrics["dropped"].values()) == metrics["prompts"]

    with_open = tiny_data / "rl_and_open.jsonl"
    with_open.write_text("\n".join(records[:-1] + [json.dumps({"id": "open", "prompt": "Explain a bond."})]) + "\n")  # no broken one
    recipe["prefs"] |= {"sources": [{"path": with_open.name}], "max_prompts": None}
    loaded = load_recipe(write_recipe(tiny_data, recipe, "prefs_checks_open.yaml"))
    assert Runner(loaded, run_dir).run(only="prefs", force=True) == {"prefs": "done"}
    rejects = [json.loads(line) for line in (run_dir / "prefs" / "rejects.jsonl").read_text().splitlines()]
    assert {"id": "open", "reason": "judge: checks, but no answer, expected or checks to verify"} in rejects
    assert read_manifest(run_dir, "prefs")["metrics"]["modes"] == {"verified": len(records) - 1}


# Fast tests of the stage itself (no tiny pipeline: the teacher answers and judges, through one scripted server).

def test_mixed_tokenizer_splits_chinese_into_characters_and_keeps_latin_words_and_numbers_whole():
    from finloom.reward.prefs import MixedTokenizer

    assert MixedTokenizer().tokenize("银行Bond, 2024年 ROE=12.5%") == ["银", "行", "bond", "2024", "年", "roe", "12", "5"]


def test_near_duplicates_compare_with_kept_answers_only_and_reach_the_threshold_inclusively():
    first, second, third = "a b c d e f g h i j", "a b c d e f g h x y", "c d e f g h x y z w"
    # second repeats 8 of first's 10 words (F1 0.8); third repeats 8 of second's but only 6 of first's (0.6)
    assert near_duplicates([first, second, third], 0.7) == [1]
    assert near_duplicates([first, second, third], 0.8) == [1]  # at the threshold is a duplicate
    assert near_duplicates([first, second, third], 0.81) == []
    assert near_duplicates(["Same words.", "same WORDS"], 1.0) == [1]
    assert near_duplicates(["only one"], 0.5) == [] and near_duplicates([], 0.5) == []


def _decided(scores: list, sampled: int | None = None, min_spread: float = 0.25, mode: str = "absolute"):
    from finloom.reward.prefs import _decide

    candidates = [f"answer {k}" for k in range(len(scores))] if sampled is None or sampled >= 2 else ["answer 0"]
    prompt = {"id": "p", "messages": [{"role": "user", "content": "q"}]}
    answers = {"p": candidates + ["a duplicate"] * ((sampled or len(candidates)) - len(candidates))}
    return _decide([prompt], answers, {"p": candidates}, {"p": {"scores": scores, "replies": [["r"]] * len(scores)}},
                   {"p": mode}, min_spread)


def test_decide_keeps_the_best_and_the_worst_answer_with_rounded_scores():
    pairs, decisions = _decided([0.5, 0.1234567, None, 0.9876543, 0.1234567], mode="golden")
    assert pairs == [{"id": "p", "prompt": [{"role": "user", "content": "q"}],
                      "chosen": [{"role": "assistant", "content": "answer 3"}],
                      "rejected": [{"role": "assistant", "content": "answer 1"}],  # the first of two equal worst
                      "score_chosen": 0.987654, "score_rejected": 0.123457, "judge": "golden"}]
    assert decisions == [{"id": "p", "mode": "golden", "answers": [f"answer {k}" for k in range(5)],
                          "scores": [0.5, 0.1234567, None, 0.9876543, 0.1234567], "judge_replies": [["r"]] * 5,
                          "sampled": 5, "kept": True, "reason": None}]
    pairs, _ = _decided([0.75, 0.75, 0.25])  # of two equal best, the later one
    assert (pairs[0]["chosen"][0]["content"], pairs[0]["rejected"][0]["content"]) == ("answer 1", "answer 2")


@pytest.mark.parametrize("scores, sampled, reason", [
    ([0.75, 0.5], None, None),  # a spread of exactly min_spread is enough
    ([0.75, 0.5 + 1e-9], None, "answers score alike"),
    ([0.5, 0.5, 0.5], None, "answers score alike"),
    ([None, 1.0, None], None, "judge failed"),
    ([1.0, 0.0], 1, "fewer than two answers sampled"),
    ([0.0], 3, "near-duplicate answers"),
    ([], 2, "near-duplicate answers"),
    ([None, None], 2, "judge failed"),
], ids=["spread-at-min", "spread-under-min", "all-alike", "one-parsed", "one-sampled", "one-distinct",
        "no-scores", "none-parsed"])
def test_decide_drops_a_prompt_with_its_reason(scores, sampled, reason):
    pairs, (decision,) = _decided(scores, sampled)
    assert decision["kept"] is (reason is None) and decision["reason"] == reason and len(pairs) == (reason is None)
    assert decision["sampled"] == (sampled or len(scores))


PREF_ANSWERS = {  # prompt -> the teacher's answers for sampling seeds 7, 8, 9 (the tiny recipe's seed is 7)
    "Explain a bond.": ["bonds pay coupons [9]", "bonds are loans [2]", "bonds pay coupons [9]"],
    "Explain a loan.": ["loans cost interest [4]", "a loan is borrowed money [10]", "loans [1]"],
    "Explain equity.": ["equity is ownership [5]", "shares of a company [5]", "owners keep the rest [5]"],
    "Explain margin.": ["margin is borrowed [3]"] * 3,
    "Explain an audit.": ["an audit checks books [6]", "", "  "],
    "Explain a premium.": ["premium is a price [7]", "broken reply", "broken again here"],
    "Which is debt? A. bond B. stock": ["Answer: A", "Answer: B", "maybe"],
    "What is a dividend?": ["it is a share of profit", "cash paid to holders [4]", "dividends [2]"],
    "What is 2+2?": ["four, since two plus two [9]", "five [1]", "twenty-two [1]"],
}


def teacher_and_judge(prompt: str, body: dict) -> str:
    """Sampling: the answer PREF_ANSWERS lists for the request's seed. Judging: an answer's score is the [N] it
    ends with (10 if it states the reference shown); no JSON for 'broken' or where the judge is not shown one of
    PREF_ANSWERS' questions; pairwise: the higher [N] wins."""
    if prompt in PREF_ANSWERS:
        return PREF_ANSWERS[prompt][body["seed"] - 7]
    if not any(question in prompt for question in PREF_ANSWERS):  # the judge must be shown the question
        return "which question?"
    marker = lambda text: int(re.search(r"\[(\d+)\]", text).group(1))  # noqa: E731
    if "Answer A:" in prompt:
        a, b = (marker(re.search(rf"Answer {side}:\n<<<\n(.*?)\n>>>", prompt, re.S).group(1)) for side in "AB")
        return json.dumps({"same_result": a == b, "better": "A" if a > b else "B" if b > a else "tie"})
    answer = re.search(r"Response:\n<<<\n(.*?)\n>>>", prompt, re.S).group(1)
    reference = re.search(r"Reference answer:\n<<<\n(.*?)\n>>>", prompt, re.S)
    if reference and reference.group(1) in answer:
        return json.dumps({"score": 10})
    return "no idea" if "broken" in answer else json.dumps({"score": marker(answer)})


def _prefs_on_a_scripted_teacher(tiny_data, tmp_path, server, name: str, records: list, **prefs):
    (tiny_data / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    settings = {"sources": [{"path": f"{name}.jsonl"}], "models": ["teacher"], "samples": 3, "temperature": 0.8,
                "top_p": 0.9, "max_tokens": 20, "min_spread": 0.1, "retries": 1, "batch_size": 4} | prefs
    recipe = load_recipe(write_recipe(tiny_data, tiny_recipe(prefs=settings, teacher={"base_url": server.url}),
                                      f"{name}.yaml"))
    return recipe, RunContext(tmp_path / "run", recipe, "prefs")


def _jsonl(path) -> list:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_prefs_stage_on_a_scripted_teacher_keeps_every_pair_and_drops_every_prompt_with_its_reason(tiny_data, tmp_path):
    from finloom.reward.prefs import run as run_prefs

    user = lambda text: [{"role": "user", "content": text}]  # noqa: E731
    records = [{"id": i, "messages": ([{"role": "system", "content": "You advise bank clients."}] if i == "loan" else [])
                + user(text)} for i, text in
               [("bond", "Explain a bond."), ("loan", "Explain a loan."), ("equity", "Explain equity."),
                ("margin", "Explain margin."), ("audit", "Explain an audit."), ("premium", "Explain a premium.")]]
    records += [{"id": "mcq", "messages": user("Which is debt? A. bond B. stock"), "answer": "A"},
                {"id": "dividend", "messages": user("What is a dividend?") + [
                    {"role": "assistant", "content": "a share of profit"}]},
                {"id": "sum", "messages": user("What is 2+2?"), "kind": "reasoning"},
                {"id": "bad", "messages": [{"role": "assistant", "content": "no question"}]}]
    bodies = []
    with scripted_chat(lambda prompt, body: bodies.append(body) or teacher_and_judge(prompt, body)) as server:
        recipe, ctx = _prefs_on_a_scripted_teacher(tiny_data, tmp_path, server, "scripted_prefs", records)
        result = run_prefs(recipe.prefs, ctx)
        asked = server.requests
        again = run_prefs(recipe.prefs, RunContext(ctx.run_dir, recipe, "prefs", resume=True))
        assert server.requests == asked  # the caches answer everything
    assert result.outputs == {"pairs": "prefs/pairs.jsonl", "decisions": "prefs/decisions.jsonl"}
    assert result.metrics == {
        "read": 10, "rejected": 1, "not_sampled": 0, "prompts": 9, "pairs": 5,
        "dropped": {"answers score alike": 1, "near-duplicate answers": 1, "fewer than two answers sampled": 1,
                    "judge failed": 1},
        "sampled_now": 9, "answers": 25, "near_duplicates": 3, "judge_failures": 2,
        "modes": {"absolute": 6, "golden": 1, "pairwise": 1, "verified": 1}}
    assert again.metrics == result.metrics | {"sampled_now": 0}
    assert json.loads((ctx.stage_dir / "funnel.json").read_text()) == again.metrics
    assert [r["id"] for r in _jsonl(ctx.stage_dir / "rejects.jsonl")] == ["bad"]
    sampling = [b for b in bodies if b["messages"][-1]["content"] in PREF_ANSWERS]
    assert len(sampling) == 27 and {b["seed"] for b in sampling} == {7, 8, 9}
    assert {(b["temperature"], b["top_p"], b["max_tokens"]) for b in sampling} == {(0.8, 0.9, 20)}
    # judged: bond 2, loan 3, equity 3, premium 3 + 2 retries of the broken ones, dividend 3, sum 3 * 2 orders
    assert asked - len(sampling) == 2 + 3 + 3 + 5 + 3 + 6

    pairs = {p["id"]: p for p in _jsonl(ctx.stage_dir / "pairs.jsonl")}
    chosen = {i: (p["chosen"][0]["content"], p["rejected"][0]["content"], p["score_chosen"], p["score_rejected"],
                  p["judge"]) for i, p in pairs.items()}
    assert chosen == {"bond": ("bonds pay coupons [9]", "bonds are loans [2]", 0.888889, 0.111111, "absolute"),
                      "loan": ("a loan is borrowed money [10]", "loans [1]", 1.0, 0.0, "absolute"),
                      "mcq": ("Answer: A", "maybe", 1.0, 0.0, "verified"),
                      "dividend": ("it is a share of profit", "dividends [2]", 1.0, 0.111111, "golden"),
                      "sum": ("four, since two plus two [9]", "five [1]", 1.0, 0.25, "pairwise")}
    assert pairs["dividend"]["prompt"] == user("What is a dividend?")  # the reference is not part of the prompt
    decisions = {d["id"]: d for d in _jsonl(ctx.stage_dir / "decisions.jsonl")}
    assert list(decisions) == ["bond", "loan", "equity", "margin", "audit", "premium", "mcq", "dividend", "sum"]
    assert {i: d["reason"] for i, d in decisions.items() if not d["kept"]} == {
        "equity": "answers score alike", "margin": "near-duplicate answers", "audit": "fewer than two answers sampled",
        "premium": "judge failed"}
    assert decisions["bond"]["answers"] == ["bonds pay coupons [9]", "bonds are loans [2]"]
    assert decisions["bond"]["sampled"] == 3 and decisions["audit"]["sampled"] == 1
    assert decisions["margin"]["scores"] == [] and decisions["margin"]["judge_replies"] == []
    assert decisions["premium"]["scores"] == [pytest.approx(6 / 9), None, None]
    assert [len(replies) for replies in decisions["premium"]["judge_replies"]] == [1, 2, 2]
    assert decisions["mcq"]["scores"][1] < 1.0 and decisions["mcq"]["judge_replies"] == []
    assert decisions["sum"]["scores"] == [1.0, 0.25, 0.25] and len(decisions["sum"]["judge_replies"]) == 6


def test_prefs_stage_samples_max_prompts_rejects_unverifiable_ones_under_checks_and_refuses_bad_sources(tiny_data,
                                                                                                        tmp_path):
    from finloom.errors import BadInput
    from finloom.reward.prefs import run as run_prefs

    mcq = [{"id": f"mcq-{k}", "messages": [{"role": "user", "content": "Which is debt? A. bond B. stock"}],
            "answer": "A"} for k in range(5)]
    open_one = {"id": "open", "messages": [{"role": "user", "content": "Explain a bond."}]}
    with scripted_chat(teacher_and_judge) as server:
        recipe, ctx = _prefs_on_a_scripted_teacher(tiny_data, tmp_path, server, "prefs_checks_sample",
                                                   [open_one, *mcq], judge="checks", max_prompts=2)
        metrics = run_prefs(recipe.prefs, ctx).metrics
        assert server.requests == 2 * 3  # sampling only: no judge for verified prompts
        assert _jsonl(ctx.stage_dir / "rejects.jsonl") == [
            {"id": "open", "reason": "judge: checks, but no answer, expected or checks to verify"}]
        sampled = [d["id"] for d in _jsonl(ctx.stage_dir / "decisions.jsonl")]
        assert sampled == [f"mcq-{k}" for k in sorted(random.Random(7).sample(range(5), 2))]
        assert metrics | {"dropped": None} == {
            "read": 6, "rejected": 1, "not_sampled": 3, "prompts": 2, "pairs": 2, "dropped": None, "sampled_now": 2,
            "answers": 6, "near_duplicates": 0, "judge_failures": 0, "modes": {"verified": 2}} and not metrics["dropped"]

        recipe, ctx = _prefs_on_a_scripted_teacher(tiny_data, tmp_path / "all", server, "prefs_all", mcq[:2],
                                                   max_prompts=2)
        assert run_prefs(recipe.prefs, ctx).metrics["not_sampled"] == 0

        recipe, ctx = _prefs_on_a_scripted_teacher(tiny_data, tmp_path / "none", server, "prefs_none", [open_one],
                                                   judge="checks")
        with pytest.raises(BadInput, match=r"prefs.sources: no usable prompts \(1 rejected, see .*rejects.jsonl\)"):
            run_prefs(recipe.prefs, ctx)
        recipe, ctx = _prefs_on_a_scripted_teacher(tiny_data, tmp_path / "twice", server, "prefs_twice",
                                                   [open_one, open_one])
        with pytest.raises(BadInput, match="prefs.sources: prompt ids repeat"):
            run_prefs(recipe.prefs, ctx)
        asked = server.requests
    settings = {"sources": [{"path": "prefs_judged.jsonl"}], "models": ["stage:sft"]}
    (tiny_data / "prefs_judged.jsonl").write_text(json.dumps(open_one) + "\n" + json.dumps(mcq[0]) + "\n")
    recipe = load_recipe(write_recipe(tiny_data, tiny_recipe(prefs=settings), "prefs_no_teacher.yaml"))
    with pytest.raises(BadInput, match="teacher: 1 prefs prompts need a judge"):
        run_prefs(recipe.prefs, RunContext(tmp_path / "no_teacher", recipe, "prefs"))
    recipe = load_recipe(write_recipe(tiny_data, tiny_recipe(prefs=settings | {"models": ["teacher"], "judge": "checks"}),
                                      "prefs_teacher_missing.yaml"))
    with pytest.raises(BadInput, match="prefs.models: teacher named, but the recipe has no teacher section"):
        run_prefs(recipe.prefs, RunContext(tmp_path / "teacher_missing", recipe, "prefs"))
    assert server.requests == asked


def test_prefs_stage_counts_every_prompt_needing_a_judge_of_a_large_source_without_a_teacher(tiny_data, tmp_path):
    """Hundreds of distinct prompt ids are distinct (compared by value, not identity)."""
    from finloom.errors import BadInput
    from finloom.reward.prefs import run as run_prefs

    (tiny_data / "prefs_many.jsonl").write_text("".join(
        json.dumps({"id": f"open-{k}", "messages": [{"role": "user", "content": f"Explain bond {k}."}]}) + "\n"
        for k in range(300)))
    recipe = load_recipe(write_recipe(tiny_data, tiny_recipe(prefs={"sources": [{"path": "prefs_many.jsonl"}],
                                                                    "models": ["stage:sft"]}), "prefs_many.yaml"))
    with pytest.raises(BadInput, match="teacher: 300 prefs prompts need a judge"):
        run_prefs(recipe.prefs, RunContext(tmp_path / "run", recipe, "prefs"))


def test_prefs_stage_without_models_samples_the_model_it_follows(tiny_data, tmp_path, monkeypatch):
    import finloom.reward.prefs as prefs
    from test_wiring import Caught, catch

    (tiny_data / "prefs_default.jsonl").write_text(json.dumps(
        {"id": "mcq", "messages": [{"role": "user", "content": "Which is debt? A. bond B. stock"}], "answer": "A"}) + "\n")
    recipe = {"name": "start-only", "seed": 7, "model": {"hf": "org/start-model"},
              "prefs": {"sources": [{"path": "prefs_default.jsonl"}], "judge": "checks"}}
    loaded = load_recipe(write_recipe(tiny_data, recipe, "prefs_default.yaml"))
    seen = catch(monkeypatch, prefs, "ClientSection")
    with pytest.raises(Caught):
        prefs.run(loaded.prefs, RunContext(tmp_path / "run", loaded, "prefs"))
    assert seen == {"local_model": "org/start-model"}  # no model stage before prefs: model.hf
