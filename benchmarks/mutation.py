"""Mutation testing of the core modules with cosmic-ray: how many deliberate breakages the tests catch.

Outside CI (minutes per module): cosmic-ray rewrites one operator at a time in a module (``+`` to ``-``, ``<`` to
``<=``, ``True`` to ``False``, a number off by one, ...) and runs the module's tests; a mutant the tests still
pass is a survivor. cosmic-ray edits the files it mutates, so every module runs in a throwaway copy of the tree
(``src/``, ``tests/``, ``pyproject.toml``) with that copy first on ``PYTHONPATH``.

    pip install -e ".[mutation]"
    python benchmarks/mutation.py [MODULE ...]        # default: every module in TARGETS; prints survivors too
    python benchmarks/mutation.py src/finloom/data/pii.py --sample 300    # a seeded random 300 of its mutants

The selected tests first run once on the unmutated copy: they must pass (else every mutant would count as
killed), and a tiny pipeline run they read is built then and kept for every mutant (``FINLOOM_TEST_KEPT_RUN``).

Mutants inside parameter and return annotations of a module with ``from __future__ import annotations`` are
dropped before the run and counted (those annotations are never evaluated, so no test can kill them);
``--keep-annotations`` runs them too.

``--sample`` keeps a seeded random subset of a module's mutants (the rest are deleted from cosmic-ray's session
before it runs): a large module's killed share estimated in a fraction of the time, reported as a sample.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import random
import shlex
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PRETRAIN_UNITS = ("tests/test_pretrain_units.py tests/test_pretrain_objective.py::test_loss_equals_hand_computed_value "
                  "tests/test_pretrain_objective.py::test_ce_only_settings_reduce_to_plain_cross_entropy "
                  "tests/test_pretrain_objective.py::test_an_online_reference_gets_its_inputs_on_its_own_device")
# the GRPO/PPO trainer tests on a from-scratch model (not the tiny pipeline's reward model or the category sampler's)
ALIGN_TRAINERS = "tests/test_align_grpo.py -k 'not combination and not rubric and not sampler and not reweighting'"
# module -> the tests that hold it (the fast ones: each mutant runs them once)
TARGETS = {
    "src/finloom/align/rewards.py": "tests/test_align_rewards.py",
    "src/finloom/align/categories.py": ("tests/test_align_grpo.py tests/test_align_stage.py "
                                        "-k 'sampler or reweighting or categor or grpo_stage or greedy'"),
    "src/finloom/grading/rewards.py": "tests/test_grading_rewards.py",
    "src/finloom/checks.py": "tests/test_checks.py",
    "src/finloom/data/pii.py": "tests/test_data_pii.py",
    "src/finloom/data/funnel.py": "tests/test_data_funnel.py",
    "src/finloom/eval/scenarios.py": "tests/test_scenario_scoring.py",
    "src/finloom/grading/rubric.py": "tests/test_scenario_scoring.py tests/test_grading_rewards.py",
    "src/finloom/pas/critique.py": "tests/test_pas.py -k 'rule or critique or read_from or rejection'",
    "src/finloom/pretrain/self_constraint.py": PRETRAIN_UNITS,
    "src/finloom/pretrain/reference.py": PRETRAIN_UNITS,
    "src/finloom/pretrain/stage.py": ("tests/test_pretrain_stage.py tests/test_wiring.py -k 'pretrain or precomputed "
                                      "or plain_ce' tests/test_pretrain_objective.py::"
                                      "test_precompute_ref_command_then_pretrain_reads_the_store"),
    "src/finloom/align/stage.py": "tests/test_align_stage.py tests/test_wiring.py -k 'align_stage or dpo or kto or grpo or ppo or vllm'",
    "src/finloom/llm/kl.py": "tests/test_pretrain_objective.py -k 'by_hand or vocabulary or warms or precomputed_top_k'",
    "src/finloom/grading/answers.py": "tests/test_eval_parts.py tests/test_grading_rewards.py",
    "src/finloom/eval/tasks/utils.py": "tests/test_eval_units.py",
    "src/finloom/eval/mcq.py": "tests/test_eval_parts.py",
    "src/finloom/eval/layouts.py": "tests/test_eval_layouts.py tests/test_eval_parts.py",
    "src/finloom/eval/harness.py": ("tests/test_eval_harness_units.py tests/test_eval_parts.py "
                                    "tests/test_eval_scoring.py"),
    "src/finloom/reward/trainer.py": "tests/test_reward.py",
    "src/finloom/reward/calibration.py": "tests/test_reward_calibration.py",
    "src/finloom/reward/judging.py": ("tests/test_prefs.py -k 'judge_modes or never_parse or mode_of or verified_scores "
                                      "or golden_mode or tie'"),
    # the stage on a scripted teacher that answers and judges (no tiny pipeline), near duplicates, the pair decision
    "src/finloom/reward/prefs.py": ("tests/test_prefs.py -k 'near_dup or tokenizer or decide or scripted_teacher "
                                    "or refuses or large_source or without_models'"),
    "src/finloom/align/grpo.py": ALIGN_TRAINERS,
    "src/finloom/align/ppo.py": ALIGN_TRAINERS,
}
CONFIG = """[cosmic-ray]
module-path = "{module}"
timeout = {timeout}
excluded-modules = []
test-command = "{python} -m pytest -n 0 -x -q -p no:cacheprovider {tests}"

