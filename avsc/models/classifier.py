"""The scene classifier (SC), method.md section 5."""

from __future__ import annotations

import torch
from torch import nn


class SceneClassifier(nn.Module):
    """``Linear(hidden)-BN-ReLU-Dropout -> Linear(n_classes)``; returns logits.

    :meth:`embed` gives the hidden layer after BN-ReLU: the 1024-d audio-visual embedding of
    the paper's Figure 2 (method.md section 9).
    """

    def __init__(
        self, in_features: int, n_classes: int = 10, hidden: int = 1024, dropout: float = 0.5
    ):
        super().__init__()
        self.in_features = in_features
        self.n_classes = n_classes
        self.hidden = nn.Sequential(
            nn.Linear(in_features, hidden),
            nn.BatchNorm1d(hidden),
            nn.ReLU(inplace=True),
        )
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(hidden, n_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.hidden(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.dropout(self.hidden(x)))
