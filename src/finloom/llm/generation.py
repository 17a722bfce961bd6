"""Text generation with a local HF model: plain, chat-templated, and streamed.

One ``LocalGenerator`` serves ``finloom serve`` and the in-process backend of the teacher/judge
client, so both sample the same way. A lock serialises generation: one model, one forward at a time.
An ``Interrupt`` stops a generation at its next token, so a request out of time, or whose client
went away, frees the model at once instead of running to ``max_tokens``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

from finloom.llm.chat_template import PLAIN_TEMPLATE
from finloom.llm.loading import SAFE, load_causal_lm, load_tokenizer
from finloom.recipe import ModelLoading


@dataclass
class Generation:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str
    """"stop" (end of turn), "length" (``max_tokens`` or the context) or "timeout" (an ``Interrupt`` fired)."""


class Interrupt(StoppingCriteria):
    """Stops a generation at its next token once ``deadline`` (a ``time.monotonic()`` value) has passed or
    ``cancel()`` was called; ``fired`` tells afterwards whether it cut the generation short."""

    def __init__(self, deadline: float | None = None):
        self.deadline = deadline
        self.fired = False
        self._cancelled = threading.Event()

    def cancel(self) -> None:
        self._cancelled.set()

    def stopped(self) -> bool:
        self.fired = self.fired or self._cancelled.is_set() or (
            self.deadline is not None and time.monotonic() >= self.deadline)
        return self.fired

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs) -> torch.Tensor:
        return torch.full((input_ids.shape[0],), self.stopped(), dtype=torch.bool, device=input_ids.device)


class LocalGenerator:
    def __init__(self, model_dir: str | Path, loading: ModelLoading = SAFE):
        self.model_dir = Path(model_dir)
        self.tokenizer = load_tokenizer(model_dir, loading)
        if not self.tokenizer.chat_template:  # a base model: the plain template, as the chat stages would give it
            self.tokenizer.chat_template = PLAIN_TEMPLATE
        self.model = load_causal_lm(model_dir, loading)
        self.model.eval()
        self.lock = threading.Lock()
        """Held while the model generates: one generation at a time on this model."""

    @property
    def context_length(self) -> int:
        """Positions the model was built for: prompts longer are refused, generation stops at it."""
        return int(getattr(self.model.config, "max_position_embeddings", None) or 2048)

    def chat_prompt(self, messages: list[dict]) -> str:
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def _generate_kwargs(self, prompt: str, max_tokens: int, temperature: float, top_p: float,
                         interrupt: Interrupt) -> dict:
        inputs = self.tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
        sample = temperature > 0
        room = max(1, self.context_length - inputs["input_ids"].shape[1])
        return dict(
            **inputs,
            max_new_tokens=min(max_tokens, room),
            do_sample=sample,
            temperature=temperature if sample else None,
            top_p=top_p if sample else None,
            top_k=None,
            pad_token_id=self.tokenizer.pad_token_id,
            stopping_criteria=StoppingCriteriaList([interrupt]),
        )

    def _run(self, kwargs: dict, seed: int | None, interrupt: Interrupt) -> Generation:
        """Generate under the lock; the seed is set there too, so a concurrent request cannot reseed in between."""
        with self.lock, torch.no_grad():
            if seed is not None:
                torch.manual_seed(seed)
            output = self.model.generate(**kwargs)
        prompt_len = kwargs["input_ids"].shape[1]
        new_tokens = output[0, prompt_len:]
        text = self.tokenizer.decode(new_tokens, skip_special_tokens=True)
        if interrupt.fired:
            finish = "timeout"
        else:
            finish = "stop" if len(new_tokens) < kwargs["max_new_tokens"] else "length"
        return Generation(text, prompt_len, len(new_tokens), finish)

    def generate(self, prompt: str, max_tokens: int = 128, temperature: float = 0.0, top_p: float = 1.0,
                 seed: int | None = None, interrupt: Interrupt | None = None) -> Generation:
        interrupt = interrupt or Interrupt()
        return self._run(self._generate_kwargs(prompt, max_tokens, temperature, top_p, interrupt), seed, interrupt)

    def stream(self, prompt: str, max_tokens: int = 128, temperature: float = 0.0, top_p: float = 1.0,
               seed: int | None = None, interrupt: Interrupt | None = None) -> TextStream:
        """Text pieces as they are generated (in a thread); ``interrupt.cancel()`` stops generating."""
        interrupt = interrupt or Interrupt()
        kwargs = self._generate_kwargs(prompt, max_tokens, temperature, top_p, interrupt)
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        return TextStream(lambda: self._run({**kwargs, "streamer": streamer}, seed, interrupt), streamer)

    @torch.no_grad()
    def prompt_logprobs(self, ids: list[int], top_n: int, max_tokens: int, interrupt: Interrupt | None = None) -> dict:
        """OpenAI-style ``logprobs`` of a prompt (echo) and of ``max_tokens`` greedy tokens after it.

        ``token_logprobs[i]`` is log p(token i | tokens before it) (None for the first token);
        ``top_logprobs[i]`` the ``top_n`` most likely tokens at that position. This is what
        evaluation harnesses read to score multiple-choice answers through an API. The greedy tokens stop at
        the model's context, or early at an ``interrupt`` (``interrupt.fired`` then tells so).
        """
        with self.lock:
            sequence = list(ids)
            for _ in range(min(max_tokens, self.context_length - len(ids))):
                if interrupt is not None and interrupt.stopped():
                    break
                logits = self.model(input_ids=torch.tensor([sequence])).logits[0, -1]
                sequence.append(int(logits.argmax()))
            logprobs = torch.log_softmax(self.model(input_ids=torch.tensor([sequence])).logits[0].float(), dim=-1)
        tokens = [self.tokenizer.decode([token]) for token in sequence]
        token_logprobs: list[float | None] = [None]
        top_logprobs: list[dict | None] = [None]
        for position in range(1, len(sequence)):
            row = logprobs[position - 1]
            token_logprobs.append(float(row[sequence[position]]))
            values, indices = row.topk(max(top_n, 1))
            top_logprobs.append({self.tokenizer.decode([int(i)]): float(v) for v, i in zip(values, indices)})
        offsets, position = [], 0
        for token in tokens:
            offsets.append(position)
            position += len(token)
        return {"text": "".join(tokens[len(ids):]), "all_text": "".join(tokens),
                "logprobs": {"tokens": tokens, "token_logprobs": token_logprobs, "top_logprobs": top_logprobs,
                             "text_offset": offsets},
                "prompt_tokens": len(ids), "completion_tokens": len(sequence) - len(ids)}


class TextStream:
    """One generation's text pieces as they come; once they are all read, ``generation`` holds its token counts
    and finish reason."""

    def __init__(self, run, streamer: TextIteratorStreamer):
        self.generation: Generation | None = None
        self._streamer = streamer
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._work, args=(run,), daemon=True)
        self._thread.start()

    def _work(self, run) -> None:
        try:
            self.generation = run()
        except BaseException as error:  # re-raised to the reader; ending the streamer unblocks it
            self._error = error
            self._streamer.end()

    def __iter__(self) -> Iterator[str]:
        for piece in self._streamer:
            if piece:
                yield piece
        self._thread.join()
        if self._error is not None:
            raise self._error
