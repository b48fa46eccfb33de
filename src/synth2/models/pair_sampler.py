"""How the VLM's training batches mix real and synthetic pairs: the paper's central knob in one place.

Every batch has `batch_size` rows; with synthetic pairs a fixed `round(mix_ratio * batch_size)` of them
are synthetic, so the variants differ only in their data, never in their step budget. Rows are drawn
uniformly with replacement from each pool, real rows first, each with its source tag (`REAL` or
`SYNTHETIC`, what the prefix captioner's source tags learn from).

Rows index one pool of all pairs: real pair i is row i, synthetic pair j is row `n_real + j`. The sampler
yields the *global* batch. Under DDP the training loop keeps its rank's share (synth2.models.ddp.rank_rows),
once: every rank draws the same numbers, so N processes see the data one process sees.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch

REAL, SYNTHETIC = 0, 1  # source tag ids


@dataclass(frozen=True)
class PairBatch:
    rows: torch.Tensor  # [B] int64 rows of the pool (real pairs, then synthetic ones)
    source: torch.Tensor  # [B] int64 source tag of each row


class PairSampler:
    """An endless stream of global batches of `batch_size` rows mixed from `n_real` real and
    `n_synthetic` synthetic pairs (0: real pairs only), drawn from `generator` alone."""

    def __init__(self, n_real: int, n_synthetic: int, mix_ratio: float, batch_size: int, generator: torch.Generator):
        if n_real < 1 or n_synthetic < 0 or batch_size < 1:
            raise ValueError(f"pair sampler: {n_real} real pairs, {n_synthetic} synthetic, batches of {batch_size}")
        if not 0.0 <= mix_ratio <= 1.0:
            raise ValueError(f"pair sampler: mix ratio {mix_ratio} is not a fraction of the batch")
        self.n_real, self.n_synthetic, self.generator = n_real, n_synthetic, generator
        self.synthetic_per_batch = round(mix_ratio * batch_size) if n_synthetic else 0
        self.real_per_batch = batch_size - self.synthetic_per_batch
        self.source = torch.tensor([REAL] * self.real_per_batch + [SYNTHETIC] * self.synthetic_per_batch)

    def __iter__(self) -> Iterator[PairBatch]:
        # The draws' order (real, then synthetic, each step) is what trained models depend on: keep it.
        while True:
            rows = torch.randint(self.n_real, (self.real_per_batch,), generator=self.generator)
            if self.synthetic_per_batch:
                synthetic = torch.randint(self.n_synthetic, (self.synthetic_per_batch,), generator=self.generator)
                rows = torch.cat([rows, self.n_real + synthetic])
            yield PairBatch(rows, self.source.clone())
