"""The forgetting study: the quickstart's forgetting experiment with more self-constraint variants.

Builds the study recipe from recipes/quickstart.yaml, changing only ``forgetting.variants`` (the
four defaults plus lambda 0.3 / 3 / 10, forward KL, KL + general CE) and, with ``--base-steps``,
the general base's training length (then sft, reward, align and eval are switched off: the study
needs the base, pretrain and forgetting stages only; ``--perplexity-only`` does that alone);
``--finance-share`` changes the pretrain mix. Runs it with finloom's runner into
``--run-dir``; give a copy of a finished quickstart run to re-run only forgetting and report.
Prints the table of ``RUN/forgetting/results.json``.

    python benchmarks/pretrain_forgetting.py --run-dir COPY_OF_QUICKSTART_RUN
    python benchmarks/pretrain_forgetting.py --run-dir NEW_DIR --base-steps 1200
    python benchmarks/pretrain_forgetting.py --run-dir COPY --finance-share 0.2 --variants finance_only_ce ...
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml

QUICKSTART = Path(__file__).parents[1] / "recipes" / "quickstart.yaml"
VARIANTS = [
    {"name": "finance_only_ce", "objective": {"type": "ce"}, "mix": "finance_only"},
    {"name": "replay_ce", "objective": {"type": "ce"}},
    {"name": "self_constraint_full", "objective": {}},
    {"name": "self_constraint_top500", "objective": {"kl_top_k": 500}},
    {"name": "self_constraint_lambda_0.3", "objective": {"kl_lambda": 0.3}},
    {"name": "self_constraint_lambda_3", "objective": {"kl_lambda": 3.0}},
    {"name": "self_constraint_lambda_10", "objective": {"kl_lambda": 10.0}},
    {"name": "self_constraint_forward", "objective": {"kl_direction": "forward"}},
    {"name": "self_constraint_plus_general_ce", "objective": {"general_ce_weight": 1.0}},
]


def study_recipe(base_steps: int | None, finance_share: float | None = None, names: list[str] | None = None,
                 perplexity_only: bool = False) -> dict:
    recipe = yaml.safe_load(QUICKSTART.read_text(encoding="utf-8"))
    variants = [v for v in VARIANTS if not names or v["name"] in names]
    recipe["forgetting"] = {"enabled": True, "variants": variants}
    if finance_share is not None:
        recipe["data"]["mix"]["mixes"]["pretrain"] = {"shares": {"general": 1 - finance_share, "finance": finance_share}}
    if base_steps:
        recipe["base"]["train"].update({"max_steps": base_steps, "save_steps": max(base_steps // 3, 1)})
    if base_steps or perplexity_only:
        for stage in ("sft", "reward", "align", "eval"):
            recipe[stage] = {"enabled": False}
        recipe["teacher"] = None  # the quickstart's scenario judge is its align model
    return recipe


def table(results: dict) -> str:
    rows = results["rows"]
    start = rows[0]
    finance_only = next(r for r in rows if r["variant"] == "finance_only_ce")
    gain = start["finance_ppl"] - finance_only["finance_ppl"]
    lines = ["| variant | finance PPL | general PPL | general change | finance-gain share | finance MCQ | general MCQ "
             "| step (s) |", "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        change = row.get("general_ppl_change")
        share = None if row is start else (start["finance_ppl"] - row["finance_ppl"]) / gain
        cells = [row["variant"], f"{row['finance_ppl']:.1f}", f"{row['general_ppl']:.2f}",
                 "" if change is None else f"{change:+.1%}", "" if share is None else f"{share:.1%}",
                 *("" if row.get(k) is None else f"{row[k]:.3f}" for k in ("finance_mcq", "general_mcq")),
                 "" if row.get("step_time_s") is None else f"{row['step_time_s']:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", type=Path, required=True)
    parser.add_argument("--base-steps", type=int, help="Train the general base this long (quickstart: 300).")
    parser.add_argument("--finance-share", type=float, help="Finance share of the pretrain mix (quickstart: 0.5).")
    parser.add_argument("--perplexity-only", action="store_true",
                        help="Switch off sft, reward, align and eval (no MCQ columns); implied by --base-steps.")
    parser.add_argument("--variants", nargs="+", choices=[v["name"] for v in VARIANTS], help="Default: all.")
    args = parser.parse_args()

    from finloom.recipe import load_recipe
    from finloom.runner import Runner

    args.run_dir.mkdir(parents=True, exist_ok=True)
    path = args.run_dir.parent / f"{args.run_dir.name}.study.yaml"
    path.write_text(yaml.safe_dump(study_recipe(args.base_steps, args.finance_share, args.variants, args.perplexity_only), sort_keys=False), encoding="utf-8")
    Runner(load_recipe(path), args.run_dir).run()
    results = json.loads((args.run_dir / "forgetting" / "results.json").read_text(encoding="utf-8"))
    print(table(results))
    print(json.dumps(results["verdict"], indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
