"""Tiny random models in the shapes of the families users start from (saved at test time, nothing downloaded).

- ``llama3_base``: no chat template, a tokenizer that adds BOS, no pad token, untied embeddings;
- ``qwen2_5``: a ChatML template without ``{% generation %}`` markers and a default system prompt, tied embeddings;
- ``mistral``: an ``[INST]`` template that writes BOS itself, ``</s>`` ending each answer, no pad token.
"""

from __future__ import annotations

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
)

QWEN_TEMPLATE = (  # Qwen2.5's shape: a default system prompt, ChatML turns, no generation markers
    "{%- if messages[0]['role'] != 'system' %}{{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}"
    "{%- endif %}{%- for message in messages %}{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + "
    "'<|im_end|>' + '\\n' }}{%- endfor %}{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}")
MISTRAL_TEMPLATE = (  # Mistral's v1 shape: BOS once, [INST] ... [/INST] answer</s>; a system prompt joins the first turn
    "{{- bos_token }}{%- set system = '' %}{%- for message in messages %}{%- if message['role'] == 'system' %}"
    "{%- set system = message['content'] + '\\n\\n' %}{%- elif message['role'] == 'user' %}"
    "{{- '[INST] ' + (system if loop.index <= 2 else '') + message['content'] + ' [/INST]' }}"
    "{%- else %}{{- message['content'] + eos_token }}{%- endif %}{%- endfor %}")

FAMILIES = {
    "llama3_base": {"specials": ["<|begin_of_text|>", "<|end_of_text|>"], "bos": "<|begin_of_text|>",
                    "eos": "<|end_of_text|>", "pad": None, "template": None, "tied": False,
                    "model": (LlamaConfig, LlamaForCausalLM)},
    "qwen2_5": {"specials": ["<|endoftext|>", "<|im_start|>", "<|im_end|>"], "bos": None, "eos": "<|im_end|>",
                "pad": "<|endoftext|>", "template": QWEN_TEMPLATE, "tied": True, "model": (Qwen2Config, Qwen2ForCausalLM)},
    "mistral": {"specials": ["<unk>", "<s>", "</s>"], "bos": "<s>", "eos": "</s>", "pad": None,
                "template": MISTRAL_TEMPLATE, "tied": False, "model": (MistralConfig, MistralForCausalLM)},
}


def family_model(name: str, texts: list[str], folder):
    shape = FAMILIES[name]
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=500, special_tokens=shape["specials"],
                                                             initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                                             show_progress=False))
    if shape["bos"]:  # the tokenizer adds BOS to every encoding, as Llama's and Mistral's do
        tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{shape['bos']} $A", special_tokens=[(shape["bos"], tokenizer.token_to_id(shape["bos"]))])
    wrapped = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token=shape["bos"], eos_token=shape["eos"],
                                      pad_token=shape["pad"], clean_up_tokenization_spaces=False)
    if shape["template"]:
        wrapped.chat_template = shape["template"]
    config_class, model_class = shape["model"]
    config = config_class(vocab_size=len(wrapped), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                          num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=512,
                          tie_word_embeddings=shape["tied"], bos_token_id=wrapped.bos_token_id,
                          eos_token_id=wrapped.eos_token_id, pad_token_id=wrapped.pad_token_id)
    model_class(config).save_pretrained(folder)
    wrapped.save_pretrained(folder)
    return folder
