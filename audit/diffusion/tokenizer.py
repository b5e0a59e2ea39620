"""CLIP's tokenizer, built offline from the BPE vocabulary that open_clip ships.

Stable Diffusion 1.5 tokenizes with openai/clip-vit-large-patch14's tokenizer (49 408 tokens,
77 positions). Its vocabulary is the same byte-level BPE as open_clip's
``bpe_simple_vocab_16e6.txt.gz``; we rebuild ``vocab.json``/``merges.txt`` from that file the
way CLIP's own SimpleTokenizer orders them (bytes, bytes + "</w>", merges, two specials), so
prompts tokenize exactly as in SD 1.5 without a download.
"""

from __future__ import annotations

import functools
import gzip
import json
import os
import tempfile
from pathlib import Path

VOCAB_SIZE = 49408
MAX_LENGTH = 77


def _bpe_path() -> Path:
    import open_clip

    path = Path(open_clip.__file__).resolve().parent / "bpe_simple_vocab_16e6.txt.gz"
    if not path.is_file():
        raise FileNotFoundError(f"open_clip's BPE vocabulary is missing ({path}); reinstall "
                                "open-clip-torch")
    return path


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte → printable-unicode table."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬")
                                                          + 1)) + list(
                                                              range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs), strict=True))


def _cache_dir() -> Path:
    root = (os.environ.get("PROTECTION_AUDIT_CACHE")
            or os.path.join(os.path.expanduser("~"), ".cache", "protection-audit"))
    return Path(root) / "tokenizer-clip-bpe16e6"


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)


def tokenizer_files() -> tuple[Path, Path]:
    """(vocab.json, merges.txt) for CLIPTokenizer, written once into the user cache."""
    folder = _cache_dir()
    vocab_path, merges_path = folder / "vocab.json", folder / "merges.txt"
    config_path = folder / "tokenizer_config.json"
    if vocab_path.is_file() and merges_path.is_file() and config_path.is_file():
        return vocab_path, merges_path
    folder.mkdir(parents=True, exist_ok=True)
    lines = gzip.open(_bpe_path()).read().decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1 : 49152 - 256 - 2 + 1]]
    vocab = list(_bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab]
    vocab += ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    if len(vocab) != VOCAB_SIZE:
        raise RuntimeError(f"rebuilt CLIP vocabulary has {len(vocab)} entries, expected "
                           f"{VOCAB_SIZE}")
    _write_atomic(vocab_path, json.dumps({token: i for i, token in enumerate(vocab)},
                                         ensure_ascii=False))
    _write_atomic(merges_path, "#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": MAX_LENGTH,
        "do_lower_case": True,
        "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
    }
    _write_atomic(config_path, json.dumps(config))
    return vocab_path, merges_path


@functools.cache
def clip_tokenizer():
    """SD 1.5's tokenizer (lower-cased byte-level BPE, 77 tokens, pad = eos = <|endoftext|>)."""
    from transformers import CLIPTokenizer

    vocab, _ = tokenizer_files()
    return CLIPTokenizer.from_pretrained(str(vocab.parent), local_files_only=True)
