"""The ``eval`` stage: every stage's model, and any API models, on the same benchmarks, through lm-eval.

For each model (the starting HF model, then base / pretrain / sft / align as enabled, then the
recipe's endpoints): every benchmark of ``eval.benchmarks`` (certification MCQ by log-likelihood
for every local model and by generation for chat models, calculation problems, judged scenarios)
and perplexity on held-out finance and general text. Per-question results are kept under
``eval/<model>/<benchmark>.jsonl``; scenario judge prompts and replies beside them.

``Evaluator`` is the one place that evaluates a model; the forgetting experiment, the mix search
and ``finloom eval`` use it too.
"""

from __future__ import annotations

import json
from pathlib import Path

from finloom.errors import BadInput
from finloom.eval import harness
from finloom.eval.perplexity import perplexity
from finloom.eval.scenarios import judge_answers, summarize_scenarios
from finloom.files import atomic_write_json, atomic_write_jsonl, iter_texts
from finloom.llm.loading import load_causal_lm, load_tokenizer
from finloom.progress import progress_bar
from finloom.recipe import BenchmarkSpec, EndpointSpec, EvalSection, Recipe
from finloom.runner import MODEL_STAGES, RunContext, StageResult

PPL_SEQ_LEN = 256
CHAT_STAGES = ("sft", "align")


def _hub_file(spec: BenchmarkSpec, work: Path) -> Path:
    """Download a Hub benchmark once (only when the recipe names one) into a local JSONL."""
    out = work / "hub" / f"{spec.name}.jsonl"
    if not out.exists():
        from datasets import load_dataset

        try:
            rows = load_dataset(spec.hub.path, spec.hub.name, split=spec.hub.split)
        except Exception as error:  # offline, unknown dataset: the user's to fix
            raise BadInput(f"eval.benchmarks.{spec.name}.hub: cannot load {spec.hub.path}: {error}") from None
        atomic_write_jsonl(out, [dict(row) for row in rows])
    return out


