"""Evaluation metrics against hand-computed values and torchmetrics; ``ClassifierModule``:
training, optimizer, validation curves, retention penalty."""

from __future__ import annotations

import functools
import math

import lightning.pytorch as pl
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.classification import MulticlassF1Score, MulticlassPrecision, MulticlassRecall

from seqft_lightning.data import TensorBatchLoader
from seqft_lightning.data.loaders import StackedLoader
from seqft_lightning.evaluation import evaluate
from seqft_lightning.models import MLP, ClassifierModule


class Passthrough(nn.Module):
    """A "classifier" whose logits are its input: lets a test choose the predictions exactly."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.num_classes = num_classes
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        return x + 0 * self.dummy


def _trainer(**kwargs) -> pl.Trainer:
    defaults = dict(
        accelerator="cpu", devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0,
    )
    return pl.Trainer(**{**defaults, **kwargs})


def _test_metrics(logits: torch.Tensor, y: torch.Tensor, target_classes, batch_size: int = 4):
    evaluation = evaluate(Passthrough(logits.shape[1]), TensorBatchLoader(logits, y, batch_size, shuffle=False), logits.shape[1])
    return evaluation.metrics(target_classes), evaluation


def sgd(lr):
    return functools.partial(torch.optim.SGD, lr=lr)


# -- metrics ---------------------------------------------------------------------------------------
# true:  0 0 0 1 1 2      confusion (rows true, cols predicted):
# pred:  0 0 1 1 2 2        [[2, 1, 0],
#                            [0, 1, 1],
#                            [0, 0, 1]]
Y = torch.tensor([0, 0, 0, 1, 1, 2])
PRED = torch.tensor([0, 0, 1, 1, 2, 2])
LOGITS = F.one_hot(PRED, 3).float() * 3.0


def test_flat_metrics_match_hand_computed_values():
    results, evaluation = _test_metrics(LOGITS, Y, target_classes=[1, 2])
    assert evaluation.confusion.tolist() == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    # precision per class: 2/2, 1/2, 1/2; recall: 2/3, 1/2, 1/1; F1: 4/5, 1/2, 2/3
    expected = {
        "test/acc": 4 / 6,
        "test/precision": (1 + 0.5 + 0.5) / 3,
        "test/recall": (2 / 3 + 0.5 + 1) / 3,
        "test/f1": (0.8 + 0.5 + 2 / 3) / 3,
        "test/acc_target": 2 / 3,  # classes 1, 2: 1 + 1 correct of 3
        "test/acc_retained": 2 / 3,  # class 0: 2 of 3
        "test/acc_class_0": 2 / 3,
        "test/acc_class_1": 0.5,
        "test/acc_class_2": 1.0,
        "test/precision_class_1": 0.5,
        "test/f1_class_0": 0.8,
        "test/loss": float(F.cross_entropy(LOGITS, Y)),
        "test/loss_class_2": float(F.cross_entropy(LOGITS[5:], Y[5:])),
    }
    for key, value in expected.items():
        # counts-based metrics are exact (float64); losses are float32 cross-entropies
        assert results[key] == pytest.approx(value, abs=1e-6 if "loss" in key else 1e-12), key


def test_target_and_retained_split_follows_target_classes():
    results, _ = _test_metrics(LOGITS, Y, target_classes=[0])
    assert results["test/acc_target"] == pytest.approx(2 / 3)
    assert results["test/acc_retained"] == pytest.approx(2 / 3)  # classes 1, 2: 2 of 3
    results, _ = _test_metrics(LOGITS, Y, target_classes=[2])
    assert results["test/acc_target"] == pytest.approx(1.0)
    assert results["test/acc_retained"] == pytest.approx(3 / 5)  # classes 0, 1: 2 + 1 of 5


def test_metrics_are_independent_of_batching():
    a, _ = _test_metrics(LOGITS, Y, [1, 2], batch_size=1)
    b, _ = _test_metrics(LOGITS, Y, [1, 2], batch_size=6)
    assert a == pytest.approx(b)


@pytest.mark.parametrize("seed", [0, 1])
def test_macro_metrics_agree_with_torchmetrics(seed):
    g = torch.Generator().manual_seed(seed)
    n, k = 300, 5
    y = torch.arange(n) % k  # every class present
    logits = torch.randn(n, k, generator=g) + 1.5 * F.one_hot(y, k)  # better than chance, not perfect
    results, _ = _test_metrics(logits, y, target_classes=[1, 3], batch_size=64)
    preds = logits.argmax(1)
    assert 0.3 < results["test/acc"] < 0.95
    assert results["test/acc"] == pytest.approx(float((preds == y).double().mean()))
    for key, metric in [("precision", MulticlassPrecision), ("recall", MulticlassRecall), ("f1", MulticlassF1Score)]:
        reference = float(metric(num_classes=k, average="macro")(logits, y))
        assert results[f"test/{key}"] == pytest.approx(reference, abs=1e-6), key


def test_a_class_with_no_samples_and_no_predictions_counts_as_zero_in_macro_averages():
    """The project's one convention (contract.py): such a class scores 0 and stays in the mean.

    torchmetrics' own macro average would drop it (1/2 here instead of 1/3)."""
    y = torch.tensor([0, 0, 1, 1])
    logits = F.one_hot(torch.tensor([0, 0, 1, 0]), 3).float()  # class 2: no sample, no prediction
    results, _ = _test_metrics(logits, y, target_classes=[2])
    # precision: 2/3, 1/1, 0; recall: 1, 1/2, 0
    assert results["test/precision"] == pytest.approx((2 / 3 + 1 + 0) / 3)
    assert results["test/recall"] == pytest.approx((1 + 0.5 + 0) / 3)
    assert math.isnan(results["test/acc_target"])  # no samples of the target class: undefined
    dropped = float(MulticlassRecall(num_classes=3, average="macro")(logits, y))
    assert dropped == pytest.approx(0.75) and results["test/recall"] != pytest.approx(dropped)


