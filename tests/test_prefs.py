"""The preference builder: near duplicates in Chinese, the three judge modes through a real server, the stage's
funnel and pairs, resume without asking twice, and the reward model training on what it built."""

from __future__ import annotations

import json
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