class Evaluator:
    """The recipe's benchmarks, converted and turned into lm-eval tasks once, evaluated on any model."""

    def __init__(self, section: EvalSection, recipe: Recipe, work: Path, heldout: dict[str, list[str]],
                 names: set[str] | None = None, run_dir: Path | None = None):
        self.section = section
        self.recipe = recipe
        self.run_dir = run_dir
        self.work = Path(work)
        self.heldout = heldout
        self.specs = {spec.name: spec for spec in section.benchmarks if names is None or spec.name in names}
        self.prepared: dict[str, harness.PreparedBenchmark] = {}
        self.rejects: list[dict] = []
        for name, spec in self.specs.items():
            paths = [recipe.resolve(source.path) for source in spec.files] or [_hub_file(spec, self.work)]
            max_gen_tokens = section.scenarios.max_gen_tokens if spec.kind == "scenario" else section.max_gen_tokens
            prepared = harness.prepare(name, spec.kind, spec.layout, paths, spec.scoring, self.work,
                                       spec.max_items or section.max_items, spec.num_fewshot, max_gen_tokens)
            self.prepared[name] = prepared
            self.rejects += [{"benchmark": name, **reject} for reject in prepared.rejects]

    def _subtasks(self, chat: bool, loglikelihood: bool) -> list[harness.SubTask]:
        """Log-likelihood tasks when the model gives log-probs; generation tasks for chat models, or for any
        model when the benchmark is scored by generation only."""
        chosen = []
        for prepared in self.prepared.values():
            for task in prepared.subtasks:
                if task.template in harness.LOGLIKELIHOOD_TEMPLATES:
                    if loglikelihood:
                        chosen.append(task)
                elif chat or self.specs[task.benchmark].scoring == "generate":
                    chosen.append(task)
        return chosen

    def _collect(self, samples: dict, subtasks: list[harness.SubTask], out_dir: Path, label: str) -> dict:
        results = {}
        for name, prepared in self.prepared.items():
            spec = self.specs[name]
            mine = [task for task in subtasks if task in prepared.subtasks]
            groups = {"": [t for t in mine if t.template in harness.LOGLIKELIHOOD_TEMPLATES],
                      "gen": [t for t in mine if t.template not in harness.LOGLIKELIHOOD_TEMPLATES]}
            for suffix, tasks in groups.items():
                if not tasks:
                    continue
                key = f"{name}_gen" if suffix and spec.kind == "mcq" and spec.scoring != "generate" else name
                rows = harness.per_question(prepared, samples, tasks)
                if spec.kind == "scenario":
                    results[key] = self._judge(rows, prepared, out_dir, key)
                else:
                    results[key] = harness.summarize(rows, spec.kind)
                results[key]["domain"] = spec.domain
                atomic_write_jsonl(out_dir / f"{key}.jsonl", rows)
        return results

    def _judge(self, rows: list[dict], prepared: harness.PreparedBenchmark, out_dir: Path, key: str) -> dict:
        answered = {"responded_rate": round(sum(r["correct"] for r in rows) / len(rows), 4) if rows else None,
                    "items": len(rows)}
        if self.recipe.teacher is None:
            return {**answered, "usable_rate": None, "judge": "not configured (set a teacher section)"}
        from finloom.llm.client import LLMClient

        scenarios = {item["id"]: item for item in prepared.items}
        settings = self.section.scenarios
        with LLMClient(self._judge_config()) as client:
            judged = judge_answers(client, rows, scenarios, settings.judge_retries, settings.judge_max_tokens,
                                   settings.usable_basic, settings.usable_high_stakes)
        atomic_write_jsonl(out_dir / f"{key}_judge.jsonl", judged)
        return {**answered, **summarize_scenarios(judged)}

    def _judge_config(self):
        """The teacher, with a 'stage:NAME' local model resolved to that stage's model in this run."""
        teacher = self.recipe.teacher
        reference = teacher.local_model or ""
        if not reference.startswith("stage:"):
            return teacher
        stage = reference.removeprefix("stage:")
        path = (self.run_dir / stage / "model") if self.run_dir else None
        if path is None or not path.exists():
            raise BadInput(f"teacher.local_model: {reference}: no model of stage {stage!r} in this run "
                           "('stage:' judges exist only inside a run; give teacher.base_url or a model directory)")
        return teacher.model_copy(update={"local_model": str(path)})

    def run_local(self, label: str, model_path, chat: bool, out_dir: Path) -> dict:
        """Every benchmark on a local model directory (generation tasks only for chat models) and perplexity."""
        from finloom.eval.lm import FinloomLM

        recipe = self.recipe
        out_dir.mkdir(parents=True, exist_ok=True)
        tokenizer = load_tokenizer(model_path, recipe.model.trust_remote_code)
        model = load_causal_lm(model_path, recipe.model.allow_pickle, recipe.model.trust_remote_code,
                               recipe.model.dtype)
        model.eval()
        subtasks = self._subtasks(chat=chat, loglikelihood=True)
        with progress_bar(f"eval {label}") as bar:
            task = bar.add_task(label, total=None, status=f"{len(subtasks)} lm-eval tasks")
            lm = FinloomLM(model, tokenizer, self.section.batch_size, max_gen_toks=self.section.max_gen_tokens,
                           progress=lambda n: bar.advance(task, n))
            samples = self._evaluate(lm, subtasks, chat)
            results = self._collect(samples, subtasks, out_dir, label)
            max_length = min(1024, getattr(model.config, "max_position_embeddings", 1024))
            separator = tokenizer.get_vocab().get("<|endoftext|>", tokenizer.eos_token_id)
            for domain, texts in self.heldout.items():
                bar.update(task, status=f"{domain} perplexity")
                results[f"{domain}_ppl"] = perplexity(model, tokenizer, texts, separator,
                                                      min(PPL_SEQ_LEN, max_length), self.section.perplexity_max_tokens,
                                                      self.section.batch_size)
        return results

    def run_endpoint(self, endpoint: EndpointSpec, out_dir: Path) -> dict:
        """Generation benchmarks (and log-likelihood ones, if the server returns prompt log-probs) on an API model."""
        out_dir.mkdir(parents=True, exist_ok=True)
        lm = api_model(endpoint)
        subtasks = self._subtasks(chat=True, loglikelihood=endpoint.logprobs)
        with progress_bar(f"eval {endpoint.name}") as bar:
            bar.add_task(endpoint.name, total=None, status=f"{len(subtasks)} lm-eval tasks")
            samples = self._evaluate(lm, subtasks, endpoint.chat)
        return self._collect(samples, subtasks, out_dir, endpoint.name)

    def _evaluate(self, lm, subtasks: list[harness.SubTask], chat: bool) -> dict:
        """Log-likelihood tasks on the raw prompt for every model, so stages compare on one protocol;
        generation tasks through the chat template for chat models."""
        scored = [t for t in subtasks if t.template in harness.LOGLIKELIHOOD_TEMPLATES]
        generated = [t for t in subtasks if t not in scored]
        samples = harness.evaluate(lm, scored, self.work, apply_chat_template=False, seed=self.recipe.seed)
        samples.update(harness.evaluate(lm, generated, self.work, apply_chat_template=chat, seed=self.recipe.seed))
        return samples


