"""The benchmark harness's own logic (``finloom/eval/harness.py``) without lm-eval: which templates a benchmark
gets, the data files and task YAMLs ``prepare`` writes, and the per-question rows and summary built from
per-sample logs shaped as lm-eval writes them (``filtered_resps`` of ``(log-likelihood, is_greedy)`` pairs for
log-likelihood tasks, of the reply for generation tasks, plus the template's metrics)."""

from __future__ import annotations

import json

import pytest

from finloom.eval import harness
from finloom.eval.harness import PreparedBenchmark, SubTask

SINGLE = {"id": "q1", "question": "Which is a bond?", "options": ["Treasury note", "Stock", "Swap"],
          "letters": ["A", "B", "C"], "answer": "A", "multi": False, "answer_index": 0,
          "subsets": ["AB", "AC", "BC", "ABC"], "task_name": "CFA", "second_level": "fixed income"}
MULTI = {"id": "q2", "question": "下列属于资产的有（ ）。", "options": ["应收账款", "存货", "应付账款"],
         "letters": ["A", "B", "C"], "answer": "AB", "multi": True, "answer_index": 0,
         "subsets": ["AB", "AC", "BC", "ABC"], "task_name": "CPA", "second_level": ""}


def loglikelihoods(*scores: float) -> list[tuple[float, bool]]:
    best = max(scores)
    return [(score, score == best) for score in scores]


@pytest.mark.parametrize(("kind", "scoring", "templates"), [
    ("calc", "auto", ["calc_generate"]), ("calc", "letters", ["calc_generate"]),
    ("scenario", "auto", ["open_generate"]), ("scenario", "cloze", ["open_generate"]),
    ("mcq", "cloze", ["mcq_cloze", "mcq_multi"]), ("mcq", "letters", ["mcq_letters", "mcq_multi"]),
    ("mcq", "generate", ["mcq_generate"]), ("mcq", "auto", ["mcq_cloze", "mcq_multi", "mcq_generate"]),
])
def test_templates_for_each_kind_and_scoring(kind, scoring, templates):
    assert harness.templates_for(kind, scoring) == templates


def test_generation_kwargs_stop_scenarios_at_the_chat_end_and_the_rest_at_a_blank_run():
    assert harness._generation_kwargs("open_generate", 512) == (
        'generation_kwargs: {until: ["<|im_end|>"], max_gen_toks: 512, do_sample: false}\n')
    assert harness._generation_kwargs("mcq_generate", 64) == (
        'generation_kwargs: {until: ["\\n\\n\\n"], max_gen_toks: 64, do_sample: false}\n')


def test_spread_is_round_robin_over_first_seen_values():
    items = [{"f": "a", "n": 1}, {"f": "a", "n": 2}, {"f": "a", "n": 3}, {"f": "b", "n": 4}, {"n": 5},
             {"f": 1, "n": 6}, {"f": "1", "n": 7}, {"f": "b", "n": 8}]
    assert [item["n"] for item in harness.spread(items, "f")] == [1, 4, 5, 6, 2, 8, 7, 3]  # 1 and "1": one value
    assert harness.spread([], "f") == []


# --- per-sample predictions ------------------------------------------------------------------------------

def test_cloze_prediction_is_per_character_and_letters_are_raw():
    sample = {"filtered_resps": loglikelihoods(-6.0, -2.5, -9.0)}
    # per character: A -6/13 = -0.4615, B -2.5/5 = -0.5, C -9/4 = -2.25 -> A; raw -> B
    assert harness._prediction(sample, "mcq_cloze", SINGLE) == ("A", True)
    assert harness._prediction(sample, "mcq_letters", SINGLE) == ("B", False)
    # per character: A -20/13 = -1.54, B -10/5 = -2.0, C -20/4 = -5.0 -> A (raw and a length bonus would give B)
    assert harness._prediction({"filtered_resps": loglikelihoods(-20.0, -10.0, -20.0)}, "mcq_cloze", SINGLE) == (
        "A", True)


def test_cloze_divides_by_at_least_one_character():
    doc = {**SINGLE, "options": ["x", "yyyy", ""], "answer": "B"}
    # per character: -1/1 = -1.0, -3/4 = -0.75, -0.9/max(1, 0) = -0.9 -> B
    assert harness._prediction({"filtered_resps": loglikelihoods(-1.0, -3.0, -0.9)}, "mcq_cloze", doc) == ("B", True)


