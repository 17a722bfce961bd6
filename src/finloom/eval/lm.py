"""An lm-evaluation-harness model for a model finloom already holds in memory.

lm-eval's own ``HFLM`` loads a model by name; the eval stage evaluates every stage's model in one
process and the forgetting experiment evaluates models it just trained, so ``FinloomLM`` wraps a
loaded model and tokenizer instead. It follows lm-eval's conventions exactly (context /
continuation encoding from ``TemplateLM``, truncation from the left to ``max_length``, log-softmax
in float32, greedy check) so its scores equal ``HFLM``'s (benchmarks/eval_mcq.py checks it), and
batches requests sorted by length, as ``HFLM`` does. API models go through lm-eval's own
``local-completions`` / ``local-chat-completions`` (see ``finloom.eval.harness``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from lm_eval.api.model import TemplateLM
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window


class FinloomLM(TemplateLM):
    def __init__(self, model, tokenizer, batch_size: int = 8, max_length: int | None = None,
                 max_gen_toks: int = 256, progress=None):
        super().__init__()
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self._max_length = max_length or min(4096, getattr(model.config, "max_position_embeddings", 2048))
        self.max_gen_toks = max_gen_toks
        self.progress = progress
        """Called with the number of requests finished after each batch (a progress bar)."""

    @property
    def eot_token_id(self) -> int:
        return self.tokenizer.eos_token_id

    @property
    def max_length(self) -> int:
        return self._max_length

    @property
    def device(self):
        return next(self.model.parameters()).device

    @property
    def tokenizer_name(self) -> str:
        return getattr(self.tokenizer, "name_or_path", "finloom").replace("/", "__")

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs) -> list[int]:
        return self.tokenizer(string, add_special_tokens=bool(add_special_tokens))["input_ids"]

    def apply_chat_template(self, chat_history: list[dict], add_generation_prompt: bool = True) -> str:
        return self.tokenizer.apply_chat_template(chat_history, tokenize=False,
                                                  add_generation_prompt=add_generation_prompt)

    def _advance(self, count: int) -> None:
        if self.progress:
            self.progress(count)

    @torch.no_grad()
    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs) -> list[tuple[float, bool]]:
        order = sorted(range(len(requests)), key=lambda i: -len(requests[i][1]) - len(requests[i][2]))
        results: list[tuple[float, bool] | None] = [None] * len(requests)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        for start in range(0, len(order), self.batch_size):
            batch = [requests[i] for i in order[start : start + self.batch_size]]
            inputs = [(context + continuation)[-(self.max_length + 1):][:-1] for _, context, continuation in batch]
            width = max(len(ids) for ids in inputs)
            tensor = torch.full((len(batch), width), pad, dtype=torch.long)
            attention = torch.zeros((len(batch), width), dtype=torch.long)
            for row, ids in enumerate(inputs):
                tensor[row, : len(ids)] = torch.tensor(ids)
                attention[row, : len(ids)] = 1
            logprobs = F.log_softmax(self.model(input_ids=tensor.to(self.device),
                                                attention_mask=attention.to(self.device)).logits.float(), dim=-1)
            for row, ((_, _, continuation), ids) in enumerate(zip(batch, inputs)):
                positions = torch.arange(len(ids) - len(continuation), len(ids))
                targets = torch.tensor(continuation, device=logprobs.device)
                scores = logprobs[row, positions.to(logprobs.device)]
                greedy = bool((scores.argmax(dim=-1) == targets).all())
                results[order[start + row]] = (float(scores.gather(-1, targets[:, None]).sum()), greedy)
            self._advance(len(batch))
        return results

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        """Whole-document log-likelihood over disjoint max_length windows (lm-eval's perplexity tasks)."""
        scores = []
        for (text,) in [request.args for request in requests]:
            windows = [make_disjoint_window(w) for w in get_rolling_token_windows(
                token_list=self.tok_encode(text), prefix_token=self.prefix_token_id,
                max_seq_len=self.max_length, context_len=1)]
            pieces = self._loglikelihood_tokens([(None, context, continuation) for context, continuation in windows])
            scores.append(sum(score for score, _ in pieces))
        return scores

    def loglikelihood(self, requests, disable_tqdm: bool = True):
        return super().loglikelihood(requests, disable_tqdm=True)  # progress goes to finloom's bar

    @torch.no_grad()
    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        """Greedy (or sampled) generation in left-padded batches of requests with the same settings."""
        replies: list[str | None] = [None] * len(requests)
        groups: dict[str, list[int]] = {}
        for index, request in enumerate(requests):
            groups.setdefault(repr(sorted((request.args[1] or {}).items())), []).append(index)
        for indices in groups.values():
            options = dict(requests[indices[0]].args[1] or {})
            until = options.pop("until", None) or []
            until = [until] if isinstance(until, str) else list(until)
            max_new = int(options.pop("max_gen_toks", self.max_gen_toks))
            sample = bool(options.pop("do_sample", False)) and float(options.get("temperature", 0)) > 0
            order = sorted(indices, key=lambda i: len(requests[i].args[0]))
            for start in range(0, len(order), self.batch_size):
                batch = order[start : start + self.batch_size]
                encoded = [self.tok_encode(requests[i].args[0])[-max(1, self.max_length - max_new):] for i in batch]
                width = max(len(ids) for ids in encoded)
                pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
                tensor = torch.full((len(batch), width), pad, dtype=torch.long)
                attention = torch.zeros((len(batch), width), dtype=torch.long)
                for row, ids in enumerate(encoded):
                    tensor[row, width - len(ids):] = torch.tensor(ids)
                    attention[row, width - len(ids):] = 1
                output = self.model.generate(
                    input_ids=tensor.to(self.device), attention_mask=attention.to(self.device), max_new_tokens=max_new,
                    do_sample=sample, temperature=options.get("temperature") if sample else None, top_p=None,
                    top_k=None, pad_token_id=pad)
                for row, index in enumerate(batch):
                    text = self.tokenizer.decode(output[row, width:], skip_special_tokens=True)
                    for stop in until:
                        if stop and stop in text:
                            text = text.split(stop)[0]
                    replies[index] = text
                self._advance(len(batch))
        return replies
