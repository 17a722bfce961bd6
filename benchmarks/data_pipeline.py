"""finloom's full local data pipeline against datatrove's own equivalent steps, on the same corpus, in one run.

Corpus: the bundled starter corpora (general + finance, about 1.5 MB) scaled to ``--mb``. Plain
replication would make near-copies that MinHash removes wholesale, so every copy ``k`` is genuinely
different text in the same language and layout, with choices seeded by (seed, copy, document id):
the body paragraphs are shuffled (the title stays first), so are the lines of list paragraphs and
the sentences of every line (a leading label such as ``Q:`` or ``问：`` stays), each sentence is
swapped with probability ``--swap`` for a random sentence of the same corpus and language, and
every digit becomes a random digit (table paragraphs keep their rows, digits aside). A planted
duplicate takes its original's choices (seeded by ``dup_of``, and by content), so inside one copy
the starter's planted exact duplicates stay exact and about half its near duplicates stay near
(Jaccard >= 0.8) for the dedups to find. The JSONL goes to ``--files`` files (general/ and finance/
folders) in a temp dir; the output reports what share of documents each dedup removes.

Sides, each in its own subprocess (its peak RSS is its own; wall time excludes interpreter start
and imports), all on datatrove's LocalPipelineExecutor with tasks=1, workers=1 (one core):

- ``finloom``: the data stage through the real entry point (``Runner(...).run(only="data")``) with
  the data section of recipes/quickstart.yaml (language id, heuristics, spam, PII, exact + fuzzy
  dedup, quality and domain classifiers trained from the starter labels, decontamination against
  the quickstart's eval sets, held-out sources) and ``mix: {enabled: false}`` (tokenisation is a
  separate concern). Per-phase wall times come from the phase callback, per-step times from
  datatrove's stats under ``data/logs/<phase>/stats.json``.
- ``finloom_subset``: the same stage with only the steps datatrove has too: no language id, no
  spam filter, no classifiers, no decontamination, no held-out sources.
- ``datatrove``: JsonlReader -> FTFYFormatter -> GopherRepetitionFilter -> GopherQualityFilter ->
  C4QualityFilter -> FineWebQualityFilter -> PIIFormatter -> JsonlWriter, then exact dedup
  (ExactDedupSignature / ExactFindDedups / ExactDedupFilter), then MinHash (MinhashDedupSignature /
  Buckets / Cluster / Filter) -> JsonlWriter. Defaults everywhere, except: uncompressed JSONL like
  finloom's writers; the MinHash hash function is sha1 (the default, xxhash, rejects the str
  shingles datatrove 0.10 passes it with xxhash 4; finloom uses sha1 too); the exact-dedup content
  getter returns bytes for the same reason. datatrove has no offline language id (its
  LanguageFilter downloads a fastText model), no classifiers and no decontamination in this form.
  Its word tokenizer for English is spaCy (``spacy.blank("en")``, no download); without spaCy,
  ``--datatrove-tokenizer finloom`` gives the filters and MinHash finloom's regex tokenizer instead.
  ``--datatrove-python`` runs this side under another interpreter (e.g. a venv that has spaCy).

    python benchmarks/data_pipeline.py [--mb 100] [--files 8] [--swap 0.5] [--seed 0]
        [--sides finloom finloom_subset datatrove] [--datatrove-python PY] [--datatrove-tokenizer auto]
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from finloom.runner import process_peak_rss_mb

SIDES = ("finloom", "finloom_subset", "datatrove")
STARTER_CORPORA = ("general", "finance")
KEPT_FIELDS = ("id", "kind", "lang", "source", "text")  # ground-truth fields (planted, pii, dup_of) stay out
_EN_SENTENCE = re.compile(r"(?<=[.!?])\s+")
_ZH_SENTENCE = re.compile(r"[^。！？]*[。！？]+[”’」』）]*|[^。！？]+$")
_DIGIT = re.compile(r"\d")
_LABEL = re.compile(r"^[^:：.!?。！？\n]{1,40}[:：]\s*")
_ANSWER = re.compile(r"^(A|答)[:：]")


# --- corpus --------------------------------------------------------------------------------------------


def starter_dir() -> Path:
    from finloom.recipe import STARTER_DATA_DIR

    return STARTER_DATA_DIR


def is_table(paragraph: str) -> bool:
    lines = paragraph.splitlines()
    return len(lines) > 1 and sum("|" in line or "\t" in line for line in lines) >= len(lines) / 2


def sentences_of(paragraph: str, lang: str) -> list[str]:
    if lang == "zh":
        return [s for s in _ZH_SENTENCE.findall(paragraph) if s.strip()]
    return [s for s in _EN_SENTENCE.split(paragraph) if s.strip()]


def sentence_pools(records: list[dict]) -> dict[str, list[str]]:
    """Every prose sentence of a corpus, per language: what a swapped sentence is drawn from."""
    pools: dict[str, list[str]] = {}
    for record in records:
        lang = record.get("lang") or "en"
        for paragraph in record["text"].split("\n\n")[1:]:
            if not is_table(paragraph):
                pools.setdefault(lang, []).extend(sentences_of(paragraph, lang))
    return pools


def _hash(*parts: str) -> int:
    return int.from_bytes(hashlib.blake2b("\x1f".join(parts).encode(), digest_size=8).digest(), "big")


def _shuffled(items: list[str], salt: str) -> list[str]:
    """A seeded shuffle by content: items two documents share keep their relative order in both."""
    return sorted(items, key=lambda item: _hash(salt, item))


def _swapped(sentence: str, salt: str, pool: list[str], swap: float) -> str:
    draw = _hash(salt, "swap", sentence)
    return pool[(draw >> 16) % len(pool)] if pool and (draw & 0xFFFF) < swap * 0x10000 else sentence


def varied_line(line: str, lang: str, salt: str, pool: list[str], swap: float) -> str:
    """A line's sentences shuffled and some swapped; a leading label (``Q:``, ``问：``, ``Term:``) stays."""
    label = _LABEL.match(line)
    prefix, rest = (label.group(0), line[label.end():]) if label else ("", line)
    sentences = [_swapped(s.strip(), salt, pool, swap) for s in _shuffled(sentences_of(rest, lang), salt)]
    return prefix + ("" if lang == "zh" else " ").join(sentences)


