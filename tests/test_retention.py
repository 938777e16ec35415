"""Retention strategies on tiny synthetic data (784 -> 16 -> 16 -> 10 MLP)."""

from __future__ import annotations

import copy
from pathlib import Path
from types import SimpleNamespace

import pytest

import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn

from seqft_lightning.data.loaders import TensorBatchLoader
from seqft_lightning.retention import EWC, L2SP, Freeze, LwF, Replay, Retention
from seqft_lightning.retention.ewc import empirical_fisher
from tests.conftest import per_sample_fisher

CONF_DIR = Path(__file__).resolve().parents[1] / "conf" / "retention"


class TinyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(784, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 10)
        )

    def forward(self, x):
        return self.layers(x)


def make_data(classes, per_class, id_offset=0):
    """x[:, 0] holds a unique sample id so a sample can be traced through batches."""
    y = torch.tensor([c for c in classes for _ in range(per_class)], dtype=torch.long)
    x = torch.randn(len(y), 784)
    x[:, 0] = torch.arange(len(y), dtype=torch.float32) + id_offset
    return x, y


class FakeDataModule:
    def __init__(self, pretrain_classes=range(5), per_class=20):
        self.pretrain_x, self.pretrain_y = make_data(list(pretrain_classes), per_class, id_offset=10_000)
        self.device = torch.device("cpu")
        self._tasks = {}

    def task_data(self, classes):
        key = tuple(classes)
        if key not in self._tasks:
            self._tasks[key] = make_data(list(classes), 12, id_offset=1000 * (1 + key[0]))
        return self._tasks[key]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def perturb(net, scale=0.05):
    with torch.no_grad():
        for p in net.parameters():
            p.add_(scale * torch.randn_like(p))


# ------------------------------------------------------------------- base / configs
def test_base_is_noop_and_describes_itself():
    r = Retention()
    net = TinyNet()
    loader = TensorBatchLoader(*make_data([0], 4), batch_size=2)
    x = torch.randn(3, 784)
    assert r.wrap_train_loader(loader, 0, [0]) is loader
    assert r.penalty(net, x, torch.zeros(3, dtype=torch.long), net(x)) is None
    assert r.name == "none" and r.settings() == {}
    assert EWC().settings()["lambda_"] == 100.0


@pytest.mark.parametrize(
    "name, cls", [("none", Retention), ("replay", Replay), ("ewc", EWC), ("lwf", LwF), ("l2sp", L2SP), ("freeze", Freeze)]
)
def test_configs_instantiate(name, cls):
    # the node as it sits in the composed config, where `${seed}` is the run seed
    obj = instantiate(OmegaConf.create({"seed": 7, "node": OmegaConf.load(CONF_DIR / f"{name}.yaml")}).node)
    assert type(obj) is cls
    assert obj.name == name
    if hasattr(obj, "seed"):
        assert obj.seed == 7  # the memory draw and the Fisher subset follow the run seed


# --------------------------------------------------------------------------- replay
def test_replay_batches_contain_memory_of_earlier_classes():
    dm = FakeDataModule(pretrain_classes=range(5), per_class=20)
    replay = Replay(memory_per_class=5, replay_share=0.5, seed=1)
    net = TinyNet()
    replay.on_finetune_start(net, dm)
    assert replay.memory_counts() == {c: 5 for c in range(5)}
    pool_ids = set(dm.pretrain_x[:, 0].tolist())

    # Stage 0: task classes 5, 6; 24 samples, batch 8 -> 3 batches.
    classes0 = [5, 6]
    task_loader = TensorBatchLoader(*dm.task_data(classes0), batch_size=8)
    loader = replay.wrap_train_loader(task_loader, 0, classes0)
    batches = list(loader)
    assert len(loader) == len(task_loader) == len(batches) == 3
    for xb, yb in batches:
        assert len(yb) == 16  # share 0.5 -> as many memory samples as task samples
        task_part, mem_part = yb[:8], yb[8:]
        assert set(task_part.tolist()) <= {5, 6}
        assert set(mem_part.tolist()) <= set(range(5))
        assert set(xb[8:, 0].tolist()) <= pool_ids  # genuine pool samples, labels intact
        for i in range(8, 16):
            j = (dm.pretrain_x[:, 0] == xb[i, 0]).nonzero().item()
            assert dm.pretrain_y[j] == yb[i]
    replay.on_stage_end(net, 0, classes0, dm)
    assert replay.memory_counts() == {**{c: 5 for c in range(5)}, 5: 5, 6: 5}
    assert classes0 == [5, 6]

    # Stage 1: memory now also replays stage 0's classes.
    classes1 = [7, 8]
    task_loader = TensorBatchLoader(*dm.task_data(classes1), batch_size=8)
    loader = replay.wrap_train_loader(task_loader, 1, classes1)
    seen = set()
    for _ in range(10):
        for _, yb in loader:
            seen.update(yb[8:].tolist())
    assert {5, 6} <= seen
    assert not seen & {7, 8}