def test_multi_answer_prediction_is_the_most_likely_subset_and_ties_go_to_the_first():
    sample = {"filtered_resps": loglikelihoods(-3.0, -4.0, -1.0, -1.5)}
    assert harness._prediction(sample, "mcq_multi", MULTI) == ("BC", False)
    tied = {"filtered_resps": [(-1.0, True), (-2.0, False), (-3.0, False), (-1.0, True)]}
    assert harness._prediction(tied, "mcq_multi", MULTI) == ("AB", True)
    assert harness._prediction({"filtered_resps": [(-2.0, False), (-2.0, False), (-5.0, False)]}, "mcq_letters",
                               SINGLE) == ("A", True)


@pytest.mark.parametrize(("template", "sample", "expected"), [
    ("mcq_generate", {"filtered_resps": ["Answer: A"], "acc": 1.0, "parsed": 1.0}, ("Answer: A", True)),
    ("mcq_generate", {"filtered_resps": ["Answer: B"], "acc": 0.0, "parsed": 1.0}, ("Answer: B", False)),
    ("mcq_generate", {"filtered_resps": [], "acc": 0.0, "parsed": 0.0}, ("", False)),
    ("calc_generate", {"filtered_resps": ["42"], "acc": 1.0, "parsed": 1.0}, ("42", True)),
    # open generation is scored by "responded", not "acc"
    ("open_generate", {"filtered_resps": ["A reply"], "responded": 1.0, "acc": 0.0}, ("A reply", True)),
    ("open_generate", {"filtered_resps": [" "], "responded": 0.0, "acc": 1.0}, (" ", False)),
])
def test_generated_predictions_are_the_reply_and_the_template_metric(template, sample, expected):
    assert harness._prediction(sample, template, SINGLE) == expected


# --- per-question rows ---------------------------------------------------------------------------------------

def test_mcq_rows_hold_the_prediction_choices_and_what_was_read():
    benchmark = PreparedBenchmark("finance", "mcq")
    cloze = SubTask("t_cloze", "mcq_cloze", "group_c", 1, "finance")
    multi = SubTask("t_multi", "mcq_multi", "group_m", 1, "finance")
    generate = SubTask("t_gen", "mcq_generate", "group_g", 2, "finance")
    no_task_name = {key: value for key, value in MULTI.items() if key != "task_name"}
    samples = {
        "t_cloze": [{"doc": SINGLE, "filtered_resps": [(-6.0, False), (-2.5, True), (-9.0, False)]}],
        "t_multi": [{"doc": no_task_name, "filtered_resps": loglikelihoods(-0.1234564, -4.0, -5.0, -6.0)}],
        "t_gen": [{"doc": SINGLE, "filtered_resps": ["答案：C"], "acc": 0.0, "parsed": 1.0},
                  {"doc": MULTI, "filtered_resps": ["I am not sure"], "acc": 0.0, "parsed": 0.0}],
        "t_other": [{"doc": SINGLE, "filtered_resps": ["Answer: A"], "acc": 1.0}],
    }
    rows = harness.per_question(benchmark, samples, [cloze, multi, generate,
                                                     SubTask("t_missing", "mcq_cloze", "g", 0, "finance")])
    assert rows == [
        {"id": "q1", "task_name": "CFA", "template": "mcq_cloze", "answer": "A", "prediction": "A", "correct": True,
         "multi": False, "second_level": "fixed income", "choices": 3, "loglikelihoods": [-6.0, -2.5, -9.0]},
        {"id": "q2", "task_name": "group_m", "template": "mcq_multi", "answer": "AB", "prediction": "AB",
         "correct": True, "multi": True, "second_level": "", "choices": 4,
         "loglikelihoods": [-0.123456, -4.0, -5.0, -6.0]},
        {"id": "q1", "task_name": "CFA", "template": "mcq_generate", "answer": "A", "prediction": "答案：C",
         "correct": False, "multi": False, "second_level": "fixed income", "choices": 3, "extracted": "C",
         "parsed": True},
        {"id": "q2", "task_name": "CPA", "template": "mcq_generate", "answer": "AB", "prediction": "I am not sure",
         "correct": False, "multi": True, "second_level": "", "choices": 4, "extracted": None, "parsed": False},
    ]


