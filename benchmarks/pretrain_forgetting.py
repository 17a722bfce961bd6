"""The forgetting study (recipes/studies/forgetting.yaml), run and printed as a table; optionally on another base.

Runs the study recipe with finloom's runner into ``--run-dir`` (a copy of a finished study run re-runs only
what changed), with optional changes: ``--base-steps`` (the general base's training length),
``--finance-share`` (the pretrain mix), ``--seeds``, ``--variants`` (a subset by name). Prints each
variant's means with 95% intervals and the verdict.

    python benchmarks/pretrain_forgetting.py --run-dir runs/forgetting
    python benchmarks/pretrain_forgetting.py --run-dir NEW_DIR --base-steps 1200
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml

STUDY = Path(__file__).parents[1] / "recipes" / "studies" / "forgetting.yaml"


def study_recipe(base_steps: int | None, finance_share: float | None = None, names: list[str] | None = None,
                 seeds: int | None = None) -> dict:
    from finloom.recipe.loader import read_recipe_mapping

    recipe = read_recipe_mapping(STUDY)
    forgetting = recipe["forgetting"]
    if names:
        forgetting["variants"] = [v for v in forgetting["variants"] if v["name"] in names]
    if seeds:
        forgetting["seeds"] = seeds
    if finance_share is not None:
        recipe["data"]["mix"]["mixes"]["pretrain"] = {"shares": {"general": 1 - finance_share, "finance": finance_share}}
    if base_steps:
        recipe["base"]["train"].update({"max_steps": base_steps, "save_steps": max(base_steps // 3, 1)})
    return recipe


def table(results: dict) -> str:
    def cell(row, key, percent=False):
        value, interval = row.get(key), row.get(f"{key}_ci95")
        if value is None:
            return ""
        if percent:
            return f"{value:+.1%}" + (f" ± {interval:.1%}" if interval is not None else "")
        return f"{value:.2f}" + (f" ± {interval:.2f}" if interval is not None else "")

    lines = ["| variant | lambda / finance token | finance PPL | general PPL | general change | finance gain (PPL) "
             "| finance gain (nats) | finance MCQ | general MCQ |", "|---|---|---|---|---|---|---|---|---|"]
    for row in results["rows"]:
        lines.append("| " + " | ".join([row["variant"], str(row.get("lambda_per_finance_token", "")),
                                        cell(row, "finance_ppl"), cell(row, "general_ppl"),
                                        cell(row, "general_ppl_change", True), cell(row, "finance_gain_share", True),
                                        cell(row, "finance_gain_share_nats", True), cell(row, "finance_mcq"),
                                        cell(row, "general_mcq")]) + " |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", type=Path, required=True)
    parser.add_argument("--base-steps", type=int, help="Train the general base this long (quickstart: 300).")
    parser.add_argument("--finance-share", type=float, help="Finance share of the pretrain mix (quickstart: 0.5).")
    parser.add_argument("--seeds", type=int, help="Data orders per variant (the study recipe: 2).")
    parser.add_argument("--variants", nargs="+", help="Run only these variants (names from the study recipe).")
    args = parser.parse_args()

    from finloom.recipe import load_recipe
    from finloom.runner import Runner

    args.run_dir.mkdir(parents=True, exist_ok=True)
    path = STUDY.parent / f".{args.run_dir.name}.study.yaml"  # beside the study recipe: same relative paths
    path.write_text(yaml.safe_dump(study_recipe(args.base_steps, args.finance_share, args.variants, args.seeds),
                                   sort_keys=False), encoding="utf-8")
    try:
        Runner(load_recipe(path), args.run_dir).run()
    finally:
        path.unlink(missing_ok=True)
    results = json.loads((args.run_dir / "forgetting" / "results.json").read_text(encoding="utf-8"))
    print(table(results))
    print(json.dumps(results["verdict"], indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
