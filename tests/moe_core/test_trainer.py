"""The Trainer's contracts: determinism, bounded history, live changes, divergence, checkpoints, devices."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest
import torch

from moe_core.layer.config import MoEConfig
from moe_core.training.datasets import DataConfig
from moe_core.training.models import ModelConfig, TinyMoELM
from moe_core.training.trainer import TrainConfig, Trainer, resolve_device

SMALL = ModelConfig(MoEConfig(d_model=16, n_experts=4, top_k=2, expert_hidden=16, capacity_factor=1.0))
DATA = DataConfig(dataset="moons", n_samples=400)


def _trainer(model=SMALL, data=DATA, **train) -> Trainer:
    return Trainer(model, data, TrainConfig(**{"batch_size": 64, **train}))


def _without_time(df):
    return df.drop(columns=["step_ms"])


def test_same_configs_and_seed_give_the_same_run():
    a, b = _trainer(), _trainer()
    a.step(30)
    b.step(30)
    assert _without_time(a.history).equals(_without_time(b.history))
    for pa, pb in zip(a.model.parameters(), b.model.parameters(), strict=True):
        assert torch.equal(pa, pb)


def test_same_seed_same_run_even_with_router_noise_and_interleaving():
    cfg = ModelConfig(MoEConfig(d_model=16, n_experts=4, top_k=2, expert_hidden=16, router="noisy_topk"))
    a, b = _trainer(cfg), _trainer(cfg)
    for _ in range(5):  # interleaved, as two sessions on one server would be
        a.step(3)
        torch.randn(100)  # someone else using torch's global RNG in between
        b.step(3)
    assert _without_time(a.history).equals(_without_time(b.history))


def test_another_seed_gives_another_run():
    a, b = _trainer(seed=0), _trainer(seed=1)
    a.step(10)
    b.step(10)
    assert not np.allclose(a.history["loss"], b.history["loss"])


def test_history_follows_every_step_and_each_caller_gets_its_own_copy():
    t = _trainer(history_limit=20)
    assert t.history.empty
    t.step(3)
    first = t.history
    assert list(first["step"]) == [1, 2, 3]
    first.loc[0, "loss"] = -1.0  # a caller scribbles on its copy
    first["mine"] = 0.0
    assert t.history["loss"].iloc[0] != -1.0 and "mine" not in t.history.columns
    t.step(30)  # appended and thinned: the next read shows both
    again = t.history
    assert len(again) <= 20 and again["step"].iloc[-1] == 33
    assert again.equals(pd.DataFrame.from_records(t._records)), "the cached frame is the records, nothing stale"


def test_history_is_bounded_and_keeps_the_latest_steps():
    t = _trainer(history_limit=20)
    t.step(200)
    h = t.history
    assert len(h) <= 20
    assert h["step"].iloc[-1] == 200
    assert h["step"].is_monotonic_increasing
    assert h["step"].iloc[0] < 100, "older steps are thinned, not all dropped"


def test_records_have_the_metrics_the_views_need():
    t = _trainer()
    rec = t.step(1)[0]
    for key in ("step", "loss", "task_loss", "aux_loss", "z_loss", "accuracy", "load_cv", "max_vio", "dropped_frac",
                "router_entropy", "usage_entropy", "load_0", "load_3", "step_ms"):
        assert key in rec
    assert rec["load_0"] + rec["load_1"] + rec["load_2"] + rec["load_3"] == 64 * 2


def test_live_changes_apply_without_reset_and_bad_ones_change_nothing():
    t = _trainer()
    t.step(5)
    weights = [p.detach().clone() for p in t.model.parameters()]
    t.set_hyperparameters(capacity_factor=0.5, lr=1e-3, aux_loss_coef=0.0)
    assert t.step_count == 5
    assert all(torch.equal(a, b) for a, b in zip(weights, t.model.parameters(), strict=True))
    t.step(1)
    assert t.last_infos[0].capacity == 16  # ceil(0.5 * 2 * 64 / 4)
    assert t.optimizer.param_groups[0]["lr"] == 1e-3
    before = (t.model_config, t.train_config)
    with pytest.raises(ValueError, match="n_experts"):
        t.set_hyperparameters(n_experts=8)
    with pytest.raises(ValueError, match="lr"):
        t.set_hyperparameters(lr=-1.0, capacity_factor=2.0)
    assert (t.model_config, t.train_config) == before
    assert t.last_infos[0].capacity == 16


def test_a_non_finite_loss_stops_training_and_keeps_finite_weights():
    t = _trainer()
    t.step(5)
    with torch.no_grad():
        t.model.head.bias.fill_(float("nan"))  # what an exploding learning rate eventually does
    assert t.step(3) == []
    assert t.diverged and "loss became nan" in t.diverged and "learning rate" in t.diverged
    assert all(torch.isfinite(p).all() for p in t.model.parameters())
    assert t.step_count == 5
    assert t.run_for(0.05) == []


def test_a_huge_learning_rate_is_caught_not_crashed():
    t = _trainer(lr=100.0, grad_clip=0.0)
    t.step(300)
    assert all(torch.isfinite(p).all() for p in t.model.parameters())
    h = t.history
    assert t.diverged is not None or np.isfinite(h["loss"]).all()


def test_run_for_runs_at_least_one_step():
    t = _trainer()
    assert len(t.run_for(0.0)) == 1
    assert len(t.run_for(0.05)) >= 1


def test_checkpoint_round_trip(tmp_path):
    t = _trainer()
    t.step(10)
    path = tmp_path / "run.pt"
    t.save_checkpoint(path)
    again = Trainer.from_checkpoint(path, device="cpu")
    assert again.step_count == 10
    x = t.tensors.x_test[:20]  # on t's device (CUDA where there is one); `again` lives on the CPU
    t.model.eval()
    again.model.eval()
    torch.testing.assert_close(t.model(x)[0].cpu(), again.model(x.cpu())[0])
    assert again.model_config == t.model_config


def test_foreign_checkpoints_are_refused(tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"\x00\x01 not a checkpoint at all")
    with pytest.raises(ValueError, match="not a MoE Playground checkpoint"):
        Trainer.from_checkpoint(junk)
    other = tmp_path / "other.pt"
    torch.save({"state_dict": {}}, other)
    with pytest.raises(ValueError, match="not a MoE Playground checkpoint"):
        Trainer.from_checkpoint(other)
    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps(Trainer))  # arbitrary objects are refused by weights_only=True
    with pytest.raises(ValueError, match="not a MoE Playground checkpoint"):
        Trainer.from_checkpoint(evil)


def test_device_auto_and_missing_devices():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    if not torch.cuda.is_available() and torch.backends.mps.is_available():
        expected = "mps"
    assert resolve_device("auto").type == expected
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU"):
            resolve_device("cuda")


def test_language_model_refuses_non_causal_routers():
    for router in ("expert_choice", "soft"):
        cfg = ModelConfig(MoEConfig(d_model=16, n_experts=4, top_k=1, router=router), n_heads=2)
        with pytest.raises(ValueError, match="non-causal"):
            TinyMoELM(cfg, vocab_size=40)


def test_language_model_trains_and_snapshots_per_character_experts():
    cfg = ModelConfig(MoEConfig(d_model=16, n_experts=4, top_k=1, router="switch"), n_layers=2, context=32,
                      n_heads=2)
    t = Trainer(cfg, DataConfig(dataset="tokens", n_samples=500), TrainConfig(batch_size=4))
    recs = t.step(5)
    assert len(recs) == 5 and "accuracy" in recs[0]
    snap = t.snapshot()
    assert snap.task == "language" and len(snap.layers) == 2
    assert snap.layers[0].probe_text_experts.shape == (len(snap.probe_text),)
    assert len(snap.layers[0].top_tokens) == 4
    assert snap.layers[0].group_expert_counts.shape == (4, 4)


def test_dense_twin_has_the_active_width_of_the_moe():
    dense = _trainer(ModelConfig(SMALL.moe, dense=True))
    rec = dense.step(2)[-1]
    assert "load_cv" not in rec
    hidden = dense.model.ffns[0].mlp.w_out.in_features
    assert hidden == SMALL.moe.top_k * SMALL.moe.expert_hidden


def test_snapshot_routing_map_agrees_with_the_router():
    t = _trainer()
    t.step(20)
    snap = t.snapshot(grid_size=16)
    layer = snap.layers[0]
    assert layer.grid_probs.shape == (16, 16, 4)
    assert np.array_equal(layer.grid_top2[..., 0], layer.grid_probs.argmax(-1))
    assert snap.grid_prediction.shape == (16, 16)
    assert layer.kept_per_expert.sum() <= layer.tokens_per_expert.sum()
    assert layer.capacity == 32  # ceil(1.0 * 2 * 64 / 4)
    assert snap.parameters["total"] > snap.parameters["active"]


@pytest.mark.parametrize(("router", "capacity_factor", "n_layers"),
                         [("softmax_topk", None, 1), ("softmax_topk", 0.5, 2), ("expert_choice", 1.0, 1),
                          ("soft", None, 1), ("switch", 0.75, 2)])
def test_step_metrics_match_the_metrics_functions(router, capacity_factor, n_layers):
    """The record's routing numbers (one device read-back, counts turned into metrics in Python) equal the
    metrics module's functions on the step's RoutingInfo."""
    from moe_core.layer import metrics

    model = ModelConfig(MoEConfig(n_experts=6, top_k=1 if router == "switch" else 2, router=router,
                                  capacity_factor=capacity_factor,
                                  expert_hidden=16, d_model=16), n_layers=n_layers)
    t = Trainer(model, DataConfig(dataset="spirals"), TrainConfig(batch_size=64))
    t.step(3)
    rec = t.step(1)[0]
    infos = t.last_infos
    loads = torch.stack([i.tokens_per_expert for i in infos]).float().mean(0)
    assert rec["max_vio"] == pytest.approx(metrics.max_violation(loads), abs=1e-6)
    assert rec["load_cv"] == pytest.approx(metrics.load_cv(loads), abs=1e-6)
    assert rec["usage_entropy"] == pytest.approx(metrics.usage_entropy(loads), abs=1e-6)
    dropped = torch.cat([i.dropped for i in infos])
    selected = torch.cat([i.selected for i in infos])
    assert rec["dropped_frac"] == pytest.approx(metrics.dropped_fraction(dropped, selected), abs=1e-6)
    if capacity_factor == 0.5:
        assert rec["dropped_frac"] > 0  # the case is not vacuous
    probs = torch.cat([i.router_probs for i in infos])
    assert rec["router_entropy"] == pytest.approx(metrics.router_entropy(probs), abs=1e-5)
    assert [rec[f"load_{e}"] for e in range(6)] == pytest.approx(loads.tolist())


@pytest.mark.parametrize("grad_clip", [1e-3, 1.0, 1e6])
def test_gradient_clipping_matches_torch(grad_clip):
    """The trainer's clipping (four foreach calls; on a CPU the multiply is skipped when the coefficient is exactly
    1) gives the norm and the gradients of torch.nn.utils.clip_grad_norm_, whether it clips or not."""
    t = _trainer(grad_clip=grad_clip)
    t.step(3)
    x, y = t._batch()
    out, infos = t.model(x)
    loss = t.task_loss(out, y)[0] + sum(info.aux_loss for info in infos)
    loss.backward()
    grads = [p.grad.clone() for p in t.params]
    norm = t._clip_gradients()
    for p, g in zip(t.params, grads, strict=True):
        p.grad = g.clone()
    ref = torch.nn.utils.clip_grad_norm_(t.params, grad_clip)
    torch.testing.assert_close(norm, ref)
    clipped = [p.grad for p in t.params]
    t.model.zero_grad()
    for p, g in zip(t.params, grads, strict=True):
        p.grad = g.clone()
    t._clip_gradients()
    for a, b in zip([p.grad for p in t.params], clipped, strict=True):
        torch.testing.assert_close(a, b, atol=0, rtol=1e-6)
    assert (float(norm) > grad_clip) == any(not torch.equal(a, b) for a, b in zip(clipped, grads, strict=True))


def test_the_snapshot_reports_a_typical_step_not_the_last_one(monkeypatch):
    """'ms / step' is the median of the last RECENT_STEPS steps: one step that the machine slowed down (a clock
    that jumps by 150 ms inside it) does not move it, and the history still records that step's own time."""
    from moe_core.training import trainer as trainer_module

    t = _trainer()
    assert t.typical_step_ms == 0.0 and t.snapshot(grid_size=0).step_ms == 0.0, "nothing measured before a step"
    clock, calls, jump_on = [1000.0], [0], [0]

    def fake_perf_counter() -> float:  # each call 1 ms later: every step measures 1 ms, but the slowed one
        calls[0] += 1
        clock[0] += 0.001 + (0.150 if calls[0] == jump_on[0] else 0.0)
        return clock[0]

    monkeypatch.setattr(trainer_module.time, "perf_counter", fake_perf_counter)
    t.step(trainer_module.RECENT_STEPS)
    assert t.typical_step_ms == pytest.approx(1.0) and t.last_step_ms == pytest.approx(1.0)
    jump_on[0] = calls[0] + 2  # the next step's closing reading: the machine was busy elsewhere in between
    t.step(1)
    assert t.last_step_ms == pytest.approx(151.0), "the slow step itself was measured"
    assert t.typical_step_ms == pytest.approx(1.0) and t.snapshot(grid_size=0).step_ms == pytest.approx(1.0)
    assert t.history["step_ms"].iloc[-1] == pytest.approx(151.0), "the history keeps every step's own time"
