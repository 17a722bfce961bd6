"""Prompt embeddings for near-duplicate removal, template search and clustering, all offline.

- ``wordllama``: WordLlama's static token embeddings (256 dimensions, Llama-2 tokenizer), which ship
  inside its PyPI wheel; read straight from the installed package, because its loader looks for the
  tokenizer in a folder the wheel does not have and then tries the network.
- ``hashed``: character 1-4-gram and word n-gram counts (``finloom.data.classifier``'s features)
  through a fixed sparse random projection; no model at all, and Chinese is read by its characters.
- a directory: any sentence-transformers model the user has on disk.

Every embedding comes back L2-normalised, so a dot product is the cosine similarity.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from finloom.errors import BadInput

HASHED_DIMENSIONS = 256
BATCH = 512


def _normalised(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


def _wordllama():
    try:
        import wordllama
        from safetensors import safe_open
        from wordllama import WordLlama
        from wordllama.inference import WordLlamaInference
    except ImportError:
        raise BadInput("prompts.selection.embedding: wordllama is not installed (pip install wordllama)") from None
    root = Path(wordllama.__file__).parent
    weights, tokenizer = root / "weights" / "l2_supercat_256.safetensors", root / "tokenizers" / "l2_supercat_tokenizer_config.json"
    if not weights.exists() or not tokenizer.exists():
        raise BadInput(f"prompts.selection.embedding: the wordllama package at {root} lacks its bundled weights")
    with safe_open(str(weights), framework="np") as handle:
        matrix = handle.get_tensor("embedding.weight")
    model = WordLlamaInference(matrix, WordLlama.load_tokenizer(tokenizer))
    return lambda texts: model.embed(texts, norm=True)


def _hashed():
    from scipy.sparse import csr_matrix
    from sklearn.random_projection import SparseRandomProjection

    from finloom.data.classifier import FeatureSettings, featurize

    settings = FeatureSettings(buckets_log2=18, max_chars=2000)
    projection = SparseRandomProjection(HASHED_DIMENSIONS, dense_output=True, random_state=0).fit(
        csr_matrix((1, 1 << settings.buckets_log2), dtype=np.float32))

    def embed(texts: list[str]) -> np.ndarray:
        indptr, indices, values = featurize(texts, settings)
        matrix = csr_matrix((values.astype(np.float32), indices, indptr), shape=(len(texts), 1 << settings.buckets_log2))
        return projection.transform(matrix)

    return embed


def _sentence_transformers(path: Path):
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise BadInput(f"prompts.selection.embedding: {path} needs sentence-transformers "
                       "(pip install sentence-transformers)") from None
    model = SentenceTransformer(str(path), device="cpu", local_files_only=True)
    return lambda texts: model.encode(texts, batch_size=64, normalize_embeddings=True)


def embedder(name: str, resolve):
    """A function from texts to normalised embeddings, for the recipe's ``selection.embedding``."""
    if name == "wordllama":
        return _wordllama()
    if name == "hashed":
        return _hashed()
    path = resolve(name)
    if not path.is_dir():
        raise BadInput(f"prompts.selection.embedding: {name!r} is neither wordllama, hashed nor a model directory")
    return _sentence_transformers(path)


def embed(texts: list[str], embed_fn, progress=None) -> np.ndarray:
    """Embeddings of ``texts`` in batches (``progress(n)`` after each), shape (len(texts), dimensions)."""
    parts = []
    for start in range(0, len(texts), BATCH):
        parts.append(_normalised(embed_fn(texts[start:start + BATCH])))
        if progress:
            progress(len(parts[-1]))
    return np.concatenate(parts) if parts else np.zeros((0, HASHED_DIMENSIONS), dtype=np.float32)
