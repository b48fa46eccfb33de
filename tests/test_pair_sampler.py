"""The VLM's batch mixing: real and synthetic pairs at a fixed ratio, one global batch for every rank."""

from __future__ import annotations

from itertools import islice
from types import SimpleNamespace

import pytest
import torch

from synth2.models import ddp
from synth2.models.pair_sampler import REAL, SYNTHETIC, PairBatch, PairSampler

N_REAL, N_SYNTHETIC = 5, 4


def batches(n: int, *, n_synthetic: int = N_SYNTHETIC, mix_ratio: float = 0.5, batch_size: int = 12, seed: int = 0):
    sampler = PairSampler(N_REAL, n_synthetic, mix_ratio, batch_size, torch.Generator().manual_seed(seed))
    return list(islice(sampler, n))


def as_ranks(monkeypatch: pytest.MonkeyPatch, rank: int, world: int) -> None:
    """Make synth2.models.ddp believe it runs as `rank` of a `world`-process group."""
    fake = SimpleNamespace(is_available=lambda: True, is_initialized=lambda: True)
    fake.get_rank, fake.get_world_size = (lambda: rank), (lambda: world)
    monkeypatch.setattr(ddp, "dist", fake)


@pytest.mark.parametrize(("mix_ratio", "batch_size"), [(0.5, 12), (0.3, 12), (0.3, 7), (0.9, 10), (0.25, 1)])
def test_every_batch_holds_the_ratios_share_of_synthetic_rows_each_tagged_with_its_pool(mix_ratio, batch_size):
    for batch in batches(20, mix_ratio=mix_ratio, batch_size=batch_size):
        assert isinstance(batch, PairBatch) and batch.rows.dtype == batch.source.dtype == torch.int64
        assert batch.rows.shape == batch.source.shape == (batch_size,)
        assert int((batch.source == SYNTHETIC).sum()) == round(mix_ratio * batch_size)
        real, synthetic = batch.rows[batch.source == REAL], batch.rows[batch.source == SYNTHETIC]
        assert ((0 <= real) & (real < N_REAL)).all()  # real pair i is row i
        assert ((N_REAL <= synthetic) & (synthetic < N_REAL + N_SYNTHETIC)).all()  # synthetic j is N_REAL + j


def test_rows_are_drawn_from_the_whole_of_each_pool():
    seen = torch.cat([batch.rows for batch in batches(50)])
    assert set(seen.tolist()) == set(range(N_REAL + N_SYNTHETIC))


@pytest.mark.parametrize(("n_synthetic", "mix_ratio"), [(0, 0.5), (N_SYNTHETIC, 0.0), (N_SYNTHETIC, 0.02)])
def test_no_synthetic_set_or_a_ratio_that_rounds_to_none_gives_real_rows_only(n_synthetic, mix_ratio):
    for batch in batches(10, n_synthetic=n_synthetic, mix_ratio=mix_ratio):
        assert (batch.source == REAL).all() and (batch.rows < N_REAL).all()


def test_a_seed_gives_one_stream_of_batches_and_another_seed_another():
    def stream(seed: int) -> list[list[int]]:
        return [batch.rows.tolist() for batch in batches(5, seed=seed)]

    assert stream(0) == stream(0)
    assert stream(0) != stream(1)


def test_draws_are_the_ones_trained_models_were_made_with():
    """Per step: real rows, then synthetic ones, from the sampler's generator alone. Changing this order
    changes every trained VLM (the committed pipeline's models and metrics), so it is pinned."""
    state = torch.random.get_rng_state()
    mixed, real_only = batches(2, batch_size=6), batches(2, n_synthetic=0, batch_size=6)
    assert [b.rows.tolist() for b in mixed] == [[4, 4, 3, 5, 8, 8], [2, 3, 2, 8, 6, 7]]
    assert [b.rows.tolist() for b in real_only] == [[4, 4, 3, 0, 3, 4], [2, 3, 2, 3, 1, 1]]
    assert torch.equal(torch.random.get_rng_state(), state)  # dropout's global generator is untouched


def test_a_yielded_batch_can_be_changed_without_changing_the_next():
    sampler = iter(PairSampler(N_REAL, N_SYNTHETIC, 0.5, 4, torch.Generator().manual_seed(0)))
    next(sampler).source.fill_(7)
    assert next(sampler).source.tolist() == [REAL, REAL, SYNTHETIC, SYNTHETIC]


@pytest.mark.parametrize(("batch_size", "world"), [(12, 2), (7, 2), (10, 3), (4, 4)])
def test_rank_shares_of_a_global_batch_partition_it_and_keep_each_rows_tag(monkeypatch, batch_size, world):
    """Every rank draws the same global batch (the sampler knows nothing of ranks) and keeps its share:
    the shares together are the global batch, each row exactly once, with its own tag."""
    global_batch = batches(3, mix_ratio=0.3, batch_size=batch_size)
    shares = []
    for rank in range(world):
        as_ranks(monkeypatch, rank, world)
        drawn = batches(3, mix_ratio=0.3, batch_size=batch_size)
        assert all(torch.equal(d.rows, g.rows) for d, g in zip(drawn, global_batch))
        position = torch.arange(batch_size)
        shares.append([ddp.rank_rows(position, d.rows, d.source) for d in drawn])
    for step, batch in enumerate(global_batch):
        positions = torch.cat([share[step][0] for share in shares])
        assert sorted(positions.tolist()) == list(range(batch_size))  # no row twice, none missing
        for position, rows, source in (share[step] for share in shares):
            assert torch.equal(rows, batch.rows[position]) and torch.equal(source, batch.source[position])


def test_one_process_keeps_the_whole_batch():
    batch = batches(1)[0]
    rows, source = ddp.rank_rows(batch.rows, batch.source)
    assert torch.equal(rows, batch.rows) and torch.equal(source, batch.source)


@pytest.mark.parametrize(
    ("n_real", "n_synthetic", "mix_ratio", "batch_size"),
    [(0, 4, 0.5, 8), (5, -1, 0.5, 8), (5, 4, 1.5, 8), (5, 4, 0.5, 0)],
)
def test_impossible_settings_are_refused(n_real, n_synthetic, mix_ratio, batch_size):
    with pytest.raises(ValueError, match="pair sampler"):
        PairSampler(n_real, n_synthetic, mix_ratio, batch_size, torch.Generator())