def test_replay_share_partial_batches_and_cap():
    dm = FakeDataModule(pretrain_classes=[0, 1], per_class=3)
    replay = Replay(memory_per_class=4, replay_share=0.25)
    replay.on_finetune_start(TinyNet(), dm)
    assert replay.memory_counts() == {0: 3, 1: 3}  # fewer than the cap available
    # A stage on class 0 tops class 0 up to the cap of 4, class 2 gets 4 of 12.
    replay.on_stage_end(TinyNet(), 0, [0, 2], dm)
    assert replay.memory_counts() == {0: 4, 1: 3, 2: 4}

    x, y = make_data([3], 20)
    task_loader = TensorBatchLoader(x, y, batch_size=6)  # batches of 6, 6, 6, 2
    sizes = [len(yb) for _, yb in replay.wrap_train_loader(task_loader, 1, [3])]
    # k = round(6 * 0.25 / 0.75) = 2 -> 8 (share 2/8 = 0.25); last: round(2/3) = 1 -> 3
    assert sizes == [8, 8, 8, 3]


def test_replay_empty_memory_yields_task_batches_unchanged():
    dm = SimpleNamespace(pretrain_x=torch.empty(0, 784), pretrain_y=torch.empty(0, dtype=torch.long))
    replay = Replay(memory_per_class=5)
    replay.on_finetune_start(TinyNet(), dm)
    task_loader = TensorBatchLoader(*make_data([0, 1], 5), batch_size=4, shuffle=False)
    loader = replay.wrap_train_loader(task_loader, 0, [0, 1])
    for (xa, ya), (xb, yb) in zip(loader, task_loader):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    # include_pretrain=False also starts with an empty memory.
    r2 = Replay(include_pretrain=False)
    r2.on_finetune_start(TinyNet(), FakeDataModule())
    assert r2.memory_counts() == {}


def test_replay_memory_is_seeded_and_independent_of_global_rng():
    dm = FakeDataModule()
    mems = []
    for global_seed in (0, 123):
        torch.manual_seed(global_seed)
        r = Replay(memory_per_class=3, seed=7)
        r.on_finetune_start(TinyNet(), dm)
        mems.append(r.memory()[0][:, 0])
    assert torch.equal(mems[0], mems[1])
    r = Replay(memory_per_class=3, seed=8)
    r.on_finetune_start(TinyNet(), dm)
    assert not torch.equal(mems[0], r.memory()[0][:, 0])


def test_replay_rejects_bad_share():
    with pytest.raises(ValueError):
        Replay(replay_share=1.0)


# ------------------------------------------------------------------------------ EWC
def test_ewc_penalty_zero_at_anchor_and_positive_away():
    dm = FakeDataModule()
    net = TinyNet()
    ewc = EWC(lambda_=10.0, fisher_samples=50, batch_size=16)
    ewc.on_finetune_start(net, dm)
    x = torch.randn(4, 784)
    y = torch.zeros(4, dtype=torch.long)
    assert ewc.penalty(net, x, y, net(x)).item() == 0.0
    assert all((f >= 0).all() for f in ewc.fisher.values())
    assert sum(f.sum() for f in ewc.fisher.values()) > 0

    anchor = {n: p.detach().clone() for n, p in net.named_parameters()}
    perturb(net)
    pen = ewc.penalty(net, x, y, net(x))
    assert pen.item() > 0
    expected = 0.5 * 10.0 * sum(
        (ewc.fisher[n] * (p.detach() - anchor[n]) ** 2).sum() for n, p in net.named_parameters()
    )
    assert pen.item() == pytest.approx(expected.item(), rel=1e-5)
    pen.backward()  # the penalty is differentiable w.r.t. the net
    assert net.layers[0].weight.grad is not None


