"""The acoustic encoder (AE), "res-DCNN": a 1-D CNN along frequency over one 2 x F frame.

Implements method.md section 5. Four residual blocks with channels 2 -> 4 -> 8 -> 16 -> 32;
each block's main path is Conv1d(k=3, pad 0) -> BN -> ReLU -> AvgPool1d(k=3, stride 2, pad 1)
and its shortcut Conv1d(k=3, stride 2, pad 0) -> BN, summed (lengths agree for every F:
290 -> 144 -> 71 -> 35 -> 17). The flattened input and the flattened last block are
concatenated (1124 values for F = 290, 992 for F = 256; ``multiscale`` also concatenates
the middle blocks) and mapped to 2048 -> 1024 by Linear-BN-ReLU layers.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class ResidualBlock1d(nn.Module):
    """One res-DCNN block: ``main(x) + shortcut(x)``, halving the length."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.main = nn.Sequential(
            nn.Conv1d(in_channels, out_channels, kernel_size=3, stride=1, padding=0),
            nn.BatchNorm1d(out_channels),
            nn.ReLU(inplace=True),
            nn.AvgPool1d(kernel_size=3, stride=2, padding=1),
        )
        self.shortcut = nn.Sequential(
            nn.Conv1d(in_channels, out_channels, kernel_size=3, stride=2, padding=0),
            nn.BatchNorm1d(out_channels),
        )

    @staticmethod
    def output_length(length: int) -> int:
        """Length after the block: ``floor((L - 3) / 2) + 1`` on both paths."""
        return (length - 3) // 2 + 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x) + self.shortcut(x)


class AcousticEncoder(nn.Module):
    """res-DCNN acoustic encoder: ``(B, 2, F)`` feature frames -> ``(B, 1024)`` embeddings.

    ``n_bins`` is F (290 for the scalogram, 256 for FBank); ``flat_features`` is the size of
    the concatenated flattened input and block outputs (1124 / 992 by default).
    """

    def __init__(
        self,
        n_bins: int = 290,
        in_channels: int = 2,
        channels: Sequence[int] = (4, 8, 16, 32),
        hidden: int = 2048,
        embedding_dim: int = 1024,
        dropout: float = 0.5,
        multiscale: bool = False,
    ):
        super().__init__()
        self.n_bins = n_bins
        self.in_channels = in_channels
        self.multiscale = multiscale
        self.embedding_dim = embedding_dim
        blocks = []
        lengths = []
        c, length = in_channels, n_bins
        for out in channels:
            if length < 3:
                raise ValueError(f"F={n_bins} is too short for {len(channels)} res-DCNN blocks")
            blocks.append(ResidualBlock1d(c, out))
            length = ResidualBlock1d.output_length(length)
            lengths.append(out * length)
            c = out
        self.blocks = nn.ModuleList(blocks)
        kept = lengths if multiscale else lengths[-1:]
        self.flat_features = in_channels * n_bins + sum(kept)
        self.head = nn.Sequential(
            nn.Linear(self.flat_features, hidden),
            nn.BatchNorm1d(hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, embedding_dim),
            nn.BatchNorm1d(embedding_dim),
            nn.ReLU(inplace=True),
        )

    def flatten_features(self, x: torch.Tensor) -> torch.Tensor:
        """The concatenation the head sees: ``(B, flat_features)``."""
        if x.dim() != 3 or x.shape[1] != self.in_channels or x.shape[2] != self.n_bins:
            raise ValueError(
                f"AcousticEncoder expects (batch, {self.in_channels}, {self.n_bins}), "
                f"got {tuple(x.shape)}"
            )
        parts = [x.flatten(1)]
        h = x
        for i, block in enumerate(self.blocks):
            h = block(h)
            if self.multiscale or i == len(self.blocks) - 1:
                parts.append(h.flatten(1))
        return torch.cat(parts, dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.flatten_features(x))
