"""Tiny randomly initialised checkpoints of every supported family, built offline for tests and demos.

Each is a real transformers model of that family (its own config class and modeling code) with a few layers of
width 32 and 8 experts, plus a small byte-level BPE tokenizer trained on the shipped sample, saved with
save_pretrained so it loads through exactly the code path a downloaded model takes. Its routing is that of
random weights: it shows how the views work, not what a trained model learns.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

TINY_EXPERTS = 8
TINY_TOP_K = 2
_COMMON = dict(hidden_size=32, intermediate_size=64, num_attention_heads=2, num_key_value_heads=2,
               num_hidden_layers=3, max_position_embeddings=512, num_experts_per_tok=TINY_TOP_K,
               initializer_range=0.2, tie_word_embeddings=False)


def tiny_config(model_type: str, vocab_size: int) -> Any:
    """A small config of `model_type`, built with that family's own config class."""
    import transformers as tf

    c = dict(_COMMON, vocab_size=vocab_size, bos_token_id=0, eos_token_id=1, pad_token_id=1)  # tiny_tokenizer's
    if model_type == "mixtral":
        return tf.MixtralConfig(**c, num_local_experts=TINY_EXPERTS)
    if model_type == "qwen2_moe":  # shared expert, renormalised top-k off (Qwen1.5-MoE's setting)
        return tf.Qwen2MoeConfig(**c, num_experts=TINY_EXPERTS, moe_intermediate_size=32,
                                 shared_expert_intermediate_size=64, norm_topk_prob=False)
    if model_type == "qwen3_moe":  # layer 0 dense (mlp_only_layers), top-k renormalised
        return tf.Qwen3MoeConfig(**c, num_experts=TINY_EXPERTS, moe_intermediate_size=32, norm_topk_prob=True,
                                 mlp_only_layers=[0], head_dim=16)
    if model_type == "olmoe":
        return tf.OlmoeConfig(**c, num_experts=TINY_EXPERTS, norm_topk_prob=False)
    if model_type == "granitemoe":
        return tf.GraniteMoeConfig(**c, num_local_experts=TINY_EXPERTS)
    deepseek = dict(c, n_routed_experts=TINY_EXPERTS, n_shared_experts=1, moe_intermediate_size=32,
                    first_k_dense_replace=1, kv_lora_rank=16, q_lora_rank=None, qk_rope_head_dim=8,
                    qk_nope_head_dim=8, v_head_dim=16, n_group=4, topk_group=2, routed_scaling_factor=2.5)
    if model_type == "deepseek_v2":
        return tf.DeepseekV2Config(**deepseek, topk_method="group_limited_greedy")
    if model_type == "deepseek_v3":
        return tf.DeepseekV3Config(**deepseek, norm_topk_prob=True)
    raise ValueError(f"no tiny config for model_type={model_type!r}")


def tiny_tokenizer(vocab_size: int = 400) -> Any:
    """A byte-level BPE tokenizer trained on the shipped sample (any text encodes; no download)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from moe_core.real_models.routing import sample_texts

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(list(sample_texts().values()), trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>")


def build_tiny(model_type: str, folder: str | Path, seed: int = 0) -> Path:
    """Save a tiny random `model_type` checkpoint and its tokenizer into `folder`; returns the folder.
    DeepSeek-V3's e_score_correction_bias is set to random values so the bias visibly changes the choice."""
    from transformers import AutoModelForCausalLM

    folder = Path(folder)
    tok = tiny_tokenizer()
    config = tiny_config(model_type, len(tok))
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    if model_type == "deepseek_v3":
        g = torch.Generator().manual_seed(seed)
        for name, buf in model.named_buffers():
            if name.endswith("e_score_correction_bias"):
                buf.copy_(torch.randn(buf.shape, generator=g) * 0.1)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder
