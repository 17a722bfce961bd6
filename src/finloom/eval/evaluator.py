"""``Evaluator``: the one place that evaluates a model, local or behind an API, on a recipe's benchmarks.

The benchmarks are converted and turned into lm-eval tasks once; then each model runs every task
(log-likelihood tasks for any local model or an API that returns prompt log-probs, generation tasks
for chat models), scenario answers go to the judge, and held-out perplexity is measured. The eval
stage, the studies and ``finloom eval`` all evaluate through it, with plain values rather than a
run, so that the same numbers come out wherever a model is evaluated.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from finloom.errors import BadInput
from finloom.eval import harness
from finloom.eval.perplexity import perplexity
from finloom.eval.scenarios import judge_answers, rule_check, summarize_scenarios
from finloom.files import atomic_write_jsonl
from finloom.llm.loading import SAFE, load_causal_lm, load_tokenizer
from finloom.progress import progress_bar
from finloom.recipe import BenchmarkSpec, ClientSection, EndpointSpec, EvalSection, ModelLoading

PPL_SEQ_LEN = 256


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

    def __init__(self, section: EvalSection, work: Path, resolve: Callable[[str], Path], *, seed: int,
                 loading: ModelLoading | None = None, judge: ClientSection | None = None,
                 heldout: dict[str, list[str]] | None = None, names: set[str] | None = None, pas=None):
        """``resolve`` turns the section's data paths into files (``Recipe.resolve``); ``judge`` is the scenario
        judge, already resolved (``stages.resolve_teacher``); ``heldout`` maps a domain to its perplexity texts;
        ``pas`` (a ``finloom.pas.augment.Augmenter``) appends its complement to every scenario prompt."""
        self.section = section
        self.work = Path(work)
        self.seed = seed
        self.loading = loading or SAFE
        self.judge = judge
        self.heldout = heldout or {}
        self.specs = {spec.name: spec for spec in section.benchmarks if names is None or spec.name in names}
        self.prepared: dict[str, harness.PreparedBenchmark] = {}
        self.rejects: list[dict] = []
        for name, spec in self.specs.items():
            paths = [resolve(source.path) for source in spec.files] or [_hub_file(spec, self.work)]
            max_gen_tokens = section.scenarios.max_gen_tokens if spec.kind == "scenario" else section.max_gen_tokens
            prepared = harness.prepare(name, spec.kind, spec.layout, paths, spec.scoring, self.work,
                                       spec.max_items or section.max_items, spec.num_fewshot, max_gen_tokens,
                                       pas.augment if pas is not None else None)
            self.prepared[name] = prepared
            self.rejects += [{"benchmark": name, **reject} for reject in prepared.rejects]
            if not prepared.items:
                raise BadInput(f"eval.benchmarks.{name}: no usable item in {', '.join(map(str, paths))} "
                               f"({len(prepared.rejects)} rejected{': ' + summary if (summary := reject_summary(prepared.rejects)) else ''})")

    def reject_counts(self) -> dict[str, dict[str, int]]:
        """Benchmark -> reject reason -> records, for every benchmark with rejects."""
        counts: dict[str, dict[str, int]] = {}
        for reject in self.rejects:
            reasons = counts.setdefault(reject["benchmark"], {})
            reasons[reject["reason"]] = reasons.get(reject["reason"], 0) + 1
        return counts

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
        scenarios = {item["id"]: {**item, "prompt": item.get("original_prompt", item["prompt"])}
                     for item in prepared.items}  # judged against what the user asked, not the PAS complement
        answered = {"responded_rate": round(sum(r["correct"] for r in rows) / len(rows), 4) if rows else None,
                    "items": len(rows), **rule_check(rows, scenarios)}
        if self.judge is None:
            return {**answered, "usable_rate": None, "judge": "not configured (set a teacher section)"}
        from finloom.llm.client import LLMClient

        settings = self.section.scenarios
        with LLMClient(self.judge) as client:
            judged = judge_answers(client, rows, scenarios, settings.judge_retries, settings.judge_max_tokens,
                                   settings.usable_basic, settings.usable_high_stakes)
        atomic_write_jsonl(out_dir / f"{key}_judge.jsonl", judged)
        return {**answered, **summarize_scenarios(judged)}

    def run_local(self, label: str, model_path, chat: bool, out_dir: Path) -> dict:
        """Every benchmark on a local model directory (generation tasks only for chat models) and perplexity."""
        from finloom.eval.lm import FinloomLM

        out_dir.mkdir(parents=True, exist_ok=True)
        tokenizer = load_tokenizer(model_path, self.loading)
        model = load_causal_lm(model_path, self.loading)
        model.eval()
        subtasks = self._subtasks(chat=chat, loglikelihood=True)
        with progress_bar(f"eval {label}") as bar:
            task = bar.add_task(label, total=None, status=f"{len(subtasks)} lm-eval tasks")
            requests = [0]

            def progress(total: int | None, done: int) -> None:
                """Each pass of lm-eval over its requests adds them to the total, so the bar has one and an ETA."""
                if total is not None:
                    requests[0] += total
                    bar.update(task, total=requests[0])
                bar.advance(task, done)

            lm = FinloomLM(model, tokenizer, self.section.batch_size, max_gen_toks=self.section.max_gen_tokens,
                           progress=progress)
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

    def run_endpoint(self, endpoint: EndpointSpec, out_dir: Path, field: str | None = None) -> dict:
        """Generation benchmarks (and log-likelihood ones, if the server returns prompt log-probs) on an API model.

        One request goes first through finloom's client, so a server that refuses connections, a refused key or an
        unknown model is one clear error naming the URL (``field``: where the endpoint was configured)."""
        out_dir.mkdir(parents=True, exist_ok=True)
        check_endpoint(endpoint, field or f"eval.endpoints.{endpoint.name}")
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
        samples = harness.evaluate(lm, scored, self.work, apply_chat_template=False, seed=self.seed)
        samples.update(harness.evaluate(lm, generated, self.work, apply_chat_template=chat, seed=self.seed))
        return samples


def reject_summary(rejects: list[dict], most: int = 3) -> str:
    counts: dict[str, int] = {}
    for reject in rejects:
        counts[reject["reason"]] = counts.get(reject["reason"], 0) + 1
    return "; ".join(f"{n} x {reason}" for reason, n in sorted(counts.items(), key=lambda kv: -kv[1])[:most])


def check_endpoint(endpoint: EndpointSpec, field: str) -> None:
    """A one-token request to the endpoint; ``EndpointUnusable`` (exit 2) names the URL and the HTTP status."""
    from finloom.llm.client import LLMClient

    config = ClientSection(base_url=endpoint.base_url, model=endpoint.model, api_key_env=endpoint.api_key_env,
                           timeout_s=endpoint.timeout_s, max_retries=1)
    with LLMClient(config, role=field) as client:
        if endpoint.chat:
            client.chat([{"role": "user", "content": "ping"}], max_tokens=1)
        else:
            client.complete("ping", max_tokens=1)


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
