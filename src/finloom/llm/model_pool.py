"""The models one ``finloom serve`` answers with: one model directory, or every chat model of a run.

A run directory holds a model per chat stage (sft, merge, align); serving the run lets a client compare
them through one endpoint. Models load on first use and only ``max_loaded`` stay in memory, so a run of
large models fits on one machine; the least recently used one leaves first.
"""

from __future__ import annotations

import gc
import threading
from collections import OrderedDict
from pathlib import Path

from finloom.errors import BadInput
from finloom.llm.generation import LocalGenerator
from finloom.recipe import ModelLoading
from finloom.stages import MODEL_STAGES, STAGES, read_manifest


def is_model_dir(path: Path) -> bool:
    return (Path(path) / "config.json").is_file()


def model_dir_name(model_dir: Path) -> str:
    """A stage model lives in RUN/STAGE/model: it is named "RUN/STAGE"; any other directory by its own name."""
    resolved = Path(model_dir).resolve()
    return "/".join(resolved.parts[-3:-1]) if resolved.name == "model" else resolved.name


def run_chat_models(run_dir: Path) -> dict[str, Path]:
    """Each completed chat stage's model in ``run_dir``, by stage name, in pipeline order (the newest last)."""
    models = {}
    for stage in MODEL_STAGES:
        manifest = read_manifest(run_dir, stage)
        if STAGES[stage].chat and manifest and manifest.get("status") == "done" and "model" in manifest.get("outputs", {}):
            models[stage] = Path(run_dir) / manifest["outputs"]["model"]
    return models


def served_models(path: Path, model_name: str | None = None) -> dict[str, Path]:
    """Name -> model directory for ``finloom serve PATH``: PATH itself when it is a model directory, else the
    chat models of the run in PATH. The last entry is the default model."""
    if is_model_dir(path):
        return {model_name or model_dir_name(path): Path(path)}
    models = run_chat_models(path)
    if not models:
        chat = ", ".join(name for name in MODEL_STAGES if STAGES[name].chat)
        raise BadInput(f"serve: {path} is neither a model directory (no config.json) nor a run with a completed "
                       f"chat stage ({chat})")
    if model_name:
        raise BadInput("--model-name: names the model of a model directory; a run's models are named by stage")
    return models


class ModelPool:
    """Generators by model name, loaded on first use; at most ``max_loaded`` stay loaded (LRU)."""

    def __init__(self, directories: dict[str, Path], loading: ModelLoading, max_loaded: int):
        self.directories = directories
        self.default = list(directories)[-1]
        self.max_loaded = max_loaded
        self._loading = loading
        self._loaded: OrderedDict[str, LocalGenerator] = OrderedDict()
        self._lock = threading.Lock()
        self._load_lock = threading.Lock()

    @property
    def loaded(self) -> list[str]:
        """Loaded model names, least recently used first."""
        with self._lock:
            return list(self._loaded)

    def get(self, name: str) -> LocalGenerator:
        """The model ``name``, loading it (one load at a time) and unloading the least recently used beyond
        ``max_loaded``. A request still using an unloaded model keeps it alive until it finishes."""
        with self._lock:
            if name in self._loaded:
                self._loaded.move_to_end(name)
                return self._loaded[name]
        with self._load_lock:
            with self._lock:
                if name in self._loaded:
                    return self._loaded[name]
            generator = LocalGenerator(self.directories[name], self._loading)
            with self._lock:
                self._loaded[name] = generator
                unloading = len(self._loaded) > self.max_loaded
                while len(self._loaded) > self.max_loaded:
                    self._loaded.popitem(last=False)
            if unloading:
                gc.collect()  # the unloaded model's tensors go now, not at some later collection
        return generator
