"""Group-by-length batching, the resumable cursor and collation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from activation_oracles.train.batching import (
    BatchStream, Cursor, StagedStream, chunk_by_length, collate, epoch_batches, length_filter,
)


def test_epoch_batches_deterministic_complete_and_grouped():
    rng = np.random.default_rng(0)
    lengths = rng.integers(5, 200, size=1000)
    a = epoch_batches(lengths, 16, seed=3, epoch=0)
    b = epoch_batches(lengths, 16, seed=3, epoch=0)
    assert all((x == y).all() for x, y in zip(a, b))
    assert len(a) == 1000 // 16
    flat = np.concatenate(a)
    assert len(set(flat.tolist())) == len(flat)  # each example at most once per epoch
    c = epoch_batches(lengths, 16, seed=3, epoch=1)
    assert not all((x == y).all() for x, y in zip(a, c))
    # padding share with grouping is far below random batching
    grouped = np.mean([1 - lengths[x].mean() / lengths[x].max() for x in a])
    rand = np.mean([1 - lengths[x].mean() / lengths[x].max() for x in np.array_split(rng.permutation(1000), 62)])
    assert grouped < 0.1 < rand


def test_length_filter_drops_the_longest():
    lengths = np.arange(1, 10001)
    keep = length_filter(lengths, 99.9)
    assert 9985 <= len(keep) <= 9995 and lengths[keep].max() < 10000
    assert len(length_filter(np.arange(32), 99.9)) == 32


def test_cursor_resumes_exactly():
    lengths = np.random.default_rng(1).integers(5, 50, size=100)
    s = BatchStream(lengths, 8, seed=0)
    seq = [s.next() for _ in range(30)]  # crosses epochs (12 batches per epoch)
    r = BatchStream(lengths, 8, seed=0, cursor=Cursor(1, 5))
    assert all((x == y).all() for x, y in zip(seq[17:], [r.next() for _ in range(13)]))


def test_curriculum_stages_then_main_stream_and_exact_resume():
    lengths = np.random.default_rng(2).integers(5, 50, size=200)
    multi = np.arange(0, 200, 4)  # the rows a stage may use (50 of them)
    s = StagedStream(lengths, 8, seed=0, stages=[(10, multi), (3, np.arange(100, 120))])
    seq = [s.next() for _ in range(40)]
    assert all(set(b.tolist()) <= set(multi.tolist()) for b in seq[:10])  # stage 0, recycling its 6 batches
    assert all(set(b.tolist()) <= set(range(100, 120)) for b in seq[10:13])
    main = BatchStream(lengths, 8, seed=0)
    assert all((x == main.next()).all() for x in seq[13:])  # then exactly the stream without stages
    # resume at every step boundary from the saved state reproduces the rest
    for k in (0, 5, 10, 12, 13, 25):
        s2 = StagedStream(lengths, 8, seed=0, stages=[(10, multi), (3, np.arange(100, 120))])
        for _ in range(k):
            s2.next()
        state = s2.state_dict()
        r = StagedStream(lengths, 8, seed=0, stages=[(10, multi), (3, np.arange(100, 120))])
        r.load_state_dict(state, k)
        assert all((x == r.next()).all() for x in seq[k:])


def test_collate_dedups_contexts_and_shifts_positions():
    rows = [
        dict(input_ids=[5, 6, 7, 8], labels=[-100, -100, 7, 8], positions=[1], context_input_ids=[1, 2, 3],
             context_positions=[2], layer=1, task="a"),
        dict(input_ids=[5, 6, 7], labels=[-100, -100, 7], positions=[1], context_input_ids=[1, 2, 3],
             context_positions=[0], layer=2, task="b"),
        dict(input_ids=[9, 9, 9, 9, 9, 9], labels=[-100] * 5 + [9], positions=[1, 2], context_input_ids=[4],
             context_positions=[0], layer=1, task="a"),
    ]
    rows[2]["context_positions"] = [0, 0]
    b = collate(rows, pad_id=0)  # contexts of 3 and 1 tokens: two length groups, no context padding
    assert [t.tolist() for t in b.ctx_ids] == [[[1, 2, 3]], [[4]]]
    assert b.src == [(1, 0, 0, [2]), (2, 0, 0, [0]), (1, 1, 0, [0, 0])]
    assert b.layers == [1, 2]
    assert b.input_ids[1].tolist() == [0, 0, 0, 5, 6, 7]
    assert b.inject_positions == [[3], [4], [1, 2]]
    assert b.labels[0].tolist() == [-100, -100, -100, -100, 7, 8]
    assert b.real_tokens == 13 and b.label_tokens == 4
    assert b.pad_tokens == 18 - 13 and b.total_tokens == 18 + 4
    assert torch.equal(b.attention_mask[1], torch.tensor([0, 0, 0, 1, 1, 1]))
    one = collate(rows, pad_id=0, context_pad_tolerance=1.0)  # one padded context batch
    assert [t.tolist() for t in one.ctx_ids] == [[[1, 2, 3], [0, 0, 4]]]
    assert one.src[2] == (1, 0, 1, [2, 2]) and one.pad_tokens == 5 + 2


def test_chunk_by_length_bounds_padding():
    lengths = list(np.random.default_rng(0).integers(10, 160, size=40))
    groups = chunk_by_length(lengths, 0.1)
    assert sorted(i for g in groups for i in g) == list(range(40))
    for g in groups:
        m = max(lengths[i] for i in g)
        assert all(lengths[i] >= 0.9 * m for i in g)
    assert chunk_by_length(lengths, 1.0) == [sorted(range(40), key=lambda i: -lengths[i])]


def test_group_by_cost_is_optimal_and_bounded_by_its_extremes():
    import itertools

    from activation_oracles.train.batching import group_by_cost

    rng = np.random.default_rng(3)
    for _ in range(20):
        lengths = [int(x) for x in rng.integers(5, 500, size=7)]

        def cost(groups, overhead):
            return sum(overhead + len(g) * max(lengths[i] for i in g) for g in groups)

        order = sorted(range(7), key=lambda i: -lengths[i])
        for overhead in (0, 50, 1000, 10**6):
            groups = group_by_cost(lengths, overhead)
            assert sorted(i for g in groups for i in g) == list(range(7))
            best = min(cost([order[a:b] for a, b in zip((0, *cuts), (*cuts, 7))], overhead)
                       for k in range(7) for cuts in itertools.combinations(range(1, 7), k))
            assert cost(groups, overhead) == best  # the exact optimum over contiguous cuts
        assert group_by_cost(lengths, 10**6) == [order]  # launches dear: one padded batch
        assert all(len({lengths[i] for i in g}) == 1 for g in group_by_cost(lengths, 0))  # free: no padding


def test_collate_flat_indices_match_the_lists():
    rows = [
        dict(input_ids=[5, 6, 7, 8], labels=[-100, -100, 7, 8], positions=[1], context_input_ids=[1, 2, 3],
             context_positions=[2], layer=1, task="a"),
        dict(input_ids=[9, 9, 9, 9, 9, 9], labels=[-100] * 5 + [9], positions=[1, 2], context_input_ids=[4],
             context_positions=[0, 0], layer=2, task="a"),
    ]
    b = collate(rows, pad_id=0, context_group_overhead=100)  # one group: padding 2 < 100
    assert len(b.ctx_ids) == 1 and b.context_tokens == 4
    sel = (b.labels[:, 1:] != -100).nonzero(as_tuple=True)
    assert torch.equal(b.label_rows, sel[0]) and torch.equal(b.label_cols, sel[1])
    assert b.label_targets.tolist() == [7, 8, 9]
    assert b.inject_rows.tolist() == [0, 1, 1] and b.inject_cols.tolist() == [3, 1, 2] and b.inject_bounds == (1, 3)
    # gathers fill the flat slots from (layer, group, row, position) exactly as src lists them
    flat = {}
    for layer, g, r, c, d in b.gathers:
        for rr, cc, dd in zip(r.tolist(), c.tolist(), d.tolist()):
            flat[dd] = (layer, g, rr, cc)
    assert [flat[i] for i in range(3)] == [(1, 0, 0, 2), (2, 0, 1, 2), (2, 0, 1, 2)]


def test_multi_layer_rows_fill_their_slots_layer_major():
    """A multi-layer row's placeholders are one block per layer: its gathers read the same context
    positions at each layer, in the order of its `layers` column; FSDP's context depth covers them all."""
    from types import SimpleNamespace

    from activation_oracles.train.batching import deepest_layer
    from activation_oracles.train.step import collate_for

    rows = [
        dict(input_ids=[5, 6, 7, 8, 9], labels=[-100] * 4 + [9], positions=[1, 2, 3, 4], context_input_ids=[1, 2, 3],
             context_positions=[1, 2], layer=1, layers=[3, 1], task="a"),
        dict(input_ids=[5, 6, 7], labels=[-100, -100, 7], positions=[1], context_input_ids=[4, 5],
             context_positions=[1], layer=2, task="a"),
    ]
    b = collate(rows, pad_id=0, context_pad_tolerance=1.0)  # one context group; the second context padded by 1
    assert b.layers == [1, 2, 3] and b.src[0][0] == (3, 1)
    flat = {}
    for layer, g, r, c, d in b.gathers:
        for rr, cc, dd in zip(r.tolist(), c.tolist(), d.tolist()):
            flat[dd] = (layer, rr, cc)
    assert [flat[i] for i in range(5)] == [(3, 0, 1), (3, 0, 2), (1, 0, 1), (1, 0, 2), (2, 1, 2)]
    assert b.inject_rows.tolist() == [0, 0, 0, 0, 1] and b.inject_cols.tolist() == [1, 2, 3, 4, 3]
    assert deepest_layer(rows) == 3 and deepest_layer(rows[1:]) == 2
    cfg = SimpleNamespace(train=SimpleNamespace(context_pad_tolerance=0.1, context_group_overhead=0))
    assert collate_for(cfg, rows[1:], 0, sharded=True, deepest=deepest_layer(rows)).layers == [2, 3]
    with pytest.raises(ValueError, match=r"3 placeholders but 2 context positions x 2 layer"):
        collate([dict(rows[0], positions=[1, 2, 3])], pad_id=0)