def test_letters_are_read_only_among_the_documents_letters():
    benchmark = PreparedBenchmark("finance", "mcq")
    doc = {**SINGLE, "letters": ["A", "B"], "options": ["x", "y"]}
    rows = harness.per_question(benchmark, {"g": [{"doc": doc, "filtered_resps": ["Answer: C"], "acc": 0.0}]},
                                [SubTask("g", "mcq_generate", "grp", 1, "finance")])
    assert rows[0]["extracted"] is None and rows[0]["parsed"] is False  # no "parsed" in the sample: not parsed


def test_calc_and_scenario_rows():
    calc = {"id": "c1", "question": "How much?", "answer": 12.68, "unit": "10k_yuan", "tolerance": 0.005,
            "task_name": "calc"}
    rows = harness.per_question(PreparedBenchmark("calc", "calc"),
                                {"c": [{"doc": calc, "filtered_resps": ["答案：126,800元"], "acc": 1.0, "parsed": 1.0}]},
                                [SubTask("c", "calc_generate", "calc", 1, "calc")])
    assert rows == [{"id": "c1", "task_name": "calc", "template": "calc_generate", "answer": 12.68,
                     "prediction": "答案：126,800元", "correct": True, "extracted": 12.68, "parsed": True}]
    scenario = {"id": "s1", "prompt": "Draft a reply to the client.", "family": "email"}
    rows = harness.per_question(PreparedBenchmark("scenarios", "scenario"),
                                {"s": [{"doc": scenario, "filtered_resps": ["Dear client"], "responded": 1.0}]},
                                [SubTask("s", "open_generate", "scenarios", 1, "scenarios")])
    assert rows == [{"id": "s1", "task_name": "scenarios", "template": "open_generate", "answer": None,
                     "prediction": "Dear client", "correct": True, "prompt": "Draft a reply to the client."}]


# --- summaries -------------------------------------------------------------------------------------------------

def row(task, correct, multi=False, choices=4, **extra):
    return {"task_name": task, "correct": correct, "multi": multi, "choices": choices, **extra}


def test_mcq_summary_by_hand():
    rows = [row("CPA", True), row("CPA", False, multi=True, choices=11), row("CFA", True, choices=5),
            row("CFA", True), row("CFA", False, multi=True, choices=26), row("FRM", False, choices=3)]
    assert harness.summarize(rows, "mcq") == {
        "accuracy": 0.5, "items": 6, "by_task": {"CFA": 0.6667, "CPA": 0.5, "FRM": 0.0},
        "single_accuracy": 0.75, "multi_accuracy": 0.0,
        "chance": round((1 / 4 + 1 / 11 + 1 / 5 + 1 / 4 + 1 / 26 + 1 / 3) / 6, 4)}  # 0.1939
    assert list(harness.summarize(rows, "mcq")["by_task"]) == ["CFA", "CPA", "FRM"]


def test_summary_parse_rate_only_for_generated_rows_and_empty_rows():
    rows = [row("calc", True, parsed=True), row("calc", False, parsed=False), row("calc", False, parsed=True)]
    assert harness.summarize(rows, "calc") == {"accuracy": 0.3333, "items": 3, "by_task": {"calc": 0.3333},
                                               "parse_rate": 0.6667}
    assert harness.summarize([row("x", True)], "mcq") == {"accuracy": 1.0, "items": 1, "by_task": {"x": 1.0},
                                                          "single_accuracy": 1.0, "multi_accuracy": None,
                                                          "chance": 0.25}
    assert harness.summarize([], "mcq") == {"accuracy": None, "items": 0, "by_task": {}, "single_accuracy": None,
                                            "multi_accuracy": None, "chance": None}
    assert harness.summarize([], "calc") == {"accuracy": None, "items": 0, "by_task": {}}
    responded = [{"task_name": "email", "correct": True}, {"task_name": "email", "correct": False}]
    assert harness.summarize(responded, "scenario") == {"accuracy": 0.5, "items": 2, "by_task": {"email": 0.5}}


# --- prepare: data files, task YAMLs, rejects -----------------------------------------------------------------