@pytest.mark.parametrize("kind", ["linear", "conv"])
def test_empirical_fisher_matches_per_sample_loop(kind):
    # Linear layers take the two-matmul path; a convolution's parameters take torch.func's vmap.
    torch.manual_seed(0)
    conv = nn.Sequential(nn.Unflatten(1, (1, 28, 28)), nn.Conv2d(1, 2, 5, stride=4), nn.Flatten(), nn.Linear(72, 10))
    net = TinyNet() if kind == "linear" else conv
    x, y = make_data([0, 1, 2], 2)
    names = [n for n, _ in net.named_parameters()]
    fisher = empirical_fisher(net, x, y, names, batch_size=4)  # chunks of 4 + 2
    ref = per_sample_fisher(net, x, y)
    for n in names:
        torch.testing.assert_close(fisher[n], ref[n], rtol=1e-4, atol=1e-8)


def test_ewc_online_update_and_empty_pool():
    dm = SimpleNamespace(pretrain_x=torch.empty(0, 784), pretrain_y=torch.empty(0, dtype=torch.long),
                         task_data=FakeDataModule().task_data)
    net = TinyNet()
    ewc = EWC(lambda_=1.0, decay=0.5, fisher_samples=30, fisher="empirical", normalize=False)
    ewc.on_finetune_start(net, dm)
    perturb(net)
    x = torch.randn(2, 784)
    assert ewc.penalty(net, x, None, net(x)).item() == 0.0  # F = 0 without a pool

    ewc.on_stage_end(net, 1, [3, 4], dm)  # the anchor moves now; stage 1's Fisher waits for stage 2
    assert ewc.penalty(net, x, None, net(x)).item() == 0.0  # anchor moved to θ_stage1
    ewc.on_stage_start(net, 2, [5])  # estimated on stage 1's task data, the net as stage 1 left it
    f1 = {n: f.clone() for n, f in ewc.fisher.items()}
    x34, y34 = dm.task_data([3, 4])
    for n, f in empirical_fisher(net, x34, y34, list(f1), 64).items():
        torch.testing.assert_close(f1[n], f)
    assert sum(f.sum() for f in f1.values()) > 0
    perturb(net)
    assert ewc.penalty(net, x, None, net(x)).item() > 0

    used = ewc.fisher_samples_used
    ewc.on_stage_end(net, 2, [5], dm)  # were stage 2 the last, no Fisher would be computed
    assert ewc.fisher_samples_used == used
    ewc.on_stage_start(net, 3, [6])
    x5, y5 = dm.task_data([5])
    f_new = empirical_fisher(net, x5, y5, list(f1), 64)  # all 12 samples (< fisher_samples)
    for n in f1:
        torch.testing.assert_close(ewc.fisher[n], 0.5 * f1[n] + f_new[n])


def test_ewc_damping_is_a_floor_under_every_weight():
    net = TinyNet()
    plain, damped = EWC(lambda_=2.0, damping=0.0), EWC(lambda_=2.0, damping=0.5)
    for ewc in (plain, damped):
        ewc.anchor = {n: p.detach().clone() for n, p in net.named_parameters()}
        ewc.fisher = {n: torch.zeros_like(p) for n, p in ewc.anchor.items()}  # no parameter moved any image
    perturb(net)
    x = torch.randn(2, 784)
    distance = sum(((p - plain.anchor[n]) ** 2).sum() for n, p in net.named_parameters())
    assert plain.penalty(net, x, None, net(x)).item() == 0.0  # F = 0: free to move at any λ
    assert damped.penalty(net, x, None, net(x)).item() == pytest.approx(0.5 * 2.0 * 0.5 * distance.item(), rel=1e-5)


# ------------------------------------------------------------------------------ LwF
def test_lwf_zero_for_teacher_and_positive_after_change():
    net = TinyNet()
    lwf = LwF(alpha=2.0, temperature=3.0)
    assert lwf.penalty(net, torch.randn(2, 784), None, net(torch.randn(2, 784))) is None
    lwf.on_stage_start(net, 0, [5, 6])
    x = torch.randn(8, 784)
    y = torch.zeros(8, dtype=torch.long)
    assert lwf.penalty(net, x, y, net(x)).item() == pytest.approx(0.0, abs=1e-7)

    teacher_logits = net(x).detach()
    perturb(net, 0.2)
    logits = net(x)
    pen = lwf.penalty(net, x, y, logits)
    assert pen.item() > 0
    p_t = F.softmax(teacher_logits / 3.0, dim=1)
    kl = (p_t * (p_t.log() - F.log_softmax(logits / 3.0, dim=1))).sum(1).mean()
    assert pen.item() == pytest.approx((2.0 * 9.0 * kl).item(), rel=1e-4)
    # The teacher is a frozen copy, unaffected by the student's change.
    assert torch.allclose(lwf.teacher(x), teacher_logits)
    assert not any(p.requires_grad for p in lwf.teacher.parameters())
    lwf.on_stage_end(net, 0, [5, 6], None)
    assert lwf.penalty(net, x, y, net(x)) is None


