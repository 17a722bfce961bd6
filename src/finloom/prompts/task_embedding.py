"""A task-aware embedding for template search (Baichuan Alignment): prompts that share a task frame ("template +
context") close together, prompts that only share a subject apart.

A generic sentence embedding averages over the whole prompt, so two fills of one frame with long, different
contexts can sit further apart than two different tasks on the same subject, and the template search, which only
compares embedding neighbours, never sees them. The report's answer: fine-tune the embedding with a triplet loss
on hard pairs mined by longest common subsequence inside clusters. Here:

- inside each k-means cluster of the generic embedding, each prompt is compared by token LCS with up to
  ``compare`` others of its cluster; a *positive* shares a frame (the LCS is at least ``min_frame_tokens`` long and
  covers ``frame_share`` of the shorter prompt), a *negative* shares little (at most ``other_share``);
- the hardest of each (the least similar positive, the most similar negative, by the generic embedding) make
  the anchor's triplet;
- a linear map of the generic embedding, started at the identity, is trained on the triplets with a margin loss
  on cosine distance and a pull toward the identity (``identity_weight``), so what the generic embedding knows
  about everything else stays; a few seconds on a CPU.

The template search then looks for neighbours in the mapped embedding; the LCS rule still decides.
"""

from __future__ import annotations

import random

import numpy as np

from finloom.prompts.select import lcs_length, tokens
from finloom.recipe import TaskAwareSettings


def mine_triplets(texts: list[str], vectors: np.ndarray, labels: np.ndarray, settings: TaskAwareSettings,
                  min_frame_tokens: int, seed: int) -> list[tuple[int, int, int]]:
    """(anchor, positive, negative) row triplets, at most one per anchor."""
    rng = random.Random(seed)
    token_lists = [tokens(text) for text in texts]
    clusters: dict[int, list[int]] = {}
    for index, label in enumerate(labels.tolist()):
        clusters.setdefault(label, []).append(index)
    triplets = []
    for members in clusters.values():
        for anchor in members:
            if len(token_lists[anchor]) < min_frame_tokens:
                continue
            others = [m for m in members if m != anchor]
            positives, negatives = [], []
            for other in rng.sample(others, min(settings.compare, len(others))):
                shared = lcs_length(token_lists[anchor], token_lists[other])
                share = shared / max(1, min(len(token_lists[anchor]), len(token_lists[other])))
                if shared >= min_frame_tokens and share >= settings.frame_share:
                    positives.append(other)
                elif share <= settings.other_share:
                    negatives.append(other)
            if positives and negatives:
                similarity = vectors[anchor]
                positive = min(positives, key=lambda m: float(similarity @ vectors[m]))
                negative = max(negatives, key=lambda m: float(similarity @ vectors[m]))
                triplets.append((anchor, positive, negative))
    return triplets


def train_projection(vectors: np.ndarray, triplets: list[tuple[int, int, int]], settings: TaskAwareSettings,
                     seed: int) -> tuple[np.ndarray, dict]:
    """The trained linear map (dimensions x dimensions) and the triplet loss before and after."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    data = torch.from_numpy(np.ascontiguousarray(vectors, dtype=np.float32))
    index = torch.tensor(triplets, dtype=torch.long)
    identity = torch.eye(data.shape[1])
    weight = torch.nn.Parameter(identity.clone())
    optimiser = torch.optim.Adam([weight], lr=settings.learning_rate)

    def triplet_loss(rows: torch.Tensor) -> torch.Tensor:
        mapped = torch.nn.functional.normalize(data[rows.reshape(-1)] @ weight, dim=-1).reshape(len(rows), 3, -1)
        positive = 1 - (mapped[:, 0] * mapped[:, 1]).sum(-1)
        negative = 1 - (mapped[:, 0] * mapped[:, 2]).sum(-1)
        return torch.relu(positive - negative + settings.margin).mean()

    with torch.no_grad():
        before = float(triplet_loss(index))
    for _ in range(settings.epochs):
        for batch in torch.randperm(len(index), generator=generator).split(settings.batch_size):
            loss = triplet_loss(index[batch]) + settings.identity_weight * ((weight - identity) ** 2).mean()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    with torch.no_grad():
        after = float(triplet_loss(index))
    return weight.detach().numpy(), {"triplets": len(triplets), "triplet_loss_before": round(before, 4),
                                     "triplet_loss_after": round(after, 4)}


def task_aware_vectors(texts: list[str], vectors: np.ndarray, labels: np.ndarray, settings: TaskAwareSettings,
                       min_frame_tokens: int, seed: int) -> tuple[np.ndarray, dict]:
    """The mapped, normalised embedding of every prompt (the generic one where no triplet was found)."""
    triplets = mine_triplets(texts, vectors, labels, settings, min_frame_tokens, seed)
    if not triplets:
        return vectors, {"triplets": 0}
    weight, metrics = train_projection(vectors, triplets, settings, seed)
    mapped = vectors @ weight
    return mapped / np.maximum(np.linalg.norm(mapped, axis=1, keepdims=True), 1e-12), metrics
