"""finloom's log-likelihood MCQ scoring against `lm_eval --model hf`, on the same model and tasks, with a tokenizer
that adds BOS (Llama, Mistral) and one that does not.

Both sides run the very same lm-eval tasks (finloom's templates over the bundled FLAME-Cer-layout finance
MCQ set: cloze scoring for single-answer, letter sets for multi-answer); one with ``FinloomLM`` (the
in-memory model finloom's eval stage uses), one with lm-eval's ``HFLM`` loading the saved model directory,
as `lm_eval --model hf --model_args pretrained=DIR` does. Printed per tokenizer: the largest per-choice
log-likelihood difference, whether every prediction and the accuracies are identical, and samples/s of
each, in one run.

    python benchmarks/eval_mcq.py [--model DIR] [--items 300] [--batch 8] [--repeats 3]

Without --model a quickstart-size Llama is built from scratch (random weights; the comparison
does not need a trained model); its BOS variant adds <|endoftext|> in front of every encoding.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path


def build_model(work: Path) -> Path:
    from finloom.files import iter_texts
    from finloom.llm.loading import save_model
    from finloom.llm.scratch import build_model as build, train_tokenizer
    from finloom.recipe import STARTER_DATA_DIR, ScratchModel

    texts = list(iter_texts(STARTER_DATA_DIR / "finance_corpus.jsonl"))
    tokenizer = train_tokenizer(texts, 4096)
    return save_model(build(ScratchModel(), tokenizer), tokenizer, work / "model")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path)
    parser.add_argument("--items", type=int, default=300)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3, help="Runs of each side, alternating; the best time counts.")
    options = parser.parse_args()

    import torch
    from lm_eval.models.huggingface import HFLM

    from finloom.eval import harness
    from finloom.eval.lm import FinloomLM
    from finloom.llm.loading import load_causal_lm, load_tokenizer
    from finloom.logs import quiet_libraries
    from finloom.recipe import STARTER_DATA_DIR

    quiet_libraries()
    torch.manual_seed(0)
    report = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model_dir = options.model or build_model(work)
        prepared = harness.prepare("finance_mcq", "mcq", "flame", [STARTER_DATA_DIR / "eval_finance_mcq.jsonl"],
                                   "cloze", work, options.items)
        for tokenizer_kind in ("no_bos", "bos"):
            directory = model_dir if tokenizer_kind == "no_bos" else with_bos(model_dir, work / "bos")
            model, tokenizer = load_causal_lm(directory), load_tokenizer(directory)
            max_length = min(2048, model.config.max_position_embeddings)
            sides = {"finloom": FinloomLM(model, tokenizer, options.batch, max_length),
                     "lm_eval_hf": HFLM(pretrained=str(directory), batch_size=options.batch, max_length=max_length,
                                        device="cpu")}
            runs = {}
            for repeat in range(options.repeats):  # alternate the order: neither side always runs first
                for name in (list(sides) if repeat % 2 == 0 else list(reversed(sides))):
                    began = time.perf_counter()
                    samples = harness.evaluate(sides[name], prepared.subtasks, work)
                    seconds = time.perf_counter() - began
                    rows = harness.per_question(prepared, samples, prepared.subtasks)
                    best = min(seconds, runs[name]["seconds"]) if name in runs else seconds
                    runs[name] = {"seconds": best, "rows": {r["id"] + r["template"]: r for r in rows},
                                  "summary": harness.summarize(rows, "mcq")}
            report[tokenizer_kind] = compare(runs["finloom"], runs["lm_eval_hf"])
    print(json.dumps(report, indent=2))
    return 0


def with_bos(model_dir: Path, out: Path) -> Path:
    """A copy of the model directory whose tokenizer adds BOS to every encoding, as Llama's and Mistral's do."""
    import shutil

    from tokenizers.processors import TemplateProcessing

    from finloom.llm.loading import load_tokenizer

    shutil.copytree(model_dir, out)
    tokenizer = load_tokenizer(out)
    bos = tokenizer.eos_token
    tokenizer._tokenizer.post_processor = TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A $B", special_tokens=[(bos, tokenizer.convert_tokens_to_ids(bos))])
    tokenizer.bos_token = bos
    tokenizer.save_pretrained(out)
    return out


def compare(ours: dict, theirs: dict) -> dict:
    differences = [abs(a - b) for key, row in ours["rows"].items()
                   for a, b in zip(row["loglikelihoods"], theirs["rows"][key]["loglikelihoods"])]
    items = len(ours["rows"])
    return {
        "questions": items, "choices": len(differences),
        "max_abs_loglikelihood_difference": max(differences),
        "identical_predictions": all(row["prediction"] == theirs["rows"][key]["prediction"]
                                     for key, row in ours["rows"].items()),
        "accuracy": {"finloom": ours["summary"]["accuracy"], "lm_eval_hf": theirs["summary"]["accuracy"]},
        "samples_per_s": {"finloom": round(items / ours["seconds"], 2), "lm_eval_hf": round(items / theirs["seconds"], 2)},
        "ratio_finloom_over_hf_time": round(ours["seconds"] / theirs["seconds"], 3),
    }


if __name__ == "__main__":
    sys.exit(main())
