"""Selection for diversity: duplicates, near duplicates, template repeats, clusters, quotas.

Each function takes prompts by index and returns which it drops and why, so the stage can keep one
decision per prompt and the counts add up. Both near duplicates and template repeats are embedding
neighbours (each prompt's nearest earlier prompts, searched exactly) confirmed by the longest common
token subsequence (LCS). A near duplicate's LCS covers nearly all of the shorter prompt (a typo, an
appended line). A template repeat's LCS covers most of the longer prompt and is itself long: the
shared frame of a "template + context" prompt, not the two words "What is" of two questions about
different things. k-means clusters order the kept set for diversity.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections import defaultdict

import numpy as np

from finloom.recipe import NearDuplicateSettings, Quota, TemplateSettings

_TOKEN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]|\w+|[^\w\s]")


def normalised(text: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def tokens(text: str) -> list[str]:
    """Words, and Han characters one by one (Chinese has no spaces)."""
    return _TOKEN.findall(normalised(text))


def lcs_length(a: list, b: list) -> int:
    """Length of the longest common subsequence, by Hyyrö's bit-parallel algorithm: one big-integer
    addition per token of ``b`` instead of a row of the dynamic programme."""
    if not a or not b:
        return 0
    masks: dict = {}
    for position, token in enumerate(a):
        masks[token] = masks.get(token, 0) | (1 << position)
    full = (1 << len(a)) - 1
    row = full
    for token in b:
        matched = row & masks.get(token, 0)
        row = ((row + matched) | (row - matched)) & full
    return len(a) - row.bit_count()


def exact_duplicates(texts: list[str]) -> dict[int, int]:
    """Index -> index of the first prompt with the same normalised text."""
    first: dict[str, int] = {}
    duplicates = {}
    for index, text in enumerate(texts):
        key = normalised(text)
        if key in first:
            duplicates[index] = first[key]
        else:
            first[key] = index
    return duplicates


def cluster(embeddings: np.ndarray, clusters: int, seed: int) -> np.ndarray:
    """A k-means cluster per row (k = ``clusters``, or about sqrt(n / 2))."""
    count = len(embeddings)
    k = clusters or max(1, round(math.sqrt(count / 2)))
    k = min(k, count)
    if k <= 1:
        return np.zeros(count, dtype=np.int64)
    from sklearn.cluster import MiniBatchKMeans

    model = MiniBatchKMeans(n_clusters=k, random_state=seed, n_init=3, batch_size=2048)
    return model.fit_predict(embeddings).astype(np.int64)


def _members(labels: np.ndarray, candidates: list[int]) -> dict[int, list[int]]:
    groups: dict[int, list[int]] = defaultdict(list)
    for index in candidates:
        groups[int(labels[index])].append(index)
    return groups


SEARCH_BLOCK = 512


def similar_pairs(embeddings: np.ndarray, threshold: float, neighbours: int) -> list[tuple[int, int, float]]:
    """(later, earlier, cosine) for each row's ``neighbours`` most similar earlier rows at or above
    ``threshold``: an exact search, block by block, so memory stays at ``SEARCH_BLOCK`` x n similarities, and
    the pairs grow as n x neighbours, not n squared, in a pool where most prompts share a frame."""
    pairs = []
    for start in range(0, len(embeddings), SEARCH_BLOCK):
        end = min(start + SEARCH_BLOCK, len(embeddings))
        block = embeddings[start:end] @ embeddings[:end].T
        block[np.arange(end)[None, :] >= np.arange(start, end)[:, None]] = -np.inf  # earlier rows only
        k = min(neighbours, end - 1)
        if k <= 0:
            continue
        top = np.argpartition(-block, k - 1, axis=1)[:, :k]
        for row, cols in enumerate(top):
            for col in cols.tolist():
                if block[row, col] >= threshold:
                    pairs.append((start + row, col, round(float(block[row, col]), 4)))
    return pairs


def near_duplicates(texts: list[str], pairs: list[tuple[int, int, float]],
                    settings: NearDuplicateSettings) -> dict[int, tuple[int, float]]:
    """Index -> (the earlier kept prompt it nearly repeats, their cosine), in input order, from ``similar_pairs``."""
    token_lists: dict[int, list[str]] = {}
    earlier: dict[int, list[tuple[int, float]]] = defaultdict(list)
    for later, first, similarity in pairs:
        if similarity >= settings.candidate_similarity:
            earlier[later].append((first, similarity))
    found: dict[int, tuple[int, float]] = {}
    for index in sorted(earlier):
        for first, similarity in sorted(earlier[index], key=lambda pair: -pair[1]):
            if first in found:
                continue
            a = token_lists.setdefault(index, tokens(texts[index]))
            b = token_lists.setdefault(first, tokens(texts[first]))
            shorter = min(len(a), len(b))
            if shorter >= settings.min_tokens and lcs_length(a, b) >= settings.min_shared * shorter:
                found[index] = (first, similarity)
                break
    return found


def template_families(texts: list[str], pairs: list[tuple[int, int, float]], candidates: list[int],
                      settings: TemplateSettings) -> list[list[int]]:
    """Groups of two or more ``candidates`` sharing a long frame, joined through template pairs among
    ``similar_pairs``."""
    parent = {index: index for index in candidates}

    def root(index: int) -> int:
        while parent[index] != index:
            parent[index] = parent[parent[index]]
            index = parent[index]
        return index

    token_lists: dict[int, list[str]] = {}
    for a, b, similarity in pairs:
        if similarity < settings.candidate_similarity or a not in parent or b not in parent or root(a) == root(b):
            continue
        first = token_lists.setdefault(a, tokens(texts[a]))
        second = token_lists.setdefault(b, tokens(texts[b]))
        if min(len(first), len(second)) < settings.min_frame_tokens:
            continue
        shared = lcs_length(first, second)
        if shared >= settings.min_frame_tokens and shared >= settings.min_shared * max(len(first), len(second)):
            parent[root(b)] = root(a)
    families: dict[int, list[int]] = defaultdict(list)
    for index in candidates:
        families[root(index)].append(index)
    return [sorted(group) for group in families.values() if len(group) > 1]


def diversity_order(labels: np.ndarray, candidates: list[int], score: dict[int, float]) -> list[int]:
    """Round-robin over clusters, each cluster best-scored first: the order the kept set is filled in."""
    queues = [sorted(members, key=lambda i: (-score.get(i, 0.0), i)) for _, members in
              sorted(_members(labels, candidates).items())]
    order = []
    for depth in range(max((len(q) for q in queues), default=0)):
        order += [queue[depth] for queue in queues if depth < len(queue)]
    return order


def apply_quotas(order: list[int], tags: dict[int, dict[str, str]], quotas: dict[str, dict[str, Quota]],
                 budget: int | None) -> tuple[list[int], dict[int, str], dict[str, dict]]:
    """Fill the kept set in ``order``: first each minimum share's prompts, then the rest, a value never passing
    its maximum share of the budget; then, if the set came out smaller than the budget, trim each value back to
    its maximum share of what was kept. Returns (kept, {index: reason}, shortfalls)."""
    budget = min(budget or len(order), len(order))
    limits = [(dimension, value, quota) for dimension, values in quotas.items() for value, quota in values.items()]
    counts: dict[tuple[str, str], int] = defaultdict(int)
    kept: list[int] = []
    reasons: dict[int, str] = {}

    def capped(index: int) -> str | None:
        for dimension, value, quota in limits:
            if tags[index].get(dimension) == value and counts[dimension, value] + 1 > quota.max_share * budget:
                return f"quota:{dimension}={value}"
        return None

    def count(index: int, step: int) -> None:
        for dimension, value, _ in limits:
            if tags[index].get(dimension) == value:
                counts[dimension, value] += step

    reserved = [(d, v, q) for d, v, q in limits if q.min_share > 0]
    for dimension, value, quota in reserved:
        wanted = math.ceil(quota.min_share * budget)
        for index in order:
            if counts[dimension, value] >= wanted or len(kept) >= budget:
                break
            if index not in kept and tags[index].get(dimension) == value and capped(index) is None:
                kept.append(index)
                count(index, 1)
    chosen = set(kept)
    for index in order:
        if index in chosen:
            continue
        reason = capped(index) if len(kept) < budget else "over_budget"
        if reason is None:
            kept.append(index)
            chosen.add(index)
            count(index, 1)
        else:
            reasons[index] = reason
    trimmed = True
    while trimmed:  # a set smaller than the budget: shares are of what was kept
        trimmed = False
        for dimension, value, quota in limits:
            if counts[dimension, value] > quota.max_share * len(kept):
                last = next(i for i in reversed(kept) if tags[i].get(dimension) == value)
                kept.remove(last)
                count(last, -1)
                reasons[last] = f"quota:{dimension}={value}"
                trimmed = True
    shortfalls = {}
    for dimension, value, quota in reserved:
        share = counts[dimension, value] / max(1, len(kept))
        if share < quota.min_share:
            shortfalls[f"{dimension}={value}"] = {"min_share": quota.min_share, "share": round(share, 4),
                                                  "available": sum(tags[i].get(dimension) == value for i in order)}
    return kept, reasons, shortfalls