[cosmic-ray.distributor]
name = "local"
"""


def signature_annotations(source: str) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """(start, end) (row, column) of every parameter and return annotation and every annotated assignment outside a
    class body, if the module has ``from __future__ import annotations``: those are kept as strings and never
    evaluated, so a mutant inside one (``str | None`` to ``str ** None``) can never be killed. Class-body annotations
    are left in: dataclasses and pydantic read them."""
    tree = ast.parse(source)
    if not any(isinstance(node, ast.ImportFrom) and node.module == "__future__"
               and any(alias.name == "annotations" for alias in node.names) for node in tree.body):
        return []
    in_classes = {id(item) for node in ast.walk(tree) if isinstance(node, ast.ClassDef) for item in node.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.returns is not None:
            found.append(node.returns)
        elif isinstance(node, ast.arg) and node.annotation is not None:
            found.append(node.annotation)
        elif isinstance(node, ast.AnnAssign) and id(node) not in in_classes:
            found.append(node.annotation)
    return [((node.lineno, node.col_offset), (node.end_lineno, node.end_col_offset)) for node in found]


def drop_annotation_mutants(session: Path, source: str) -> int:
    """Delete the mutants that lie inside unevaluated annotations; returns how many."""
    spans = signature_annotations(source)
    with sqlite3.connect(session) as db:
        specs = db.execute("SELECT start_pos_row, start_pos_col, job_id FROM mutation_specs").fetchall()
        dropped = [job for row, col, job in specs if any(start <= (row, col) < end for start, end in spans)]
        _delete_jobs(db, dropped)
    return len(dropped)


def _delete_jobs(db: sqlite3.Connection, jobs: list[str]) -> None:
    for table in ("mutation_specs", "work_items"):
        db.executemany(f"DELETE FROM {table} WHERE job_id = ?", [(job,) for job in jobs])


def keep_sample(session: Path, size: int, seed: int) -> int:
    """Delete all but a seeded random ``size`` of the session's mutants; returns how many there were."""
    with sqlite3.connect(session) as db:  # job ids are random: order mutants by what they change, for the seed
        specs = sorted(db.execute("SELECT operator_name, occurrence, start_pos_row, start_pos_col, job_id "
                                  "FROM mutation_specs"))
        jobs = [spec[-1] for spec in specs]
        kept = set(random.Random(seed).sample(jobs, min(size, len(jobs))))
        _delete_jobs(db, [job for job in jobs if job not in kept])
    return len(jobs)


