"""lm-evaluation-harness's own ``HFLM`` on a model finloom already holds in memory, with finloom's progress bar.

The eval stage evaluates every stage's model in one process and the studies evaluate models they
just trained, so the model is passed in, loaded (``HFLM`` accepts a model object and its
tokenizer). Everything else is lm-eval's: encoding (a tokenizer that adds BOS gets it exactly as
``lm_eval --model hf`` gives it), truncation, batching, the log-likelihood cache, generation. So
finloom's scores are lm-eval's scores, at lm-eval's speed (benchmarks/eval_mcq.py checks both).
Two changes: lm-eval reports progress through tqdm, which finloom routes to its rich bar; and
generation asks for ``max_new_tokens`` rather than HFLM's ``max_length``. A model whose
``generation_config`` sets ``max_new_tokens`` (finloom's scratch models do: 128) overrides
``max_length`` in transformers, so HFLM let such a model write up to 128 tokens where the task asked
for 32: longer replies than the benchmark allows, and 1.8x the eval time (measured on the quickstart).
API models go through lm-eval's own ``local-completions`` / ``local-chat-completions``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import lm_eval.models.huggingface as lm_eval_hf
from lm_eval.models.huggingface import HFLM


class FinloomLM(HFLM):
    def __init__(self, model, tokenizer, batch_size: int = 8, max_length: int | None = None,
                 max_gen_toks: int = 256, progress: Callable[[int | None, int], None] | None = None):
        """``progress(total, advance)``: called with a request count when lm-eval starts a pass over requests
        (``advance`` 0), then with ``total`` None and the number finished, request by request."""
        super().__init__(pretrained=model.eval(), tokenizer=tokenizer, batch_size=batch_size, max_length=max_length)
        self._finloom_max_gen_toks = max_gen_toks
        self.progress = progress

    @property
    def max_gen_toks(self) -> int:
        return self._finloom_max_gen_toks

    @contextlib.contextmanager
    def _reporting(self):
        """lm-eval's tqdm bars, inside this block, report to ``progress`` instead of printing."""
        progress = self.progress

        class Bar:
            def __init__(self, total=None, **_):
                if progress:
                    progress(total or 0, 0)

            def update(self, count: int = 1) -> None:
                if progress:
                    progress(None, count)

            def close(self) -> None:
                pass

        original = lm_eval_hf.tqdm
        lm_eval_hf.tqdm = Bar
        try:
            yield
        finally:
            lm_eval_hf.tqdm = original

    def _loglikelihood_tokens(self, *args, **kwargs):
        with self._reporting():
            return super()._loglikelihood_tokens(*args, **kwargs)

    def generate_until(self, *args, **kwargs):
        with self._reporting():
            return super().generate_until(*args, **kwargs)

    def _model_generate(self, context, max_length: int, stop: list[str], **generation_kwargs):
        """HFLM's generation, with the task's token budget as ``max_new_tokens`` (which a model's own generation
        config cannot override)."""
        return super()._model_generate(context, max_length, stop, max_new_tokens=max_length - context.shape[1],
                                       **generation_kwargs)