def test_validation_curves_use_the_same_metric_functions_as_test():
    pl.seed_everything(0, verbose=False)
    x, y = _synthetic(n=96)
    net = MLP(input_dim=8, hidden_dims=[8], num_classes=3)
    module = ClassifierModule(net)
    module.begin_stage(1, sgd(0.1), step_offsets=7)
    calib = TensorBatchLoader(x[:40], y[:40], 16, shuffle=False)
    _trainer(max_epochs=1).fit(module, train_dataloaders=StackedLoader([TensorBatchLoader(x, y, 32)]), val_dataloaders=StackedLoader([calib]))
    rows = {r["metric"]: r for r in module.take_curves()[0] if r["split"] == "val"}
    expected = evaluate(net, calib, 3).metrics([0], prefix="val")
    for name in ("acc", "precision", "recall", "f1", "loss"):
        assert rows[name]["value"] == pytest.approx(expected[f"val/{name}"], abs=1e-6), name
    assert rows["acc"]["step"] == 7 + 3 and rows["acc"]["stage"] == 1  # continuous step axis
    assert module.take_curves() == [[]]  # handed over once


# -- training --------------------------------------------------------------------------------------
def _synthetic(n=256, d=8, k=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(d, k, generator=g)
    x = torch.randn(n, d, generator=g)
    return x, (x @ w).argmax(1)


def _full_loss(net, x, y) -> float:
    with torch.no_grad():
        return float(F.cross_entropy(net(x), y))


def test_a_few_epochs_lower_the_loss():
    pl.seed_everything(0, verbose=False)
    x, y = _synthetic()
    net = MLP(input_dim=8, hidden_dims=[16], num_classes=3)
    module = ClassifierModule(net)
    module.begin_stage(1, functools.partial(torch.optim.Adam, lr=0.01), step_offsets=0)
    before = _full_loss(net, x, y)
    _trainer(max_epochs=5).fit(module, train_dataloaders=StackedLoader([TensorBatchLoader(x, y, 32)]))
    after = _full_loss(net, x, y)
    assert after < 0.7 * before
    train_losses = [r["value"] for r in module.take_curves()[0] if r["split"] == "train" and r["metric"] == "loss"]
    assert len(train_losses) == 5 and train_losses[-1] < train_losses[0]


def test_configure_optimizers_uses_the_partial():
    net = MLP(input_dim=8, hidden_dims=[4], num_classes=3)
    module = ClassifierModule(net)
    module.begin_stage(1, sgd(0.123), step_offsets=0)
    opt = module.configure_optimizers()
    assert type(opt) is torch.optim.SGD
    assert opt.param_groups[0]["lr"] == 0.123
    params = [p for group in opt.param_groups for p in group["params"]]
    assert [id(p) for p in params] == [id(p) for p in net.parameters()]
    # begin_stage swaps the optimizer for the next fit
    module.begin_stage(2, functools.partial(torch.optim.Adam, lr=0.5), step_offsets=0)
    opt = module.configure_optimizers()
    assert type(opt) is torch.optim.Adam and opt.param_groups[0]["lr"] == 0.5 and module.stage == 2


def test_no_optimizer_is_an_error():
    with pytest.raises(RuntimeError, match="begin_stage"):
        ClassifierModule(MLP(8, [4], 3)).configure_optimizers()


@pytest.mark.parametrize("lr, changes", [(0.0, False), (0.5, True)])
def test_fit_trains_with_the_given_optimizer(lr, changes):
    pl.seed_everything(0, verbose=False)
    x, y = _synthetic(n=64)
    net = MLP(input_dim=8, hidden_dims=[4], num_classes=3)
    start = {k: v.clone() for k, v in net.state_dict().items()}
    module = ClassifierModule(net)
    module.begin_stage(1, sgd(lr), step_offsets=0)
    _trainer(max_epochs=1).fit(module, train_dataloaders=StackedLoader([TensorBatchLoader(x, y, 16)]))
    same = all(torch.equal(start[k], v) for k, v in net.state_dict().items())
    assert same is not changes


# -- retention penalty -----------------------------------------------------------------------------
class ConstantPenalty:
    def __init__(self, value):
        self.value, self.calls = value, []

    def penalty(self, net, x, y, logits):
        self.calls.append((net, x.shape, y.shape, logits.shape, logits.requires_grad))
        return None if self.value is None else torch.tensor(self.value)


class LossRecorder(pl.Callback):
    def __init__(self):
        self.losses = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses.append(float(outputs["loss"]))


def _step_losses(retention) -> list[float]:
    """Training-step losses over a fixed batch order with lr=0 (weights stay put)."""
    torch.manual_seed(0)
    x, y = _synthetic(n=48)
    net = MLP(input_dim=8, hidden_dims=[4], num_classes=3)
    module = ClassifierModule(net)
    module.begin_stage(1, sgd(0.0), step_offsets=0, penalties=None if retention is None else retention.penalty)
    recorder = LossRecorder()
    _trainer(max_epochs=1, callbacks=[recorder]).fit(module, train_dataloaders=StackedLoader([TensorBatchLoader(x, y, 16, shuffle=False)]))
    return recorder.losses


def test_retention_penalty_is_added_to_the_loss():
    plain = _step_losses(None)
    none_penalty = _step_losses(ConstantPenalty(None))
    stub = ConstantPenalty(2.5)
    penalised = _step_losses(stub)
    assert len(plain) == 3
    assert none_penalty == pytest.approx(plain)
    assert penalised == pytest.approx([v + 2.5 for v in plain], abs=1e-5)
    # the penalty sees the net, the batch and the logits (with their graph)
    assert len(stub.calls) == 3
    net, xs, ys, ls, grad = stub.calls[0]
    assert isinstance(net, MLP) and xs == (16, 8) and ys == (16,) and ls == (16, 3) and grad


def test_retention_penalty_gradient_reaches_the_weights():
    class WeightDecayPenalty:
        def penalty(self, net, x, y, logits):
            return 100.0 * sum((p**2).sum() for p in net.parameters())

    def norm_after(retention):
        pl.seed_everything(0, verbose=False)
        x, y = _synthetic(n=64)
        net = MLP(input_dim=8, hidden_dims=[8], num_classes=3)
        module = ClassifierModule(net)
        module.begin_stage(1, sgd(0.001), step_offsets=0, penalties=None if retention is None else retention.penalty)
        _trainer(max_epochs=2).fit(module, train_dataloaders=StackedLoader([TensorBatchLoader(x, y, 16)]))
        return float(sum((p.detach() ** 2).sum() for p in net.parameters()))

    assert norm_after(WeightDecayPenalty()) < 0.5 * norm_after(None)
