"""Chat templates as users' models ship them: Llama-3, Qwen, Mistral, ChatML, or none at all.

Three things every chat stage needs, for any template:

- **a template**: the model's own; else the recipe's ``model.chat_template`` (a built-in name or a
  Jinja file); else ``plain``, which uses only the tokenizer's existing EOS token, so a base model
  needs no new, untrained special tokens. The template chosen is set on the tokenizer, so it is
  saved with every chat model finloom writes, and serve, eval and the RL stages use the same one.
- **assistant-only loss masks without ``{% generation %}`` markers**: the text of assistant turn i is
  what rendering the first i+1 messages adds to rendering the first i with the generation prompt.
  That holds for every *prefix-preserving* template (each rendering starts with the one before); a
  template that is not gets a clear error before training starts.
- **where a turn ends**: the token the template writes after an assistant's content (``<|im_end|>``,
  ``<|eot_id|>``, ``</s>``) joins the generation config's EOS ids, so generation stops at the end of
  a turn and not only at the end of a document.
"""

from __future__ import annotations

from pathlib import Path

from finloom.errors import BadInput

PLAIN_TEMPLATE = (  # text in string literals: Jinja's whitespace control never eats the separators
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'system' -%}{{- message['content'] + '\\n\\n' }}"
    "{%- elif message['role'] == 'user' -%}{{- '### User:\\n' + message['content'] + '\\n\\n' }}"
    "{%- else -%}{{- '### Assistant:\\n' + message['content'] + eos_token + '\\n\\n' }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '### Assistant:\\n' }}{%- endif -%}"
)
CHATML_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' }}{%- endif -%}"
)
BUILT_IN = {"plain": PLAIN_TEMPLATE, "chatml": CHATML_TEMPLATE}
CHATML_TOKENS = ("<|im_start|>", "<|im_end|>")

# A conversation every check renders: a system prompt, two exchanges.
PROBE = [{"role": "system", "content": "You are a careful assistant."},
         {"role": "user", "content": "What is a bond?"}, {"role": "assistant", "content": "A debt security."},
         {"role": "user", "content": "And a share?"}, {"role": "assistant", "content": "Part ownership."}]


def template_source(name_or_path: str, resolve=Path) -> str:
    """A built-in template by name, or the text of a Jinja file."""
    if name_or_path in BUILT_IN:
        return BUILT_IN[name_or_path]
    path = resolve(name_or_path)
    if not Path(path).is_file():
        raise BadInput(f"model.chat_template: {name_or_path!r} is neither a built-in template "
                       f"({', '.join(BUILT_IN)}) nor a file")
    return Path(path).read_text(encoding="utf-8")


def ensure_chat_template(tokenizer, configured: str | None = None, resolve=Path) -> str:
    """Give ``tokenizer`` the template the chat stages use and check it; returns where it came from.

    ``configured`` (the recipe's ``model.chat_template``) wins over the model's own; a model without one gets
    ``plain``. ChatML's tokens are added to the vocabulary only when ``chatml`` is asked for (the model must
    then be resized, ``resize_for_template``)."""
    if configured:
        tokenizer.chat_template = template_source(configured, resolve)
        if configured == "chatml":
            missing = [t for t in CHATML_TOKENS if t not in tokenizer.get_vocab()]
            if missing:
                tokenizer.add_special_tokens({"additional_special_tokens": missing})
        origin = f"the template {configured!r}"
    elif tokenizer.chat_template:
        origin = "the model's own"
    else:
        tokenizer.chat_template = PLAIN_TEMPLATE
        origin = "plain (the model has none; set model.chat_template to choose another)"
    if tokenizer.eos_token is None:
        raise BadInput("model.hf: the tokenizer has no EOS token, which ends every assistant turn; give one in its "
                       "tokenizer_config.json")
    check_prefix_preserving(tokenizer, origin)
    return origin


def resize_for_template(model, tokenizer) -> None:
    """Grow the embeddings when the template added tokens (``chatml`` on a model without them)."""
    if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(len(tokenizer))


def _render(tokenizer, messages: list[dict], generation_prompt: bool = False) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)


