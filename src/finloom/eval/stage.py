"""The ``eval`` stage: every stage's model on the same sets, so the report shows each stage's effect.

For each model (the starting HF model, then base / pretrain / sft / align as enabled): finance and
general MCQ accuracy by log-likelihood, and perplexity on held-out finance and general text.
Per-question results are kept under ``eval/<model>/``.
"""

from __future__ import annotations

from finloom.errors import BadInput
from finloom.eval.mcq import accuracy_summary, choice_count, score_mcqs, to_mcq
from finloom.eval.perplexity import perplexity
from finloom.files import atomic_write_json, atomic_write_jsonl, iter_texts, read_records
from finloom.llm.loading import load_causal_lm, load_tokenizer
from finloom.llm.scratch import END_OF_TEXT
from finloom.progress import progress_bar
from finloom.recipe import EvalSection, Source
from finloom.runner import MODEL_STAGES, RunContext, StageResult

PPL_SEQ_LEN = 256


def load_mcqs(sources: list[Source], resolve, max_items: int | None, rejects: list[dict]) -> list:
    mcqs = []
    for source in sources:
        path = resolve(source.path)
        for record in read_records(path, ("question", "answer"), rejects):
            try:
                mcqs.append(to_mcq(record))
            except ValueError as error:
                rejects.append({"file": str(path), "id": record.get("id"), "reason": str(error)})
    return mcqs[:max_items] if max_items else mcqs


def models_to_evaluate(ctx: RunContext) -> list[tuple[str, str]]:
    enabled = ctx.recipe.enabled_stages()
    models = [] if ctx.recipe.model.scratch else [("start", ctx.recipe.start_model())]
    models += [(stage, str(ctx.artifact(stage, "model"))) for stage in MODEL_STAGES if stage in enabled]
    return models


def evaluate_model(model_path, ctx: RunContext, section: EvalSection, mcq_sets: dict, heldout: dict, out_dir,
                   label: str) -> dict:
    recipe = ctx.recipe
    tokenizer = load_tokenizer(model_path, recipe.model.trust_remote_code)
    model = load_causal_lm(model_path, recipe.model.allow_pickle, recipe.model.trust_remote_code, recipe.model.dtype)
    model.eval()
    results: dict = {}
    max_length = min(1024, getattr(model.config, "max_position_embeddings", 1024))
    with progress_bar(f"eval {label}") as bar:
        task = bar.add_task(label, total=sum(choice_count(m) for m in mcq_sets.values()), status="MCQ choices")
        for name, mcqs in mcq_sets.items():
            rows = score_mcqs(model, tokenizer, mcqs, section.batch_size, max_length,
                              on_batch=lambda n: bar.advance(task, n))
            atomic_write_jsonl(out_dir / f"{name}.jsonl", rows)
            results[name] = accuracy_summary(rows)
    vocab = tokenizer.get_vocab()
    separator = vocab[END_OF_TEXT] if END_OF_TEXT in vocab else tokenizer.eos_token_id
    for name, texts in heldout.items():
        results[f"{name}_ppl"] = perplexity(
            model, tokenizer, texts, separator, min(PPL_SEQ_LEN, max_length), section.perplexity_max_tokens,
            section.batch_size,
        )
    return results


def run(section: EvalSection, ctx: RunContext) -> StageResult:
    rejects: list[dict] = []
    mcq_sets = {
        name: load_mcqs(getattr(section, name), ctx.recipe.resolve, section.max_items, rejects)
        for name in ("finance_mcq", "general_mcq") if getattr(section, name)
    }
    atomic_write_jsonl(ctx.stage_dir / "rejects.jsonl", rejects)
    heldout = {}
    if "data" in ctx.recipe.enabled_stages():
        outputs = ctx.manifest("data")["outputs"]
        heldout = {domain: list(iter_texts(ctx.run_dir / outputs[f"{domain}_heldout"]))
                   for domain in ("finance", "general") if f"{domain}_heldout" in outputs}
    if not mcq_sets and not heldout:
        raise BadInput("eval: nothing to evaluate (no MCQ sets and no held-out text)")
    per_model = {}
    for label, model_path in models_to_evaluate(ctx):
        out_dir = ctx.stage_dir / label
        out_dir.mkdir(parents=True, exist_ok=True)
        per_model[label] = evaluate_model(model_path, ctx, section, mcq_sets, heldout, out_dir, label)
    atomic_write_json(ctx.stage_dir / "results.json", per_model)
    summary = {
        label: {
            key: (value["accuracy"] if "accuracy" in value else value["perplexity"])
            for key, value in results.items()
        }
        for label, results in per_model.items()
    }
    return StageResult(
        outputs={"results": "eval/results.json"},
        metrics={"summary": summary, "mcq_items": {k: len(v) for k, v in mcq_sets.items()}, "rejected": len(rejects)},
    )
