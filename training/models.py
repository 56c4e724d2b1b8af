"""One Lightning base module for every forecaster; each architecture adds only its encoder.

All forecasters predict quantiles 0.1/0.5/0.9 of the log return at each horizon, in units of a
per-horizon volatility scale: the classical family's own h-day GARCH forecast (or, for models
trained before it, the trailing volatility × √horizon). A network whose head outputs its
starting values is that volatility model with Gaussian bands, so everything learned is a
correction to it. Quantiles cannot cross: the network emits a median and two positive gaps.
"""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn
from torch.nn import functional as F

QUANTILES = (0.1, 0.5, 0.9)
# Standard-normal quantiles: the random-walk starting point of the lower/upper gaps.
_Z90 = 1.2815515655446004


class QuantileForecaster(L.LightningModule):
    """Base: embeddings, quantile head, pinball loss, optimiser. Subclasses build `encoder`."""

    family = "base"

    def __init__(
        self,
        n_features: int,
        n_tickers: int,
        n_sectors: int,
        window: int,
        horizons: tuple[int, ...] = (1, 5, 20),
        hidden: int = 32,
        layers: int = 2,
        heads: int = 4,
        embedding_dim: int = 8,
        dropout: float = 0.1,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        unknown_ticker_rate: float = 0.1,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.horizons = tuple(horizons)
        self.ticker_embedding = nn.Embedding(n_tickers + 1, embedding_dim)
        self.sector_embedding = nn.Embedding(n_sectors + 1, embedding_dim)
        self.encoder = self.build_encoder(n_features, window, hidden, layers, heads, dropout)
        self.head = nn.Sequential(
            nn.Linear(hidden + 2 * embedding_dim, hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, len(self.horizons) * 3),
        )
        with torch.no_grad():  # start at the random walk: median 0, gaps of one z-score
            self.head[-1].weight.mul_(0.01)
            bias = torch.tensor([0.0, _softplus_inverse(_Z90), _softplus_inverse(_Z90)])
            self.head[-1].bias.copy_(bias.repeat(len(self.horizons)))
        self.register_buffer("sqrt_h", torch.tensor(self.horizons, dtype=torch.float32).sqrt())
        self.register_buffer("taus", torch.tensor(QUANTILES))

    def build_encoder(
        self, n_features: int, window: int, hidden: int, layers: int, heads: int, dropout: float
    ) -> nn.Module:
        """[batch, window, features] -> [batch, hidden]."""
        raise NotImplementedError

    def standardised(self, x: Tensor, ticker: Tensor, sector: Tensor) -> Tensor:
        """Quantiles in volatility units, shape [batch, horizons, 3], non-crossing."""
        encoded = self.encoder(x)
        z = self.head(
            torch.cat(
                [encoded, self.ticker_embedding(ticker), self.sector_embedding(sector)], dim=-1
            )
        )
        z = z.view(-1, len(self.horizons), 3)
        median = z[..., 0]
        lower = median - F.softplus(z[..., 1])
        upper = median + F.softplus(z[..., 2])
        return torch.stack([lower, median, upper], dim=-1)

    def _scale(self, sigma: Tensor) -> Tensor:
        """[batch, horizons] scale: given per horizon, or a daily σ (older bundles) × √h."""
        return sigma if sigma.dim() == 2 else sigma[:, None] * self.sqrt_h[None, :]

    def forward(self, x: Tensor, ticker: Tensor, sector: Tensor, sigma: Tensor) -> Tensor:
        """Log-return quantiles [batch, horizons, 3]."""
        return self.standardised(x, ticker, sector) * self._scale(sigma)[..., None]

    def _loss(self, batch: tuple[Tensor, ...]) -> Tensor:
        x, ticker, sector, sigma, y = batch
        scale = self._scale(sigma)
        pred = self.standardised(x, ticker, sector)
        diff = (y / scale)[..., None] - pred
        return torch.maximum(self.taus * diff, (self.taus - 1) * diff).mean()

    def training_step(self, batch: tuple[Tensor, ...], _: int) -> Tensor:
        x, ticker, sector, sigma, y = batch
        # Train the shared "unknown" embedding so tickers imported later get a sensible one.
        drop = torch.rand_like(ticker, dtype=torch.float32) < self.hparams.unknown_ticker_rate
        loss = self._loss((x, ticker.masked_fill(drop, 0), sector, sigma, y))
        self.log("train_loss", loss, prog_bar=True, on_epoch=True, on_step=False)
        return loss

    def validation_step(self, batch: tuple[Tensor, ...], _: int) -> None:
        self.log("val_loss", self._loss(batch), prog_bar=True, on_epoch=True)

    def configure_optimizers(self) -> Any:
        return torch.optim.AdamW(
            self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay
        )


def _softplus_inverse(value: float) -> float:
    return math.log(math.expm1(value))


class _LastState(nn.Module):
    def __init__(self, rnn: nn.LSTM) -> None:
        super().__init__()
        self.rnn = rnn

    def forward(self, x: Tensor) -> Tensor:
        _, (h, _) = self.rnn(x)
        return h[-1]


class LSTMForecaster(QuantileForecaster):
    """Stacked LSTM; the last hidden state summarises the window."""

    family = "lstm"

    def build_encoder(
        self, n_features: int, window: int, hidden: int, layers: int, heads: int, dropout: float
    ) -> nn.Module:
        rnn = nn.LSTM(
            n_features,
            hidden,
            num_layers=layers,
            batch_first=True,
            dropout=dropout if layers > 1 else 0.0,
        )
        return _LastState(rnn)


class PositionalEncoding(nn.Module):
    """Fixed sinusoidal positions (Vaswani et al.), so attention knows how old each bar is."""

    def __init__(self, d_model: int, length: int) -> None:
        super().__init__()
        position = torch.arange(length)[:, None]
        div = torch.exp(torch.arange(0, d_model, 2) * (-math.log(10_000.0) / d_model))
        table = torch.zeros(length, d_model)
        table[:, 0::2] = torch.sin(position * div)
        table[:, 1::2] = torch.cos(position * div[: d_model // 2])
        self.register_buffer("table", table)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.table[: x.size(1)]


class _TransformerEncoder(nn.Module):
    def __init__(
        self, n_features: int, window: int, hidden: int, layers: int, heads: int, dropout: float
    ) -> None:
        super().__init__()
        self.project = nn.Linear(n_features, hidden)
        self.position = PositionalEncoding(hidden, window)
        layer = nn.TransformerEncoderLayer(
            hidden, heads, 2 * hidden, dropout, batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.out = nn.Linear(2 * hidden, hidden)

    def forward(self, x: Tensor) -> Tensor:
        h = self.encoder(self.position(self.project(x)))
        return self.out(torch.cat([h[:, -1], h.mean(dim=1)], dim=-1))  # newest bar + context


class TransformerForecaster(QuantileForecaster):
    """Transformer encoder over the window with sinusoidal positional encoding."""

    family = "transformer"

    def build_encoder(
        self, n_features: int, window: int, hidden: int, layers: int, heads: int, dropout: float
    ) -> nn.Module:
        return _TransformerEncoder(n_features, window, hidden, layers, heads, dropout)


class _ConvAttentionEncoder(nn.Module):
    def __init__(
        self, n_features: int, hidden: int, layers: int, heads: int, dropout: float
    ) -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        channels = n_features
        for i in range(layers):
            dilation = 2**i
            # left padding only: the convolution at bar t sees bars ≤ t
            blocks += [
                nn.ConstantPad1d((4 * dilation, 0), 0.0),
                nn.Conv1d(channels, hidden, 5, dilation=dilation),
                nn.GELU(),
                nn.Dropout(dropout),
            ]
            channels = hidden
        self.conv = nn.Sequential(*blocks)
        self.query = nn.Parameter(torch.randn(1, 1, hidden) * 0.02)
        self.attention = nn.MultiheadAttention(hidden, heads, dropout=dropout, batch_first=True)
        self.norm = nn.LayerNorm(hidden)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv(x.transpose(1, 2)).transpose(1, 2)  # [batch, window, hidden]
        pooled, _ = self.attention(self.query.expand(h.size(0), -1, -1), h, h)
        return self.norm(pooled[:, 0] + h[:, -1])


class HybridForecaster(QuantileForecaster):
    """Dilated causal CNN + attention pooling.

    Why this hybrid: the convolutions turn each bar's neighbourhood into local shape features
    (multi-day moves, volatility bursts) at a fraction of a transformer's cost on a CPU, and a
    learned attention query then picks which days of the window matter, instead of the LSTM's
    fixed "last state" summary. It sits between the other two in cost and inductive bias, which
    is what an ensemble member should do.
    """

    family = "hybrid"

    def build_encoder(
        self, n_features: int, window: int, hidden: int, layers: int, heads: int, dropout: float
    ) -> nn.Module:
        return _ConvAttentionEncoder(n_features, hidden, layers, heads, dropout)


FAMILIES: dict[str, type[QuantileForecaster]] = {
    cls.family: cls for cls in (LSTMForecaster, TransformerForecaster, HybridForecaster)
}