FLAME = [
    {"task_name": "CPA", "second_level": "审计", "question": "下列说法正确的是（ ）。\nA.甲\nB.乙\nC.丙", "answer": "A"},
    {"task_name": "CPA", "question": "下列属于资产的有（ ）。\nA.应收账款\nB.存货\nC.应付账款", "answer": "AB"},
    {"question": "No task name here?\nA.yes\nB.no", "answer": "B"},
    {"task_name": "CPA", "question": "Q?\nA.x\nB.y", "answer": "E"},
]


def write_jsonl(path, records, extra_lines=""):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records) + extra_lines,
                    encoding="utf-8")
    return path


def test_prepare_writes_canonical_data_and_one_task_per_template(tmp_path):
    source = write_jsonl(tmp_path / "in" / "cpa.jsonl", FLAME, "{not json\n")
    work = tmp_path / "work"
    prepared = harness.prepare("cert", "mcq", "flame", [source], "auto", work, None)
    assert [item["task_name"] for item in prepared.items] == ["CPA", "CPA", "cert"]  # one file: the benchmark name
    assert [item["answer"] for item in prepared.items] == ["A", "AB", "B"]
    assert prepared.rejects == [{"file": str(source), "line": 5, "reason": "bad JSON: Expecting property name enclosed in double quotes"},
                                {"file": str(source), "record": 4, "reason": "answer 'E' is not among the options AB"}]
    data = work / "data" / "cert" / "cpa.jsonl"
    assert [json.loads(line) for line in data.read_text(encoding="utf-8").splitlines()] == prepared.items
    assert [(t.name, t.template, t.group, t.items, t.benchmark) for t in prepared.subtasks] == [
        ("finloom__cert__cpa__mcq_cloze", "mcq_cloze", "cert", 2, "cert"),
        ("finloom__cert__cpa__mcq_multi", "mcq_multi", "cert", 1, "cert"),
        ("finloom__cert__cpa__mcq_generate", "mcq_generate", "cert", 3, "cert")]
    tasks = work / "tasks"
    assert (tasks / "finloom__cert__cpa__mcq_cloze.yaml").read_text(encoding="utf-8") == (
        f"include: {harness.TEMPLATES / 'mcq_cloze.yaml'}\ntask: finloom__cert__cpa__mcq_cloze\n"
        f"dataset_kwargs:\n  data_files:\n    test: {json.dumps(str(data))}\n")
    assert (tasks / "finloom__cert__cpa__mcq_generate.yaml").read_text(encoding="utf-8") == (
        f"include: {harness.TEMPLATES / 'mcq_generate.yaml'}\ntask: finloom__cert__cpa__mcq_generate\n"
        f"dataset_kwargs:\n  data_files:\n    test: {json.dumps(str(data))}\n"
        'generation_kwargs: {until: ["\\n\\n\\n"], max_gen_toks: 128, do_sample: false}\n')
    assert sorted(p.name for p in tasks.iterdir()) == sorted(f"{t.name}.yaml" for t in prepared.subtasks)
    assert all((harness.TEMPLATES / f"{t.template}.yaml").is_file() for t in prepared.subtasks)


def test_prepare_with_fewshot_and_a_template_with_no_item(tmp_path):
    source = write_jsonl(tmp_path / "single.jsonl", FLAME[:1])
    prepared = harness.prepare("one", "mcq", "flame", [source], "letters", tmp_path, None, num_fewshot=3)
    assert [t.template for t in prepared.subtasks] == ["mcq_letters"]  # no multi-answer item: no mcq_multi task
    auto = harness.prepare("auto", "mcq", "flame", [source], "auto", tmp_path, None)
    assert [t.template for t in auto.subtasks] == ["mcq_cloze", "mcq_generate"]  # the tasks after it still come
    assert (tmp_path / "tasks" / "finloom__one__single__mcq_letters.yaml").read_text(encoding="utf-8").endswith(
        "\nnum_fewshot: 3\nfewshot_split: test\n")
    calc = write_jsonl(tmp_path / "calc.jsonl", [{"question": "1+1?", "answer": 2, "unit": ""}])
    prepared = harness.prepare("calc", "calc", "calc", [calc], "auto", tmp_path, None, max_gen_tokens=32)
    assert [(t.template, t.items) for t in prepared.subtasks] == [("calc_generate", 1)]
    assert (tmp_path / "tasks" / "finloom__calc__calc__calc_generate.yaml").read_text(encoding="utf-8").endswith(
        "test: " + json.dumps(str(tmp_path / "data" / "calc" / "calc.jsonl")) + "\n"
        'generation_kwargs: {until: ["\\n\\n\\n"], max_gen_toks: 32, do_sample: false}\n')