# ----------------------------------------------------------------------------- L2SP
def test_l2sp_zero_at_start_and_matches_formula():
    net = TinyNet()
    l2sp = L2SP(alpha=0.3)
    l2sp.on_finetune_start(net, None)
    x = torch.randn(2, 784)
    assert l2sp.penalty(net, x, None, net(x)).item() == 0.0
    delta = 0.1 * torch.randn_like(net.layers[2].weight)
    with torch.no_grad():
        net.layers[2].weight.add_(delta)
    pen = l2sp.penalty(net, x, None, net(x))
    assert pen.item() > 0
    assert pen.item() == pytest.approx(0.5 * 0.3 * (delta ** 2).sum().item(), rel=1e-4)


# --------------------------------------------------------------------------- Freeze
def _train_steps(net, steps=5):
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)  # all params, weight_decay=0
    x, y = make_data([0, 1, 2], 4)
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(net(x), y).backward()
        opt.step()


def test_freeze_output_keeps_other_weights_bit_identical():
    net = TinyNet()
    _train_steps(net, 1)  # leave stale grads around, as after an earlier stage
    before = copy.deepcopy(net.state_dict())
    classes = [0, 1, 2]
    Freeze(("output",)).on_stage_start(net, 0, classes)
    _train_steps(net)
    after = net.state_dict()
    for name in ["layers.0.weight", "layers.0.bias", "layers.2.weight", "layers.2.bias"]:
        assert torch.equal(after[name], before[name]), name
    assert not torch.equal(after["layers.4.weight"], before["layers.4.weight"])
    assert not torch.equal(after["layers.4.bias"], before["layers.4.bias"])
    assert classes == [0, 1, 2]


def test_freeze_accepts_indices_and_prefixes():
    net = TinyNet()
    Freeze([0, "layers.2.bias"]).on_stage_start(net, 0, [0])
    trainable = {n for n, p in net.named_parameters() if p.requires_grad}
    assert trainable == {"layers.0.weight", "layers.0.bias", "layers.2.bias"}
    net = TinyNet()
    Freeze("-1").on_stage_start(net, 0, [0])  # string index from a CLI override
    assert {n for n, p in net.named_parameters() if p.requires_grad} == {"layers.4.weight", "layers.4.bias"}


@pytest.mark.parametrize("bad", ["head", 3, "layers.1", "layers.4.w"])
def test_freeze_unknown_entry_raises(bad):
    with pytest.raises(ValueError, match="Freeze"):
        Freeze((bad,)).on_stage_start(TinyNet(), 0, [0])


@pytest.mark.parametrize("damping", [0.0, 0.5])
def test_ewc_penalty_gradient_is_the_per_tensor_one_bit_for_bit(damping):
    """The penalty works on all parameters as one flat vector; each entry's gradient is still the
    per-tensor formula's (the same elementwise arithmetic), so training follows the same bits."""
    torch.manual_seed(3)
    net = TinyNet()
    ewc = EWC(lambda_=7.0, damping=damping)
    ewc.anchor = {n: p.detach().clone() for n, p in net.named_parameters()}
    ewc.fisher = {n: torch.rand_like(p) for n, p in ewc.anchor.items()}
    perturb(net)
    x = torch.randn(2, 784)
    ewc.penalty(net, x, None, net(x)).backward()
    flat = {n: p.grad.clone() for n, p in net.named_parameters()}
    net.zero_grad(set_to_none=True)
    per_tensor = 0  # the per-tensor penalty as it was written before: w = F·d² (+ ε·d², one d² shared)
    for n, p in net.named_parameters():
        sq = (p - ewc.anchor[n]).pow(2)
        weight = ewc.fisher[n] * sq
        per_tensor = per_tensor + (weight + damping * sq if damping else weight).sum()
    (0.5 * 7.0 * per_tensor).backward()
    for n, p in net.named_parameters():
        assert torch.equal(flat[n], p.grad), n
    ewc.anchor = {n: t + 1 for n, t in ewc.anchor.items()}  # a new anchor (a stage's end) is read, not a stale copy
    assert ewc.penalty(net, x, None, net(x)).item() > 0.5 * 7.0 * per_tensor.item()