def check_prefix_preserving(tokenizer, origin: str = "the chat template") -> None:
    """Raise naming the fix when rendering more messages does not extend the text of fewer (then the
    assistant spans cannot be found from the template alone)."""
    for end in range(1, len(PROBE) + 1):
        if PROBE[end - 1]["role"] != "assistant":
            continue
        before, after = _render(tokenizer, PROBE[:end - 1], True), _render(tokenizer, PROBE[:end])
        if not after.startswith(before) or not _render(tokenizer, PROBE).startswith(after):
            raise BadInput(f"model.chat_template: {origin} is not prefix-preserving (rendering a conversation "
                           f"with one more message changes the text before it), so assistant turns cannot be "
                           f"masked; give model.chat_template a template that is (a Jinja file, or 'plain' / "
                           f"'chatml')")


class TemplateMismatch(ValueError):
    """The template renders this conversation's turns in a way that does not extend the turns before."""


def assistant_char_spans(tokenizer, messages: list[dict]) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character span of every assistant turn's content and end-of-turn
    text (trailing whitespace left out)."""
    text, spans = _render(tokenizer, messages), []
    for index, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before, turn = _render(tokenizer, messages[:index], True), _render(tokenizer, messages[:index + 1])
        if not turn.startswith(before) or not text.startswith(turn):
            raise TemplateMismatch(f"the chat template renders assistant turn {index} differently inside the "
                                   "whole conversation, so its tokens cannot be found")
        spans.append((len(before), len(turn.rstrip())))
    return text, spans


def tokenize_with_assistant_mask(tokenizer, messages: list[dict], max_length: int) -> dict:
    """``input_ids`` and ``labels`` (-100 outside assistant turns) of a conversation, cut at ``max_length``.

    A token counts as the assistant's when it begins inside an assistant span. The rendered text already
    holds the template's BOS, so it is tokenized without special tokens (as apply_chat_template does)."""
    text, spans = assistant_char_spans(tokenizer, messages)
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, labels = encoded["input_ids"], []
    for token, (start, end) in zip(ids, encoded["offset_mapping"]):
        inside = any(low <= start < high for low, high in spans) and end > start
        labels.append(token if inside else -100)
    return {"input_ids": ids[:max_length], "labels": labels[:max_length]}


def end_of_turn_ids(tokenizer) -> list[int]:
    """The special token(s) a template writes right after an assistant's content, e.g. ``<|im_end|>``."""
    text, spans = assistant_char_spans(tokenizer, PROBE[:3])
    start, end = spans[0]
    suffix = text[start:end].removeprefix(PROBE[2]["content"]).strip()
    ids = tokenizer(suffix, add_special_tokens=False)["input_ids"] if suffix else []
    special = set(tokenizer.all_special_ids)
    return [token for token in ids if token in special]


def stop_at_end_of_turn(model, tokenizer) -> None:
    """Add the template's end-of-turn token to the generation config's EOS ids (kept with the saved model)."""
    config = model.generation_config
    eos = config.eos_token_id if config.eos_token_id is not None else tokenizer.eos_token_id
    current = list(eos) if isinstance(eos, (list, tuple)) else ([eos] if eos is not None else [])
    config.eos_token_id = current + [t for t in end_of_turn_ids(tokenizer) if t not in current]
    if config.pad_token_id is None:
        config.pad_token_id = tokenizer.pad_token_id


def check_recipe_template(recipe) -> None:
    """Before any stage runs: the template the chat stages will use, for a local ``model.hf``, exists and is
    prefix-preserving (a recipe that would fail at SFT fails at ``recipe validate``, naming the field)."""
    from finloom.llm.loading import load_tokenizer
    from finloom.recipe import ChatDataSection

    model = recipe.model
    chat = [name for name in recipe.section_names() if isinstance(recipe.section(name), ChatDataSection)
            and recipe.section(name).enabled]
    if model is None or not chat:
        return
    if model.chat_template:
        template_source(model.chat_template, recipe.resolve)  # the file exists
    if model.hf and Path(recipe.start_model()).is_dir():
        ensure_chat_template(load_tokenizer(recipe.start_model(), model), model.chat_template, recipe.resolve)