def test_a_folder_is_one_subtask_per_file_and_max_items_cuts_across_files(tmp_path):
    folder = tmp_path / "financeiq"
    write_jsonl(folder / "b_bank.jsonl", [FLAME[0], FLAME[2]])
    write_jsonl(folder / "a_audit.jsonl", [FLAME[2], FLAME[1], FLAME[0]])
    write_jsonl(folder / "c_empty.jsonl", [FLAME[3]])
    (folder / "notes.txt").write_text("not a benchmark file", encoding="utf-8")
    prepared = harness.prepare("fiq", "mcq", "flame", [folder], "generate", tmp_path / "w", None)
    assert [item["task_name"] for item in prepared.items] == ["a_audit", "CPA", "CPA", "CPA", "b_bank"]
    assert [(t.group, t.items) for t in prepared.subtasks] == [("a_audit", 3), ("b_bank", 2)]
    assert prepared.rejects == [{"file": str(folder / "c_empty.jsonl"), "record": 1,
                                 "reason": "answer 'E' is not among the options AB"}]
    assert not (tmp_path / "w" / "data" / "fiq" / "c_empty.jsonl").exists()
    two = harness.prepare("two", "mcq", "flame", [folder / "b_bank.jsonl", folder / "a_audit.jsonl"], "generate",
                          tmp_path / "two", None)  # two files named one by one: a sub-task each, in the given order
    assert [(t.name, t.group) for t in two.subtasks] == [("finloom__two__b_bank__mcq_generate", "b_bank"),
                                                         ("finloom__two__a_audit__mcq_generate", "a_audit")]
    cut = harness.prepare("fiq", "mcq", "flame", [folder], "generate", tmp_path / "cut", 4)
    assert [(t.group, t.items) for t in cut.subtasks] == [("a_audit", 3), ("b_bank", 1)]
    assert len(cut.items) == 4
    cut = harness.prepare("fiq", "mcq", "flame", [folder], "generate", tmp_path / "cut3", 3)
    assert [(t.group, t.items) for t in cut.subtasks] == [("a_audit", 3)]
    assert cut.rejects == prepared.rejects  # the files after the cut are still read, for their rejects
    assert not (tmp_path / "cut3" / "data" / "fiq" / "b_bank.jsonl").exists()


def test_csv_with_a_byte_order_mark_and_a_saved_dataset(tmp_path):
    # FinanceIQ / CMMLU CSVs, as saved by Excel: a BOM before the first header
    (tmp_path / "cmmlu.csv").write_text("\ufeffQuestion,A,B,C,D,Answer\n股票的风险？,高,低,无,不确定,A\n",
                                        encoding="utf-8")
    prepared = harness.prepare("cmmlu", "mcq", "columns", [tmp_path / "cmmlu.csv"], "generate", tmp_path, None)
    assert prepared.rejects == [] and prepared.items[0]["question"] == "股票的风险？"
    from datasets import Dataset

    Dataset.from_list([{"question": "2+2?", "choices": ["3", "4"], "answer": 1, "subject": "math"}]).save_to_disk(
        str(tmp_path / "hub" / "mmlu"))
    write_jsonl(tmp_path / "hub" / "mmlu" / "extra.jsonl", [])  # inside the saved dataset: not a file of its own
    prepared = harness.prepare("mmlu", "mcq", "mmlu", [tmp_path / "hub"], "letters", tmp_path / "w", None)
    assert [(item["answer"], item["task_name"]) for item in prepared.items] == [("B", "math")]
    assert [t.group for t in prepared.subtasks] == ["mmlu"]


