"""FeatureStats: streaming moments equal the one-shot ones, merging, 2-process all_reduce, npz files, FID routes."""
from __future__ import annotations

import json
import os
import socket

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from fastgan import metrics as M
from fastgan.metrics import FeatureStats, fid_from_stats


def _feats(n, d, seed, offset=0.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=torch.float64) * torch.linspace(3, 0.1, d, dtype=torch.float64) + offset


def _streamed(x, sizes, **kw):
    st = FeatureStats(**kw)
    for part in torch.split(x, sizes):
        st.update(part)
    return st


def test_streaming_equals_one_shot_whatever_the_split():
    x = _feats(1000, 24, 0, offset=1e4)  # a large mean next to the spread: the shift keeps precision
    mu, cov = M.mean_cov(x)
    for sizes in ([1000], [1, 999], [333, 333, 334], [7] * 142 + [6]):
        st = _streamed(x, sizes)
        assert st.n == 1000 and st.dim == 24
        assert torch.allclose(st.mean(), mu, rtol=1e-14, atol=0)
        assert torch.allclose(st.cov(), cov, rtol=1e-10, atol=1e-12 * float(cov.abs().max()))
    biased = _streamed(x, [500, 500]).cov("biased")
    assert torch.allclose(biased, cov * 999 / 1000, rtol=1e-10, atol=1e-12)


def test_float32_batches_and_device_independent_results():
    x = _feats(300, 8, 1).float()
    assert torch.allclose(_streamed(x, [100, 200]).cov(), M.mean_cov(x.double())[1], rtol=1e-10, atol=1e-12)


def test_merge_equals_concatenation():
    a, b, c = _feats(200, 10, 2, 5.0), _feats(150, 10, 3, -7.0), _feats(80, 10, 4, 0.5)
    merged = FeatureStats(keep_features=True).update(a)
    merged.merge(FeatureStats(keep_features=True).update(b)).merge(FeatureStats(keep_features=True).update(c))
    full = torch.cat([a, b, c])
    mu, cov = M.mean_cov(full)
    assert merged.n == 430
    assert torch.allclose(merged.mean(), mu, rtol=1e-13) and torch.allclose(merged.cov(), cov, rtol=1e-10, atol=1e-12)
    assert torch.equal(merged.features(), full)
    empty = FeatureStats()
    assert empty.merge(FeatureStats().update(a)).n == 200
    with pytest.raises(ValueError, match="width 3 into width 10"):
        FeatureStats().update(a).merge(FeatureStats().update(_feats(5, 3, 0)))


def test_save_load_roundtrip_with_metadata(tmp_path):
    x = _feats(64, 12, 5, 2.0)
    st = _streamed(x, [30, 34], keep_features=True)
    path = st.save(tmp_path / "refs" / "x.npz", extractor="pixels", protocol="clean", cov_norm="unbiased")
    assert [p.name for p in (tmp_path / "refs").iterdir()] == ["x.npz"]  # no temporary left behind
    back = FeatureStats.load(path)
    assert back.metadata == {"extractor": "pixels", "protocol": "clean", "cov_norm": "unbiased"}
    assert back.n == 64 and torch.equal(back.mean(), st.mean()) and torch.equal(back.cov(), st.cov())
    assert torch.equal(back.features(), x)
    # the file is a plain npz: other tools can read it
    with np.load(path) as z:
        assert json.loads(str(z["metadata"]))["protocol"] == "clean" and int(z["n"]) == 64


def test_bad_files_and_bad_input(tmp_path):
    with pytest.raises(FileNotFoundError, match="no statistics file"):
        FeatureStats.load(tmp_path / "missing.npz")
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a FeatureStats npz file"):
        FeatureStats.load(junk)
    np.savez(tmp_path / "other.npz", mu=np.zeros(3))
    with pytest.raises(ValueError, match="format"):
        FeatureStats.load(tmp_path / "other.npz")
    st = FeatureStats()
    with pytest.raises(ValueError, match="no features have been added"):
        st.mean()
    st.update(_feats(10, 4, 0))
    with pytest.raises(ValueError, match="width 5 added to statistics of width 4"):
        st.update(_feats(3, 5, 0))
    bad = _feats(3, 4, 0)
    bad[0, 0] = float("inf")
    with pytest.raises(ValueError, match="NaN or Inf"):
        st.update(bad)
    with pytest.raises(ValueError, match="do not keep features"):
        st.features()


def test_fid_from_stats_routes():
    a, b = _feats(400, 16, 6), _feats(500, 16, 7, 0.3)
    sa, sb = FeatureStats().update(a), FeatureStats().update(b)
    assert fid_from_stats(sa, sb) == pytest.approx(M.fid_from_features(a, b), rel=1e-10)
    # few-shot: both keep features -> the exact Gram route
    small, big = _feats(10, 64, 8), _feats(30, 64, 9, 0.2)
    fa, fb = FeatureStats(keep_features=True).update(small), FeatureStats(keep_features=True).update(big)
    assert fid_from_stats(fa, fb) == M.fid_from_features(small, big)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, world, port, x, out_dir):
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        st = FeatureStats(keep_features=True)
        # rank 0 gets rows 0..69 in two batches, rank 1 rows 70..99; a rank may also be empty
        mine = x[:70] if rank == 0 else x[70:]
        for part in torch.split(mine, 40):
            st.update(part)
        st.all_reduce()
        st.save(os.path.join(out_dir, f"rank{rank}.npz"))
        empty = FeatureStats()
        if rank == 1:
            empty.update(x[:5])
        empty.all_reduce()
        assert empty.n == 5
    finally:
        dist.destroy_process_group()


def test_two_process_gloo_all_reduce_equals_one_process(tmp_path):
    x = _feats(100, 6, 10, 3.0)
    mp.start_processes(_worker, args=(2, _free_port(), x, str(tmp_path)), nprocs=2, start_method="spawn")
    single = FeatureStats(keep_features=True).update(x)
    for rank in (0, 1):
        st = FeatureStats.load(tmp_path / f"rank{rank}.npz")
        assert st.n == 100
        assert torch.allclose(st.mean(), single.mean(), rtol=1e-13)
        assert torch.allclose(st.cov(), single.cov(), rtol=1e-10, atol=1e-12)
        assert torch.equal(st.features(), x)  # gathered in rank order


def test_a_failed_save_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "s.npz"
    FeatureStats().update(_feats(10, 3, 0)).save(path, tag="old")

    def broken(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", broken)
    with pytest.raises(OSError, match="disk full"):
        FeatureStats().update(_feats(10, 3, 1)).save(path, tag="new")
    assert FeatureStats.load(path).metadata == {"tag": "old"}
    assert [p.name for p in tmp_path.iterdir()] == ["s.npz"]
