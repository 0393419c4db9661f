"""Compile-only mode (spiritlm_jax/aot.py): the trainers' very steps compiled for a TPU topology by
libtpu on this CPU host; memory, collectives and the exit codes."""

from __future__ import annotations

import importlib.util
import json

import pytest

from spiritlm_jax import aot, train, train_vocoder
from spiritlm_jax.config import ConfigError

needs_libtpu = pytest.mark.skipif(
    importlib.util.find_spec("libtpu") is None, reason="needs libtpu: pip install -e '.[tpu]'"
)
REPORT_KEYS = {
    "topology", "num_slices", "devices", "device_kind", "global_batch", "seq_len", "per_device_bytes", "hbm_bytes",
    "fits", "collectives", "model_flops_per_step",
}  # fmt: skip
SIZES = {"arguments", "temporaries", "outputs", "aliased", "code", "total"}


@needs_libtpu
def test_tiny_lm_compiles_for_v5e_2x2(tmp_path, capsys):
    """The demo model's step on a v5e-4, FSDP over the 4 chips: fits, report as documented; the
    FSDP step gathers its parameters (all-gather) and the FLOPs follow 6N + 12LSd."""
    from spiritlm_jax.training.config import TrainConfig
    from spiritlm_jax.training.metrics import train_flops_per_token

    report = tmp_path / "r.json"
    rc = train.main(["compile.topology=v5e:2x2", "mesh.data=1", "mesh.fsdp=-1", f"compile.report={report}"])
    assert rc == 0, capsys.readouterr().err
    r = json.loads(report.read_text())
    assert set(r) == REPORT_KEYS and set(r["per_device_bytes"]) == SIZES
    assert r["fits"] is True and r["devices"] == 4 and r["device_kind"] == "TPU v5 lite"
    cfg = TrainConfig()
    assert r["global_batch"] == cfg.data.batch_size  # one host: per-process batch x 1
    per = r["per_device_bytes"]
    assert per["total"] == per["arguments"] + per["temporaries"] + per["outputs"] - per["aliased"] + per["code"]
    # fp32 params + 2 AdamW moments, sharded 4 ways, are in the arguments
    assert per["arguments"] >= 3 * 4 * cfg.model.num_params() / 4
    assert 15 * 1024**3 < r["hbm_bytes"] < 16 * 1024**3
    assert r["collectives"]["all-gather"]["count"] > 0
    want = train_flops_per_token(cfg.model, cfg.data.seq_len) * cfg.data.batch_size * cfg.data.seq_len
    assert r["model_flops_per_step"] == pytest.approx(want)
    out = capsys.readouterr().out
    assert "headroom" in out and "fits: yes" in out


@needs_libtpu
def test_too_large_batch_exits_2_with_one_line(tmp_path, capsys):
    report = tmp_path / "r.json"
    rc = train.main(["compile.topology=v5e:2x2", "data.batch_size=65536", f"compile.report={report}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1 and "does not fit v5e:2x2: short by" in err[0] and "GiB" in err[0], err
    assert "data.batch_size" in err[0] and "model.remat" in err[0]
    assert json.loads(report.read_text())["fits"] is False


@needs_libtpu
def test_two_slices_put_dcn_on_the_data_axis():
    """Each slice's devices fill the (fsdp, tensor) plane; slices differ only along data."""
    from spiritlm_jax.model.sharding import make_mesh

    devices, hosts = aot.topology_devices("v5e:2x2", num_slices=2)
    assert len(devices) == 8 and hosts == 2
    mesh = make_mesh(1, -1, 1, devices=devices)
    assert dict(mesh.shape) == {"data": 2, "fsdp": 4, "tensor": 1}
    for i in range(2):
        assert {d.slice_index for d in mesh.devices[i].flat} == {i}


@pytest.mark.slow  # ~25 s of CPU: the GAN step is the slowest to compile, even this small
@needs_libtpu
def test_vocoder_compiles_for_v5e_2x2(tmp_path, capsys):
    report = tmp_path / "r.json"
    small = [  # the GAN step takes minutes to compile at the demo sizes; a one-device mesh of the pod
        "devices=1", "data.batch_size=1", "data.segment_frames=2", "model.upsample_initial_channel=32",
        "model.resblock_kernel_sizes=[3]", "model.resblock_dilation_sizes=[[1]]", "discriminators.periods=[2]",
        "discriminators.mpd_channels=[4,8]", "discriminators.msd_scales=1", "discriminators.msd_channels=[4,8]",
        "discriminators.msd_kernels=[5,5]", "discriminators.msd_strides=[1,1]", "discriminators.msd_groups=[1,1]",
    ]  # fmt: skip
    rc = train_vocoder.main(["compile.topology=v5e:2x2", *small, f"compile.report={report}"])
    assert rc == 0, capsys.readouterr().err
    r = json.loads(report.read_text())
    assert set(r) == REPORT_KEYS and r["fits"] is True and r["devices"] == 4 and r["global_batch"] == 1
    assert r["model_flops_per_step"] > 0  # XLA's cost analysis (no FLOP convention for the GAN)


@needs_libtpu
def test_unknown_topology_is_one_line(capsys):
    assert train.main(["compile.topology=v5litepod-256"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "compile.topology='v5litepod-256'" in err[0]


def test_without_libtpu_the_message_says_how_to_get_it(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "libtpu" else real(name, *a))
    with pytest.raises(ConfigError, match=r'pip install -e "\.\[tpu\]"'):
        aot.topology_devices("v5e:2x2")


def test_collectives_are_counted_from_hlo_text():
    hlo = """
  %ag = bf16[4096,1024]{1,0} all-gather(bf16[16,1024]{1,0} %p), replica_groups={}
  %ags = (f32[8]{0}, f32[32]{0}) all-gather-start(f32[8]{0} %q), replica_groups={}
  %agd = f32[32]{0} all-gather-done((f32[8]{0}, f32[32]{0}) %ags)
  %ar = (f32[10]{0}, bf16[4]{0}) all-reduce(f32[10]{0} %a, bf16[4]{0} %b), to_apply=%add
  %rs = f32[2,3]{1,0} reduce-scatter(f32[8,3]{1,0} %c), dimensions={0}
  %fusion = f32[2]{0} fusion(f32[2]{0} %all-reduce.1), kind=kLoop
"""
    c = aot.collectives(hlo)
    assert c["all-gather"] == {"count": 2, "bytes": 4096 * 1024 * 2 + 32 * 4}
    assert c["all-reduce"] == {"count": 1, "bytes": 10 * 4 + 4 * 2}
    assert c["reduce-scatter"] == {"count": 1, "bytes": 6 * 4}
    assert c["all-to-all"]["count"] == 0
