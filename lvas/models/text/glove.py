"""Word vectors: GloVe-300d read from its release file (text or zip, cached per vocabulary), or learned.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path
from typing import Sequence
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def _glove_lines(path: Path):
    if path.suffix == ".zip":
        with zipfile.ZipFile(path) as zf:
            members = [n for n in zf.namelist() if n.endswith(".txt")]
            if not members:
                raise ValueError(f"{path}: no .txt file inside the zip archive")
            with zf.open(members[0]) as raw:
                yield from io.TextIOWrapper(raw, encoding="utf-8", errors="replace")
    else:
        with open(path, encoding="utf-8", errors="replace") as fh:
            yield from fh


def load_glove(path: str | Path, words: Sequence[str], dim: int = 300, cache_dir: str | Path | None = None,
               seed: int = 0, oov: str = "random") -> tuple[np.ndarray, int]:
    """Rows of a GloVe text file (``glove.840B.300d.txt`` or a ``.zip`` holding it) for ``words``.

    Only the vocabulary's rows are kept. Words GloVe lacks get small random vectors (``oov:
    random``) or zeros (``oov: zero``, what the released code's torchtext lookup gives); row 0
    (padding) is zero. The result is cached as ``.npy`` in ``cache_dir`` (keyed by the file and
    the vocabulary) so the 5 GB text file is read once.

    Returns:
        (len(words), dim) float32 matrix, number of words found in GloVe.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"GloVe file {path} not found (expected glove.840B.300d.txt or .zip)")
    if oov not in ("random", "zero"):
        raise ValueError(f"oov: expected 'random' or 'zero', got {oov!r}")
    key = hashlib.sha256(("\n".join(words) + f"|{path.resolve()}|{dim}|{oov}").encode()).hexdigest()[:16]
    cache = Path(cache_dir) / f"glove_{key}.npy" if cache_dir is not None else None
    if cache is not None and cache.is_file():
        data = np.load(cache, allow_pickle=False)
        return data[1:].astype(np.float32).reshape(len(words), dim), int(data[0, 0])
    index = {w: i for i, w in enumerate(words)}
    rng = np.random.default_rng(seed)
    out = rng.normal(0.0, 0.3, size=(len(words), dim)).astype(np.float32)
    if oov == "zero":
        out[:] = 0.0
    found = np.zeros(len(words), dtype=bool)
    for lineno, line in enumerate(_glove_lines(path), start=1):
        parts = line.rstrip("\n").rstrip(" ").split(" ")
        if len(parts) < dim + 1:
            raise ValueError(f"{path}:{lineno}: expected a word and {dim} numbers, got {len(parts)} fields")
        word = " ".join(parts[:-dim])  # a few glove.840B tokens contain spaces
        i = index.get(word)
        if i is None or found[i]:
            continue
        out[i] = np.asarray(parts[-dim:], dtype=np.float32)
        found[i] = True
    if len(words):
        out[0] = 0.0  # padding
    n_found = int(found.sum())
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        header = np.zeros((1, dim), dtype=np.float32)
        header[0, 0] = n_found
        tmp = cache.with_suffix(".tmp.npy")
        np.save(tmp, np.concatenate([header, out]))
        tmp.replace(cache)
    return out, n_found


class FrozenEmbedding(nn.Module):
    """A fixed word-vector table (the release looks GloVe vectors up, it does not train them).

    The table is a buffer: saved with the model, not a parameter (so not counted or trained).
    """

    def __init__(self, vectors: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("weight", vectors)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (B, N) ids -> (B, N, D)."""
        return F.embedding(tokens, self.weight)


def _embedding(vocab_size: int, embed_dim: int, embeddings: np.ndarray | None, frozen: bool) -> nn.Module:
    if embeddings is not None and embeddings.shape != (vocab_size, embed_dim):
        raise ValueError(f"embedding matrix {embeddings.shape} != ({vocab_size}, {embed_dim})")
    if frozen:
        table = torch.zeros(vocab_size, embed_dim) if embeddings is None else torch.from_numpy(embeddings).float()
        return FrozenEmbedding(table)
    emb = nn.Embedding(vocab_size, embed_dim, padding_idx=0)
    if embeddings is not None:
        with torch.no_grad():
            emb.weight.copy_(torch.from_numpy(embeddings))
    return emb