def varied_text(text: str, lang: str, copy: int, seed: int, pool: list[str], swap: float, key: str) -> str:
    """Copy ``copy`` of a document: body paragraphs, the lines of list paragraphs (not of Q/A ones) and the
    sentences of every line shuffled, sentences swapped, digits redrawn; the title and tables keep their place.

    Every choice hashes (seed, copy, key, the item itself), so an edited near-duplicate with the same
    ``key`` gets the same choices for everything it shares with its original.
    """
    salt = f"{seed}-{copy}-{key}"
    paragraphs = text.split("\n\n")
    out = paragraphs[:1]
    for paragraph in _shuffled(paragraphs[1:], salt):
        if is_table(paragraph):
            out.append(paragraph)
            continue
        lines = [varied_line(line, lang, salt, pool, swap) for line in paragraph.split("\n")]
        if len(lines) > 1 and not any(_ANSWER.match(line) for line in lines):
            lines = _shuffled(lines, salt)
        out.append("\n".join(lines))
    rng = random.Random(salt)
    return _DIGIT.sub(lambda _: str(rng.randrange(10)), "\n\n".join(out))


def write_corpus(inputs: Path, megabytes: float, files: int, swap: float, seed: int) -> dict:
    """``inputs/<corpus>/part-<i>.jsonl``: copies of the starter corpora, each copy varied, to ``megabytes``."""
    corpora = {}
    for name in STARTER_CORPORA:
        lines = (starter_dir() / f"{name}_corpus.jsonl").read_text(encoding="utf-8").splitlines()
        records = [json.loads(line) for line in lines if line.strip()]
        corpora[name] = (records, sentence_pools(records))
    per_corpus = max(files // len(corpora), 1)
    handles = {}
    for name in corpora:
        (inputs / name).mkdir(parents=True, exist_ok=True)
        for part in range(per_corpus):
            handles[name, part] = open(inputs / name / f"part-{part}.jsonl", "w", encoding="utf-8")
    written = documents = copy = 0
    try:
        while written < megabytes * 2**20:
            for name, (records, pools) in corpora.items():
                handle = handles[name, copy % per_corpus]
                for record in records:
                    lang = record.get("lang") or "en"
                    varied = {key: record[key] for key in KEPT_FIELDS if key in record}
                    varied["id"] = f"{record['id']}-c{copy}"
                    # a planted duplicate draws like its original, so it stays an (exact or near) duplicate
                    key = record.get("dup_of") or record["id"]
                    varied["text"] = varied_text(record["text"], lang, copy, seed, pools.get(lang, []), swap, key)
                    line = json.dumps(varied, ensure_ascii=False) + "\n"
                    handle.write(line)
                    written += len(line.encode())
                    documents += 1
            copy += 1
    finally:
        for handle in handles.values():
            handle.close()
    return {"documents": documents, "copies": copy, "files": len(handles),
            "input_mb": round(sum(p.stat().st_size for p in inputs.rglob("*.jsonl")) / 2**20, 1)}


# --- shared helpers --------------------------------------------------------------------------------------


def _total(value) -> float:
    if isinstance(value, dict):
        return value.get("total", 0)
    return value or 0


def phase_step_stats(logging_dir: Path) -> list[dict]:
    """(step, seconds, counters) of one phase, from datatrove's merged ``stats.json``."""
    path = logging_dir / "stats.json"
    if not path.exists():
        return []
    rows = []
    for step in json.loads(path.read_text(encoding="utf-8")):
        name = re.sub(r"^\W+", "", step["name"].split(": ", 1)[-1]).strip()
        counters = {key: int(_total(value)) for key, value in (step.get("stats") or {}).items()
                    if key in ("total", "forwarded", "dropped") or key.startswith("dropped_")}
        rows.append({"step": name, "seconds": round(_total(step.get("time_stats")), 2), **counters})
    return rows


# --- finloom side ----------------------------------------------------------------------------------------


def finloom_recipe(inputs: Path, subset: bool) -> dict:
    import yaml

    quickstart = yaml.safe_load((Path(__file__).resolve().parents[1] / "recipes" / "quickstart.yaml")
                                .read_text(encoding="utf-8"))
    data = dict(quickstart["data"])
    data["general"] = [{"path": str(inputs / "general")}]
    data["finance"] = [{"path": str(inputs / "finance")}]
    data["mix"] = {"enabled": False}
    recipe = {"name": "bench", "seed": quickstart.get("seed", 1234), "model": {"hf": "unused/tokenizer-not-needed"},
              "data": data, "base": {"enabled": False}, "pretrain": {"enabled": False},
              "sft": {"enabled": False}, "reward": {"enabled": False}, "align": {"enabled": False},
              "eval": quickstart["eval"], "report": {"enabled": False}}
    if subset:
        for key in ("general_heldout", "finance_heldout", "quality_classifier", "domain_classifier"):
            data.pop(key, None)
        data["language"] = {"enabled": False}
        data["quality"] = {"spam": False}
        data["decontam"] = {"enabled": False}
        recipe["eval"] = {"enabled": False}
    return recipe


def run_finloom(work: Path, inputs: Path, subset: bool) -> dict:
    import torch  # noqa: F401  (the runner seeds torch: imported before timing, like every import)
    import transformers  # noqa: F401
    import yaml

    import finloom.data.stage as stage
    from finloom.logs import quiet_libraries
    from finloom.recipe import load_recipe
    from finloom.runner import Runner

    quiet_libraries()
    marks: list[tuple[str, float]] = []
    real_run_phases, real_train = stage.run_phases, stage.train_classifier
    training = []

    def timed_run_phases(phases, settings, logs_dir, on_phase=None):
        def mark(index, phase):
            marks.append((phase.name, time.perf_counter()))
            if on_phase:
                on_phase(index, phase)

        real_run_phases(phases, settings, logs_dir, mark)
        marks.append(("end", time.perf_counter()))

    def timed_train(*args, **kwargs):
        began = time.perf_counter()
        try:
            return real_train(*args, **kwargs)
        finally:
            training.append(time.perf_counter() - began)

    stage.run_phases, stage.train_classifier = timed_run_phases, timed_train
    path = work / "bench.yaml"
    path.write_text(yaml.safe_dump(finloom_recipe(inputs, subset)), encoding="utf-8")
    run_dir = work / "run"
    began = time.perf_counter()
    Runner(load_recipe(path), run_dir).run(only="data")
    wall = time.perf_counter() - began
    manifest = json.loads((run_dir / "data" / "manifest.json").read_text(encoding="utf-8"))
    phases = [{"phase": name, "wall_s": round(marks[i + 1][1] - at, 2),
               "steps": phase_step_stats(run_dir / "data" / "logs" / name)}
              for i, (name, at) in enumerate(marks[:-1])]
    phases_s = sum(p["wall_s"] for p in phases)
    funnel = manifest["metrics"]["funnel"]
    return {
        "wall_s": round(wall, 2), "peak_rss_mb": process_peak_rss_mb(), "stage_peak_rss_mb": manifest["peak_rss_mb"],
        "breakdown_s": {"classifier_training": round(sum(training), 2), "phases": round(phases_s, 2),
                        "stage_rest (merge outputs, funnel recount)": round(manifest["wall_time_s"] - phases_s
                                                                            - sum(training), 2),
                        "runner (input + output hashes, manifest)": round(wall - manifest["wall_time_s"], 2)},
        "phases": phases, "funnel": funnel, "classifiers": manifest["metrics"].get("classifiers"),
        "documents_out": sum(funnel["kept"].values()),
    }


# --- datatrove side --------------------------------------------------------------------------------------


def _text_bytes(doc) -> bytes:
    return doc.text.encode("utf-8")


def datatrove_language(choice: str):
    """datatrove's default English tokenizer (spaCy) if importable, else finloom's regex tokenizer."""
    if choice == "auto":
        try:
            import spacy  # noqa: F401

            choice = "spacy"
        except ImportError:
            choice = "finloom"
    if choice == "spacy":
        from datatrove.utils.typeshelper import Languages

        return choice, Languages.english
    from finloom.data.filters import ScriptWordTokenizer

    return choice, ScriptWordTokenizer()


def run_datatrove(work: Path, inputs: Path, tokenizer: str) -> dict:
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup.exact_dedup import (ExactDedupConfig, ExactDedupFilter, ExactDedupSignature,
                                                      ExactFindDedups)
    from datatrove.pipeline.dedup.minhash import (MinhashConfig, MinhashDedupBuckets, MinhashDedupCluster,
                                                  MinhashDedupFilter, MinhashDedupSignature)
    from datatrove.pipeline.filters import (C4QualityFilter, FineWebQualityFilter, GopherQualityFilter,
                                            GopherRepetitionFilter)
    from datatrove.pipeline.formatters import FTFYFormatter, PIIFormatter
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter
    from datatrove.utils.hashing import HashConfig

    tokenizer, language = datatrove_language(tokenizer)
    dt = work / "datatrove"
    exact = ExactDedupConfig(content_getter=_text_bytes)
    minhash = MinhashConfig(hash_config=HashConfig(hash_fc="sha1"))

    def writer(folder: Path) -> JsonlWriter:
        return JsonlWriter(str(folder), output_filename="${rank}.jsonl", compression=None)

    def reader(folder: Path, pattern: str = "*.jsonl") -> JsonlReader:
        return JsonlReader(str(folder), glob_pattern=pattern)

    phases = [
        ("filter", [reader(inputs, "*/*.jsonl"), FTFYFormatter(), GopherRepetitionFilter(language=language),
                    GopherQualityFilter(language=language), C4QualityFilter(language=language),
                    FineWebQualityFilter(language=language), PIIFormatter(), writer(dt / "filtered")], 1),
        ("exact_signatures", [reader(dt / "filtered"), ExactDedupSignature(str(dt / "exact_sigs"), config=exact)], 1),
        ("exact_find", [ExactFindDedups(str(dt / "exact_sigs"), str(dt / "exact_dups"), config=exact)], 1),
        ("exact_filter", [reader(dt / "filtered"), ExactDedupFilter(str(dt / "exact_dups"), config=exact),
                          writer(dt / "after_exact")], 1),
        ("minhash_signatures", [reader(dt / "after_exact"),
                                MinhashDedupSignature(str(dt / "mh_sigs"), config=minhash, language=language)], 1),
        ("minhash_buckets", [MinhashDedupBuckets(str(dt / "mh_sigs"), str(dt / "mh_buckets"), config=minhash)],
         minhash.num_buckets),
        ("minhash_clusters", [MinhashDedupCluster(str(dt / "mh_buckets"), str(dt / "mh_remove"), config=minhash)], 1),
        ("minhash_filter", [reader(dt / "after_exact"), MinhashDedupFilter(str(dt / "mh_remove")),
                            writer(dt / "output")], 1),
    ]
    began = time.perf_counter()
    timings = []
    for name, pipeline, tasks in phases:
        start = time.perf_counter()
        LocalPipelineExecutor(pipeline, tasks=tasks, workers=1, logging_dir=str(dt / "logs" / name)).run()
        timings.append((name, time.perf_counter() - start))
    wall = time.perf_counter() - began
    rows = {name: phase_step_stats(dt / "logs" / name) for name, _, _ in phases}
    out_docs = next(r["forwarded"] for r in rows["minhash_filter"] if r["step"] == "MinHash stage 4")
    return {
        "wall_s": round(wall, 2), "peak_rss_mb": process_peak_rss_mb(), "word_tokenizer": tokenizer,
        "minhash_config": str(minhash),
        "phases": [{"phase": name, "wall_s": round(seconds, 2), "steps": rows[name]} for name, seconds in timings],
        "documents_out": out_docs,
    }


# --- summary ---------------------------------------------------------------------------------------------


def _step(phases: list[dict], phase: str, step_prefix: str) -> dict:
    for entry in phases:
        if entry["phase"] == phase:
            for row in entry["steps"]:
                if row["step"].startswith(step_prefix):
                    return row
    return {}


def dedup_shares(side: str, result: dict, documents_in: int) -> dict:
    """Documents each dedup saw and removed, as shares of the documents it saw and of the input."""
    steps = {"exact": ("exact_filter", "exact-deduplication stage 3"), "near": ("minhash_filter", "MinHash stage 4")}
    shares = {}
    for kind, (phase, step) in steps.items():
        row = _step(result["phases"], phase, step)
        seen, removed = row.get("total", 0), row.get("dropped", 0)
        shares[kind] = {"in": seen, "removed": removed, "share_of_its_input": round(removed / seen, 4) if seen else 0,
                        "share_of_corpus": round(removed / documents_in, 4)}
    return shares


def summarise(side: str, result: dict, corpus: dict) -> dict:
    wall = result["wall_s"]
    return {"wall_s": wall, "documents_per_s": round(corpus["documents"] / wall), "mb_per_s_per_core":
            round(corpus["input_mb"] / wall / 1, 2), "peak_rss_mb": result["peak_rss_mb"],
            "documents_out": result["documents_out"], "dedup": dedup_shares(side, result, corpus["documents"])}


def child_main(options) -> int:
    work, inputs = options.work, options.work / "inputs"
    side_dir = work / options.child
    side_dir.mkdir(parents=True, exist_ok=True)
    log = open(side_dir / "stderr.log", "w", encoding="utf-8")
    with contextlib.redirect_stderr(log):
        from datatrove.utils.logging import logger

        logger.remove()
        if options.child == "datatrove":
            import datatrove.executor  # noqa: F401  (imports before timing, as on finloom's side)
            result = run_datatrove(side_dir, inputs, options.datatrove_tokenizer)
        else:
            result = run_finloom(side_dir, inputs, subset=options.child == "finloom_subset")
    log.close()
    print(json.dumps(result, ensure_ascii=False))
    return 0


def run_side(side: str, work: Path, options) -> dict:
    python = options.datatrove_python if side == "datatrove" and options.datatrove_python else sys.executable
    command = [python, str(Path(__file__).resolve()), "--child", side, "--work", str(work),
               "--datatrove-tokenizer", options.datatrove_tokenizer]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[1] / "src"),
                                                                      os.environ.get("PYTHONPATH")]))}
    child = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if child.returncode:
        log = work / side / "stderr.log"
        tail = log.read_text(encoding="utf-8")[-4000:] if log.exists() else ""
        raise RuntimeError(f"{side} failed ({child.returncode}):\n{child.stderr[-4000:]}\n{tail}")
    return json.loads(child.stdout.strip().splitlines()[-1])


