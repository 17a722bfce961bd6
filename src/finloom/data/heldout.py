"""Held-out text that is really held out: held-out documents whose n-grams the training text also holds go.

Held-out perplexity measures a model on text it has not seen. A held-out document that copies, or nearly
copies, a training document measures memory instead (in the first bundled data, 53% of the general
held-out text's 16-token spans occurred verbatim in the training corpus). Held-out text is routed out
before deduplication (so that a near-copy removes the held-out document, not the training one), and
this check does that removal afterwards, with decontamination's n-grams: a held-out document whose
share of n-grams found in the kept training text exceeds ``max_share`` (an exact copy: all of them) moves
to ``removed/heldout_overlap.jsonl``, with its share in ``metadata["heldout_overlap"]``.
"""

from __future__ import annotations

import json
from pathlib import Path

from finloom.data.decontam import text_ngrams
from finloom.files import atomic_write_text

HELDOUT_DOMAINS = ("general_heldout", "finance_heldout")
TRAINING_DOMAINS = ("general", "finance")


def _documents(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def remove_heldout_overlap(clean_dir: Path, removed_dir: Path, word_n: int, char_n: int, max_share: float) -> dict:
    """Move held-out documents that overlap the training text out of ``clean_dir``; counts and shares found."""
    heldout = {domain: _documents(clean_dir / f"{domain}.jsonl") for domain in HELDOUT_DOMAINS}
    grams = {(domain, index): text_ngrams([doc.get("text", "")], word_n, char_n)
             for domain, docs in heldout.items() for index, doc in enumerate(docs)}
    wanted = set().union(*grams.values()) if grams else set()
    seen: set[str] = set()
    for domain in TRAINING_DOMAINS:
        path = clean_dir / f"{domain}.jsonl"
        if wanted and path.exists():
            with open(path, encoding="utf-8") as handle:
                for line in handle:
                    if line.strip():
                        seen |= text_ngrams([json.loads(line).get("text", "")], word_n, char_n) & wanted
    removed, shares = [], []
    for domain, docs in heldout.items():
        kept = []
        for index, doc in enumerate(docs):
            own = grams[domain, index]
            share = len(own & seen) / len(own) if own else 0.0
            shares.append(share)
            if share > max_share:
                doc.setdefault("metadata", {})["heldout_overlap"] = round(share, 4)
                removed.append(doc)
            else:
                kept.append(doc)
        if len(kept) != len(docs):
            atomic_write_text(clean_dir / f"{domain}.jsonl", "".join(json.dumps(d, ensure_ascii=False) + "\n" for d in kept))
    if removed:
        atomic_write_text(removed_dir / "heldout_overlap.jsonl",
                          "".join(json.dumps(d, ensure_ascii=False) + "\n" for d in removed))
    return {"checked": len(shares), "removed": len(removed), "max_share_found": round(max(shares, default=0.0), 4),
            "threshold": max_share}
