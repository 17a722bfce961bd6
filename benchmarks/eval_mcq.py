"""finloom's log-likelihood MCQ scoring against lm-evaluation-harness's own HFLM, on the same model and tasks.

Both run the very same lm-eval tasks (finloom's templates over the bundled FLAME-Cer-layout finance
MCQ set: cloze scoring for single-answer, letter sets for multi-answer); one with ``FinloomLM``
(the in-memory model finloom's eval stage uses), one with lm-eval's ``HFLM`` wrapping the same
model object. Printed: the largest per-choice log-likelihood difference, whether every question's
prediction and the accuracies are identical, and samples/s of each, in one run.

    python benchmarks/eval_mcq.py [--model DIR] [--items 300] [--batch 8]

Without --model a quickstart-size Llama is built from scratch (random weights; the comparison
does not need a trained model).
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
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model_dir = options.model or build_model(work)
        model, tokenizer = load_causal_lm(model_dir), load_tokenizer(model_dir)
        prepared = harness.prepare("finance_mcq", "mcq", "flame", [STARTER_DATA_DIR / "eval_finance_mcq.jsonl"],
                                   "cloze", work, options.items)
        max_length = min(2048, model.config.max_position_embeddings)
        runs = {}
        for name, lm in (("finloom", FinloomLM(model, tokenizer, options.batch, max_length)),
                         ("lm_eval_hflm", HFLM(pretrained=model, tokenizer=tokenizer, batch_size=options.batch,
                                               max_length=max_length))):
            began = time.perf_counter()
            samples = harness.evaluate(lm, prepared.subtasks, work)
            seconds = time.perf_counter() - began
            rows = harness.per_question(prepared, samples, prepared.subtasks)
            runs[name] = {"seconds": seconds, "rows": {r["id"] + r["template"]: r for r in rows},
                          "summary": harness.summarize(rows, "mcq")}
    ours, theirs = runs["finloom"], runs["lm_eval_hflm"]
    differences = [abs(a - b) for key, row in ours["rows"].items()
                   for a, b in zip(row["loglikelihoods"], theirs["rows"][key]["loglikelihoods"])]
    same_predictions = all(row["prediction"] == theirs["rows"][key]["prediction"] for key, row in ours["rows"].items())
    items = len(ours["rows"])
    print(json.dumps({
        "questions": items, "choices": len(differences),
        "max_abs_loglikelihood_difference": max(differences),
        "identical_predictions": same_predictions,
        "accuracy": {"finloom": ours["summary"]["accuracy"], "lm_eval_hflm": theirs["summary"]["accuracy"]},
        "samples_per_s": {"finloom": round(items / ours["seconds"], 2), "lm_eval_hflm": round(items / theirs["seconds"], 2)},
        "ratio_finloom_over_hflm_time": round(ours["seconds"] / theirs["seconds"], 3),
    }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
