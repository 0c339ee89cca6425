"""Text encoder: word embeddings (GloVe-300d or learned) and one GRU per visual encoder (§4.2)."""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from lvas.registry import TEXT_ENCODERS


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
               seed: int = 0) -> tuple[np.ndarray, int]:
    """Rows of a GloVe text file (``glove.840B.300d.txt`` or a ``.zip`` holding it) for ``words``.

    Only the vocabulary's rows are kept. Words GloVe lacks get small random vectors; row 0
    (padding) is zero. The result is cached as ``.npy`` in ``cache_dir`` (keyed by the file and
    the vocabulary) so the 5 GB text file is read once.

    Returns:
        (len(words), dim) float32 matrix, number of words found in GloVe.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"GloVe file {path} not found (expected glove.840B.300d.txt or .zip)")
    key = hashlib.sha256(("\n".join(words) + f"|{path.resolve()}|{dim}").encode()).hexdigest()[:16]
    cache = Path(cache_dir) / f"glove_{key}.npy" if cache_dir is not None else None
    if cache is not None and cache.is_file():
        data = np.load(cache, allow_pickle=False)
        return data[1:].astype(np.float32).reshape(len(words), dim), int(data[0, 0])
    index = {w: i for i, w in enumerate(words)}
    rng = np.random.default_rng(seed)
    out = rng.normal(0.0, 0.3, size=(len(words), dim)).astype(np.float32)
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


@TEXT_ENCODERS.register("gru")
class GRUTextEncoder(nn.Module):
    """GRU over word embeddings (GloVe-300d or learned); one GRU per visual branch, shared embedding."""

    def __init__(self, vocab_size: int, embed_dim: int = 300, hidden: int = 512,
                 branches: Sequence[str] = ("spatial", "temporal"), embeddings: np.ndarray | None = None) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=0)
        if embeddings is not None:
            if embeddings.shape != (vocab_size, embed_dim):
                raise ValueError(f"embedding matrix {embeddings.shape} != ({vocab_size}, {embed_dim})")
            with torch.no_grad():
                self.embedding.weight.copy_(torch.from_numpy(embeddings))
        self.grus = nn.ModuleDict({
            b: nn.GRU(embed_dim, hidden, batch_first=True) for b in branches
        })
        self.out_channels = hidden

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-word features for each branch.

        Args:
            tokens: (B, N) word ids, 0 = padding.
            mask: (B, N) bool, True for real words.

        Returns:
            branch -> (B, N, C_L) word features (zero at padding).
        """
        # Queries are left-aligned, so a forward GRU's outputs at real words do not depend on
        # the padding after them: no packing needed (which also keeps it traceable on "meta").
        emb = self.embedding(tokens)
        keep = mask.unsqueeze(-1).to(emb.dtype)
        return {branch: gru(emb)[0] * keep for branch, gru in self.grus.items()}


def sentence_vector(words: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of the word features over real words: (B, N, C) -> (B, C)."""
    m = mask.to(words.dtype).unsqueeze(-1)
    return (words * m).sum(1) / m.sum(1).clamp(min=1.0)
