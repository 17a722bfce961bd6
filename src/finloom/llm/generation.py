"""Text generation with a local HF model: plain, chat-templated, and streamed.

One ``LocalGenerator`` serves ``finloom serve`` and the in-process backend of the teacher/judge
client, so both sample the same way. A lock serialises generation: one model, one forward at a time.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import TextIteratorStreamer

from finloom.llm.chat_template import PLAIN_TEMPLATE
from finloom.llm.loading import SAFE, load_causal_lm, load_tokenizer
from finloom.recipe import ModelLoading


@dataclass
class Generation:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str


class LocalGenerator:
    def __init__(self, model_dir: str | Path, loading: ModelLoading = SAFE):
        self.model_dir = Path(model_dir)
        self.tokenizer = load_tokenizer(model_dir, loading)
        if not self.tokenizer.chat_template:  # a base model: the plain template, as the chat stages would give it
            self.tokenizer.chat_template = PLAIN_TEMPLATE
        self.model = load_causal_lm(model_dir, loading)
        self.model.eval()
        self._lock = threading.Lock()

    @property
    def context_length(self) -> int:
        """Positions the model was built for: prompts longer are refused, generation stops at it."""
        return int(getattr(self.model.config, "max_position_embeddings", None) or 2048)

    def chat_prompt(self, messages: list[dict]) -> str:
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def _generate_kwargs(self, prompt: str, max_tokens: int, temperature: float, top_p: float, seed: int | None) -> dict:
        inputs = self.tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
        if seed is not None:
            torch.manual_seed(seed)
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
        )

    def generate(self, prompt: str, max_tokens: int = 128, temperature: float = 0.0, top_p: float = 1.0,
                 seed: int | None = None) -> Generation:
        kwargs = self._generate_kwargs(prompt, max_tokens, temperature, top_p, seed)
        prompt_len = kwargs["input_ids"].shape[1]
        with self._lock, torch.no_grad():
            output = self.model.generate(**kwargs)
        new_tokens = output[0, prompt_len:]
        text = self.tokenizer.decode(new_tokens, skip_special_tokens=True)
        stopped = len(new_tokens) < kwargs["max_new_tokens"]
        return Generation(text, prompt_len, len(new_tokens), "stop" if stopped else "length")

    def stream(self, prompt: str, max_tokens: int = 128, temperature: float = 0.0, top_p: float = 1.0,
               seed: int | None = None) -> Iterator[str]:
        """Yield text pieces as they are generated."""
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        kwargs = self._generate_kwargs(prompt, max_tokens, temperature, top_p, seed)

        def work() -> None:
            with self._lock, torch.no_grad():
                self.model.generate(**kwargs, streamer=streamer)

        thread = threading.Thread(target=work, daemon=True)
        thread.start()
        for piece in streamer:
            if piece:
                yield piece
        thread.join()

    @torch.no_grad()
    def prompt_logprobs(self, ids: list[int], top_n: int, max_tokens: int) -> dict:
        """OpenAI-style ``logprobs`` of a prompt (echo) and of ``max_tokens`` greedy tokens after it.

        ``token_logprobs[i]`` is log p(token i | tokens before it) (None for the first token);
        ``top_logprobs[i]`` the ``top_n`` most likely tokens at that position. This is what
        evaluation harnesses read to score multiple-choice answers through an API.
        """
        with self._lock:
            sequence = list(ids)
            for _ in range(max_tokens):
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