def test_pack_by_depth_trades_depth_for_forwards():
    from activation_oracles.train.batching import pack_by_depth

    depth, lengths = [9, 27, 18, 9, 27], [100, 100, 100, 100, 100]
    assert pack_by_depth(depth, lengths) == [[0, 3], [2], [1, 4]]  # free forwards: each depth alone
    # a forward worth 1000 tokens per block: one packed forward to layer 27 costs 28 x 1500 = 42k, against
    # 10 x 1200 + 19 x 1100 + 28 x 1200 = 66.5k apart
    assert pack_by_depth(depth, lengths, 1000) == [[0, 1, 2, 3, 4]]
    # long shallow contexts: the shallow ones alone, the two deeper depths together
    assert pack_by_depth(depth, [5000, 10, 10, 5000, 10], 50) == [[0, 3], [1, 2, 4]]
    assert pack_by_depth([], [], 10) == []


def test_batch_travels_as_one_buffer_unchanged(smol_tokenizer):
    """OracleBatch.to(one_copy=True), what a GPU step does: every tensor comes back with its values, shape
    and dtype, in its place (checked on the CPU; the copy itself is the only difference on a GPU)."""
    import copy

    import torch
    from test_train_helpers import make_rows

    from activation_oracles.train.batching import collate

    rows = make_rows(smol_tokenizer, layers=(1, 3))[:10]
    for pack in (False, True):
        b = collate(rows, smol_tokenizer.pad_token_id, context_packing=pack)
        ref = copy.deepcopy(b)
        b.to("cpu", one_copy=True)
        got, want = b._tensors(), ref._tensors()
        assert len(got) == len(want) > 10
        for x, y in zip(got, want):
            assert x.dtype == y.dtype and torch.equal(x, y)
        assert [g[:2] for g in b.gathers] == [g[:2] for g in ref.gathers]
        assert [m is None for m in b.ctx_mask] == [m is None for m in ref.ctx_mask]
