"""The model card: the final model's lineage of data, training settings and evaluation, from the manifests."""

from __future__ import annotations

from pathlib import Path

from finloom.eval.results import headline
from finloom.files import atomic_write_text
from finloom.report.page import cell
from finloom.report.sections import eval_columns
from finloom.stages import MODEL_STAGES, TRAINING_STAGES


def write_model_card(run_dir: Path, manifests: dict[str, dict], results: dict) -> Path:
    """A Markdown model card for the run's final model: lineage of data, training settings, evaluation."""
    model_stages = [s for s in reversed(MODEL_STAGES) if s in manifests]
    final = model_stages[0] if model_stages else None
    data = manifests.get("data", {})
    lines = [f"# Model card: {run_dir.name}" + (f" / {final}" if final else ""), ""]
    if final:
        lines += [f"Model directory: `{manifests[final]['outputs'].get('model')}` (Hugging Face format, safetensors), "
                  f"produced by the `{final}` stage. Start: "
                  f"`{manifests[final].get('config', {}).get('model', {})}`.", ""]
    if data:
        lines += ["## Training data", "", "| input | sha256 |", "|---|---|"]
        lines += [f"| {path} | {digest[:16]}… |" for path, digest in data.get("inputs", {}).get("files", {}).items()]
        funnel = data.get("metrics", {}).get("funnel", {})
        if funnel:
            lines += ["", f"Read {funnel.get('read')} documents, rejected {funnel.get('rejected')} malformed records, "
                          f"removed {sum(funnel.get('removed', {}).values())} "
                          f"({', '.join(f'{k} {v}' for k, v in funnel.get('removed', {}).items())}), kept "
                          f"{', '.join(f'{k} {v}' for k, v in funnel.get('kept', {}).items())}."]
        for name, mix in data.get("metrics", {}).get("mixes", {}).items():
            lines.append(f"Mix `{name}`: {mix['tokens']:,} tokens, shares "
                         f"{', '.join(f'{d} {v:.3f}' for d, v in mix['shares'].items())}.")
        lines.append("")
    lines += ["## Training", "", "| stage | steps | final loss | learning rate | batch | seq len | config sha256 |",
              "|---|---|---|---|---|---|---|"]
    for stage in TRAINING_STAGES:
        manifest = manifests.get(stage)
        if manifest:
            train = manifest.get("config", {}).get("section", {}).get("train", {})
            metrics = manifest.get("metrics", {})
            lines.append(f"| {stage} | {metrics.get('train_steps')} | {metrics.get('final_loss')} | "
                         f"{train.get('learning_rate')} | {train.get('batch_size')} | {train.get('seq_len')} | "
                         f"{manifest.get('config_hash', '')[:16]}… |")
    pas = manifests.get("pas", {}).get("metrics")
    if pas:
        evaluation = pas.get("eval") or {}
        lines += ["", "## PAS (prompt augmentation)", "",
                  f"PAS model: `{manifests['pas']['outputs'].get('model')}`, trained on {pas.get('pairs')} (prompt, "
                  f"complement) pairs ({', '.join(f'{k} {v}' for k, v in (pas.get('pairs_by_origin') or {}).items())}; "
                  "given: ready pairs from the recipe's complements files, generated: written by the teacher and kept "
                  "by the critique)."]
        if evaluation:
            lines.append(f"Scenarios with vs without PAS ({evaluation.get('items')}): rule-checked pass rate "
                         f"{evaluation['without'].get('rule_pass_rate')} -> {evaluation['with'].get('rule_pass_rate')}, "
                         f"judged usable rate {evaluation['without'].get('usable_rate')} -> "
                         f"{evaluation['with'].get('usable_rate')}, pairwise win rate {evaluation.get('win_rate')}.")
    if results:
        columns = eval_columns(results)
        lines += ["", "## Evaluation", "", "| model | " + " | ".join(columns) + " |",
                  "|---|" + "---|" * len(columns)]
        for model, per_model in results.items():
            values = headline(per_model)
            lines.append(f"| {model} | " + " | ".join(cell(values.get(c)) for c in columns) + " |")
    lines += ["", "Every number above is read from the run's manifests; see report.html for the full report."]
    path = run_dir / "model_card.md"
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path