def code_version() -> dict:
    """The commit the run used, and whether src/finloom/data differed from it (the stage's code)."""
    root = Path(__file__).resolve().parents[1]

    def git(*args: str) -> str:
        done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, check=False)
        return done.stdout.strip() if done.returncode == 0 else ""

    return {"commit": git("rev-parse", "--short", "HEAD") or None,
            "data_code_modified": bool(git("status", "--porcelain", "--", "src/finloom/data"))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=100, help="Corpus size (both corpora together).")
    parser.add_argument("--files", type=int, default=8, help="Input files (half general, half finance).")
    parser.add_argument("--swap", type=float, default=0.5, help="Chance that a sentence of a copy is swapped.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sides", nargs="+", choices=SIDES, default=list(SIDES))
    parser.add_argument("--datatrove-python", help="Interpreter for the datatrove side (default: this one).")
    parser.add_argument("--datatrove-tokenizer", choices=("auto", "spacy", "finloom"), default="auto",
                        help="auto: datatrove's spaCy English tokenizer if spaCy imports, else finloom's regex one.")
    parser.add_argument("--keep", type=Path, help="Work here and keep the files (default: a temp dir, removed).")
    parser.add_argument("--child", choices=SIDES, help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.child:
        return child_main(options)
    version = code_version()
    with contextlib.ExitStack() as stack:
        if options.keep:
            work = options.keep
            work.mkdir(parents=True, exist_ok=True)
        else:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        began = time.perf_counter()
        corpus = write_corpus(work / "inputs", options.mb, options.files, options.swap, options.seed)
        corpus["generation_s"] = round(time.perf_counter() - began, 1)
        raw = {side: run_side(side, work, options) for side in options.sides}
    if code_version() != version:
        version["changed_during_run"] = code_version()
    result = {"code": version, "corpus": corpus | {"swap": options.swap, "seed": options.seed}, "cores_used": 1,
              "executor": "datatrove LocalPipelineExecutor, tasks=1, workers=1",
              "summary": {side: summarise(side, raw[side], corpus) for side in raw}}
    if "datatrove" in raw:
        ratios = {}
        for side in ("finloom", "finloom_subset"):
            if side in raw:
                ratios[f"{side}_over_datatrove_wall"] = round(raw[side]["wall_s"] / raw["datatrove"]["wall_s"], 3)
                ratios[f"{side}_over_datatrove_peak_rss"] = round(raw[side]["peak_rss_mb"]
                                                                 / raw["datatrove"]["peak_rss_mb"], 3)
        result["ratios"] = ratios
        result["not_in_datatrove"] = ("offline language id (LanguageFilter downloads a fastText model), spam filter, "
                                      "quality / domain classifiers, decontamination, held-out routing, the funnel "
                                      "check and removed-document files: only the finloom side runs them; "
                                      "finloom_subset leaves them out")
    result["details"] = raw
    print(json.dumps(result, indent=2, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