def run_module(module: str, tests: str, timeout: float, sample: int | None = None, seed: int = 0,
               keep_annotations: bool = False) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "tree"
        for part in ("src", "tests"):
            shutil.copytree(ROOT / part, copy / part, ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copy(ROOT / "pyproject.toml", copy / "pyproject.toml")
        (copy / "mutation.toml").write_text(CONFIG.format(module=module, tests=tests.replace('"', '\\"'),
                                                          timeout=timeout, python=sys.executable), encoding="utf-8")
        # tests that read the tiny pipeline's run build it once, here, with the unmutated tree (tests/conftest.py)
        env = dict(os.environ, PYTHONPATH=str(copy / "src"), FINLOOM_TEST_KEPT_RUN=str(Path(tmp) / "kept"))
        baseline = subprocess.run([sys.executable, "-m", "pytest", "-n", "0", "-x", "-q", "-p", "no:cacheprovider",
                                   *shlex.split(tests)], cwd=copy, env=env, capture_output=True, text=True)
        if baseline.returncode != 0:  # every mutant would count as killed
            raise SystemExit(f"{module}: the selected tests fail before any mutation:\n{baseline.stdout[-3000:]}")
        subprocess.run(["cosmic-ray", "init", "mutation.toml", "session.sqlite"], cwd=copy, env=env, check=True,
                       capture_output=True)
        annotations = (0 if keep_annotations else
                       drop_annotation_mutants(copy / "session.sqlite", (ROOT / module).read_text(encoding="utf-8")))
        generated = keep_sample(copy / "session.sqlite", sample, seed) if sample else None
        subprocess.run(["cosmic-ray", "exec", "mutation.toml", "session.sqlite"], cwd=copy, env=env, check=True,
                       capture_output=True)
        dumped = subprocess.run(["cosmic-ray", "dump", "session.sqlite"], cwd=copy, env=env, check=True,
                                capture_output=True, text=True).stdout
    outcomes, survivors = Counter(), []
    for line in dumped.splitlines():
        work, result = json.loads(line)
        outcome = (result or {}).get("test_outcome") or "not run"
        outcomes[outcome] += 1
        if outcome == "survived":
            mutation = work["mutations"][0]
            changed = [line for line in (result.get("diff") or "").splitlines()
                       if line[:1] in "+-" and line[:3] not in ("+++", "---")]
            survivors.append(f"{mutation['module_path']}:{mutation['start_pos'][0]} {mutation['operator_name']} "
                             f"{' / '.join(line.strip() for line in changed)}")
    total = sum(outcomes.values())
    return {"module": module, "mutants": total, "killed": outcomes["killed"], "survived": outcomes["survived"],
            "incompetent": outcomes["incompetent"], "killed_share": round(outcomes["killed"] / max(1, total), 3),
            "sampled_from": generated, "annotation_mutants_dropped": annotations, "survivors": survivors}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("modules", nargs="*", default=list(TARGETS), help="paths as in TARGETS")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per mutant's test run")
    parser.add_argument("--tests", help="the pytest arguments to run instead of TARGETS' (one module)")
    parser.add_argument("--sample", type=int, help="run a seeded random sample of this many mutants per module")
    parser.add_argument("--seed", type=int, default=0, help="the sample's seed")
    parser.add_argument("--keep-annotations", action="store_true",
                        help="also run the mutants inside unevaluated annotations (dropped by default: none can die)")
    options = parser.parse_args()
    print("| module | mutants | killed | survived | incompetent | killed share | annotation mutants dropped |\n"
          "|---|---|---|---|---|---|---|")
    results = []
    for module in options.modules:
        result = run_module(module, options.tests or TARGETS[module], options.timeout, options.sample, options.seed,
                            options.keep_annotations)
        results.append(result)
        sampled = f" (of {result['sampled_from']})" if result["sampled_from"] else ""
        print(f"| {module}{sampled} | {result['mutants']} | {result['killed']} | {result['survived']} | "
              f"{result['incompetent']} | {result['killed_share']:.1%} | {result['annotation_mutants_dropped']} |",
              flush=True)
    for result in results:
        for survivor in result["survivors"]:
            print("survivor:", survivor)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