def test_scenarios_are_augmented_and_a_failed_augmentation_keeps_the_prompt(tmp_path):
    source = write_jsonl(tmp_path / "s.jsonl", [{"id": "s1", "prompt": "Explain bonds.", "family": "explain"},
                                                {"id": "s2", "prompt": "skip", "family": "email"}])

    def augment(prompt):
        return None if prompt == "skip" else {"prompt": prompt + " Be brief.", "complement": "Be brief."}

    prepared = harness.prepare("sc", "scenario", "scenario", [source], "auto", tmp_path, None, augment=augment)
    assert prepared.items == [
        {"id": "s1", "prompt": "Explain bonds. Be brief.", "family": "explain", "original_prompt": "Explain bonds.",
         "pas_complement": "Be brief.", "task_name": "sc"},
        {"id": "s2", "prompt": "skip", "family": "email", "pas_complement": None, "task_name": "sc"}]
    mcq = harness.prepare("m", "mcq", "flame", [write_jsonl(tmp_path / "m.jsonl", FLAME[:1])], "generate", tmp_path,
                          None, augment=augment)
    assert "pas_complement" not in mcq.items[0]  # only scenarios are augmented


def test_only_scenarios_are_spread_before_a_cut(tmp_path):
    records = [{"id": f"s{i}", "prompt": "p", "family": family} for i, family in enumerate("aaab")]
    source = write_jsonl(tmp_path / "s.jsonl", records)
    scenario = harness.prepare("sc", "scenario", "scenario", [source], "auto", tmp_path, 2)
    assert [item["id"] for item in scenario.items] == ["s0", "s3"]
    calc = [{"id": f"c{i}", "question": "q", "answer": i, "family": family} for i, family in enumerate("aaab")]
    prepared = harness.prepare("calc", "calc", "calc", [write_jsonl(tmp_path / "c.jsonl", calc)], "auto", tmp_path, 2)
    assert [item["id"] for item in prepared.items] == ["c0", "c1"]


# aliyun/cflue data/knowledge/knowledge.json: one JSON array on one line, ``choices`` a dict literal string
CFLUE = [{"名称": "注册会计师", "task": "单项选择题", "question": "在选项中鉴别哪一种进口货物是不必支付进口关税的？",
          "choices": "{'A': '关税金额等同于80人民币的机票', 'B': '商业价值一定的货样', 'C': '因储存疏忽导致损坏的商品', "
                     "'D': '外国政府免费赠送的物资'}", "answer": "D", "analysis": None},
         {"名称": "证券从业资格", "task": "多项选择题", "question": "我国金融市场体系包括（）。",
          "choices": "{'A': '货币市场', 'B': '债券市场', 'C': '商品市场', 'D': '金融衍生品市场'}", "answer": "ABD",
          "analysis": "我国已经逐步形成了一个由货币市场、债券市场、股票市场、外汇市场、黄金市场、商品期货市场和金融衍生品市场等构成的金融市场体系。"}]


def test_a_json_array_file_is_read_as_records(tmp_path):
    source = tmp_path / "knowledge.json"
    source.write_text(json.dumps(CFLUE + ["not a record"], ensure_ascii=False, separators=(",", ":")),
                      encoding="utf-8")
    prepared = harness.prepare("cflue", "mcq", "cflue", [source], "generate", tmp_path / "w", None)
    assert [(item["task_name"], item["second_level"], item["answer"], item["multi"]) for item in prepared.items] == [
        ("注册会计师", "单项选择题", "D", False), ("证券从业资格", "多项选择题", "ABD", True)]
    assert prepared.rejects == [{"file": str(source), "line": 3, "reason": "record is not an object"}]
    indented = tmp_path / "indented.json"  # pretty-printed, with a byte order mark
    indented.write_text("\ufeff" + json.dumps(CFLUE, ensure_ascii=False, indent=2), encoding="utf-8")
    assert harness._records(indented, []) == CFLUE
    bare = tmp_path / "flame_cer"  # a file named without a suffix is read as JSON lines
    write_jsonl(bare, CFLUE)
    assert harness._records(bare, []) == CFLUE
    lines = tmp_path / "lines.json"  # JSON lines under a .json name are still read line by line
    write_jsonl(lines, CFLUE)
    assert harness._records(lines, []) == CFLUE
    broken = tmp_path / "broken.json"
    broken.write_text('[{"question": "q"},\n{"question": ', encoding="utf-8")
    rejects = []
    assert harness._records(broken, rejects) == []
    assert rejects == [{"file": str(broken), "line": 1,
                        "reason": "not a JSON array: Expecting value: line 2 column 14 (char 33)"}]