def api_model(endpoint: EndpointSpec):
    """lm-eval's own OpenAI-compatible model classes, pointed at the endpoint."""
    import os

    from lm_eval.api.registry import get_model

    if endpoint.api_key_env:
        if not os.environ.get(endpoint.api_key_env):
            raise BadInput(f"eval.endpoints.{endpoint.name}.api_key_env: {endpoint.api_key_env} is not set")
        os.environ["OPENAI_API_KEY"] = os.environ[endpoint.api_key_env]
    base = endpoint.base_url.rstrip("/")
    if endpoint.chat:
        return get_model("local-chat-completions")(
            base_url=f"{base}/chat/completions", model=endpoint.model, num_concurrent=endpoint.concurrency,
            timeout=endpoint.timeout_s, tokenizer_backend=None, tokenized_requests=False, max_retries=3)
    return get_model("local-completions")(
        base_url=f"{base}/completions", model=endpoint.model, num_concurrent=endpoint.concurrency,
        timeout=endpoint.timeout_s, tokenizer_backend="huggingface", tokenizer=endpoint.tokenizer,
        tokenized_requests=True, max_retries=3)


def heldout_texts(ctx: RunContext) -> dict[str, list[str]]:
    if "data" not in ctx.recipe.enabled_stages():
        return {}
    outputs = ctx.manifest("data")["outputs"]
    return {domain: list(iter_texts(ctx.run_dir / outputs[f"{domain}_heldout"]))
            for domain in ("finance", "general") if f"{domain}_heldout" in outputs}


def models_to_evaluate(ctx: RunContext) -> list[tuple[str, str]]:
    enabled = ctx.recipe.enabled_stages()
    models = [] if ctx.recipe.model.scratch else [("start", ctx.recipe.start_model())]
    models += [(stage, str(ctx.artifact(stage, "model"))) for stage in MODEL_STAGES if stage in enabled]
    return models


def headline(results: dict) -> dict:
    """One number per benchmark and model: accuracy, usable rate or perplexity."""
    keys = ("accuracy", "usable_rate", "responded_rate", "perplexity")
    return {name: next((value[k] for k in keys if value.get(k) is not None), None) for name, value in results.items()}


def run(section: EvalSection, ctx: RunContext) -> StageResult:
    heldout = heldout_texts(ctx)
    if not section.benchmarks and not heldout:
        raise BadInput("eval: nothing to evaluate (no benchmarks and no held-out text)")
    evaluator = Evaluator(section, ctx.recipe, ctx.stage_dir / "work", heldout, run_dir=ctx.run_dir)
    atomic_write_jsonl(ctx.stage_dir / "rejects.jsonl", evaluator.rejects)
    per_model = {}
    for label, model_path in models_to_evaluate(ctx):
        per_model[label] = evaluator.run_local(label, model_path, label in CHAT_STAGES, ctx.stage_dir / label)
    for endpoint in section.endpoints:
        per_model[endpoint.name] = evaluator.run_endpoint(endpoint, ctx.stage_dir / endpoint.name)
    atomic_write_json(ctx.stage_dir / "results.json", per_model)
    return StageResult(
        outputs={"results": "eval/results.json"},
        metrics={"summary": {label: headline(results) for label, results in per_model.items()},
                 "items": {name: len(p.items) for name, p in evaluator.prepared.items()},
                 "rejected": len(evaluator.rejects)},
    )


def load_results(run_dir: Path) -> dict:
    path = Path(run_dir) / "eval" / "results.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
