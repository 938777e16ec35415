"""``model=cnn``: the small convolutional net, and every method with it on tiny synthetic data.

The net itself (shape, parameter count, FLOPs written out by hand, EWC's Fisher over its
convolutions checked against a per-sample loop, freezing by layer name), then one run per method
and retention option through ``train(cfg)`` (``data=synthetic``, 1 pretraining epoch, 1 epoch per
stage, one shared baseline cache), checked against the cached baseline and the hand-counted FLOPs.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import torch
from hydra.utils import instantiate

from seqft_lightning.api import train
from seqft_lightning.cost import flops_per_sample
from seqft_lightning.models.components import CNN
from seqft_lightning.retention import Freeze
from seqft_lightning.retention.ewc import empirical_fisher
from tests.conftest import per_sample_fisher


def _cnn_flops() -> tuple[int, int]:
    """Matmul FLOPs per sample of the default CNN, (forward, training step), written out by hand:
    conv1 1->24 5x5 on 28x28 outputs, conv2 24->32 5x5 on 14x14 outputs (padding 2), fc 1568->50,
    50->10. A multiply-add is 2 FLOPs. Backward: every layer's weight gradient, and the input
    gradient of every layer but the first (the image needs none)."""
    conv1 = 2 * 28 * 28 * 24 * (1 * 5 * 5)
    conv2 = 2 * 14 * 14 * 32 * (24 * 5 * 5)
    fc1, output = 2 * 1568 * 50, 2 * 50 * 10
    forward = conv1 + conv2 + fc1 + output
    backward = forward + (conv2 + fc1 + output)
    return forward, forward + backward


def test_cnn_shape_parameters_and_layer_names(compose):
    net = instantiate(compose(["model=cnn"]).model)
    assert isinstance(net, CNN) and net.num_classes == 10
    assert sum(p.numel() for p in net.parameters()) == 98_816 < 100_000
    weights = [n for n, m in net.layers.named_children() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))]
    assert weights == ["conv1", "conv2", "fc1", "output"]
    x = torch.randn(5, 784)
    # the data modules serve flattened rows; images of any layout give the same logits
    assert net(x).shape == (5, 10)
    torch.testing.assert_close(net(x), net(x.reshape(5, 28, 28)), rtol=0, atol=0)
    torch.testing.assert_close(net(x), net(x.reshape(5, 1, 28, 28)), rtol=0, atol=0)
    with pytest.raises(ValueError, match="leave nothing"):
        CNN(channels=[4, 4, 4, 4, 4], kernel_size=5, padding=0)


def test_flop_counting_covers_the_convolutions():
    forward, step = _cnn_flops()
    x, y = torch.randn(8, 784), torch.randint(0, 10, (8,))
    assert flops_per_sample(CNN(), x, y) == (step, forward)
    assert (forward, step) == (8_625_000, 24_934_200)


def test_ewc_fisher_covers_the_convolutions():
    """The Fisher over every CNN parameter (convolutions: torch.func's vmap path) equals the mean
    of squared per-sample gradients from a plain loop."""
    torch.manual_seed(0)
    net = CNN(channels=[4, 8], hidden_dims=[16])
    x, y = torch.randn(6, 784), torch.randint(0, 10, (6,))
    names = [n for n, _ in net.named_parameters()]
    assert any(n.startswith("layers.conv") for n in names)
    fisher = empirical_fisher(net, x, y, names, batch_size=4)
    ref = per_sample_fisher(net, x, y)
    for n in names:
        torch.testing.assert_close(fisher[n], ref[n], rtol=1e-4, atol=1e-10)
    assert fisher["layers.conv1.weight"].sum() > 0 and fisher["layers.conv2.weight"].sum() > 0


@pytest.mark.parametrize("trainable, expected", [
    (["output"], {"output"}),
    (["fc1", "output"], {"fc1", "output"}),
    ([-2, "output"], {"fc1", "output"}),  # layer indices count the convolutions too
    ([1], {"conv2"}),
    (["layers.conv1.bias"], None),
])
def test_freeze_names_the_cnn_layers(trainable, expected):
    net = CNN()
    Freeze(trainable).on_stage_start(net, 1, [3])
    kept = {n for n, p in net.named_parameters() if p.requires_grad}
    if expected is None:
        assert kept == {"layers.conv1.bias"}
    else:
        assert kept == {f"layers.{layer}.{kind}" for layer in expected for kind in ("weight", "bias")}


def test_freeze_refuses_an_unknown_cnn_layer():
    with pytest.raises(ValueError, match="unknown trainable entry 'fc9'"):
        Freeze(["fc9"]).on_stage_start(CNN(), 1, [3])


# -- every method with model=cnn ----------------------------------------------------------------
FAST = ["model=cnn", "data=synthetic", "trainer=cpu", "pretrain.epochs=1", "method.epochs_per_stage=1",
        "logger=none", "callbacks=none", "trainer.enable_progress_bar=false"]
LAMBDAS = "method.lambda_grid=[0,0.5,1]"
RUNS = {
    "baseline": ["method=baseline"],
    "sequential": ["method=sequential"],
    "joint": ["method=joint"],
    "sequential+replay": ["method=sequential", "retention=replay", "retention.memory_per_class=10"],
    "sequential+ewc": ["method=sequential", "retention=ewc", "retention.fisher_samples=20"],
    "joint+ewc": ["method=joint", "retention=ewc", "retention.fisher_samples=20"],
    "sequential+lwf": ["method=sequential", "retention=lwf"],
    "sequential+l2sp": ["method=sequential", "retention=l2sp"],
    "sequential+freeze": ["method=sequential", "retention=freeze", "retention.trainable=[fc1,output]"],
    "task_arithmetic": ["method=task_arithmetic", LAMBDAS],
    "ties": ["method=ties", LAMBDAS],
    "dare": ["method=dare", LAMBDAS],
    "average": ["method=average"],
    "task_negation": ["method=task_negation", LAMBDAS],
}
SAMPLES = 20  # data=synthetic: per task class; one batch per epoch


@pytest.fixture(scope="module")
def cnn_runs(tmp_path_factory, compose_cfg):
    base = tmp_path_factory.mktemp("cnn")
    out = {}
    for name, overrides in RUNS.items():
        # task negation holds out only its forgotten class: another split, its own baseline
        cache = base / ("cache_negation" if name == "task_negation" else "cache")
        metrics, objects = train(compose_cfg([*FAST, *overrides], base / name, cache))
        out[name] = (base / name, metrics, cache)
        if name == "sequential+ewc":
            out["ewc_fisher"] = dict(objects["runner"].retention.fisher)
    return out


def _baseline_state(cache: Path) -> dict[str, torch.Tensor]:
    found = sorted(Path(cache).glob("baseline-*.pt"))
    assert len(found) == 1, found  # every method of the same task classes shares one CNN baseline
    return torch.load(found[0], map_location="cpu", weights_only=True)["state_dict"]


def _final_state(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoints" / "final.pt", map_location="cpu", weights_only=True)["state_dict"]


@pytest.mark.parametrize("name", list(RUNS))
def test_every_method_runs_with_the_cnn(cnn_runs, name):
    run_dir, metrics, cache = cnn_runs[name]
    assert (run_dir / "metrics.json").is_file()
    final, state = metrics["final"], _final_state(run_dir)
    assert 0.0 <= final["test/acc"] <= 1.0 and final["calibration/acc"] == final["calibration/acc"]
    assert "layers.conv1.weight" in state and state["layers.conv2.weight"].shape == (32, 24, 5, 5)
    assert metrics["retention_inactive"] is None and metrics["divergence"] is None
    base = _baseline_state(cache)
    moved = not all(torch.equal(state[k], base[k]) for k in base)
    assert moved is (name != "baseline" and metrics.get("lambda") != 0)  # a merging lambda of 0 is the baseline


def test_training_flops_count_the_convolutions(cnn_runs):
    forward, step = _cnn_flops()
    for name in ("sequential", "joint"):
        cost = cnn_runs[name][1]["cost"]
        assert cost["cost/train_samples"] == 3 * SAMPLES
        assert cost["cost/train_flops"] == pytest.approx(3 * SAMPLES * step)
    # EWC adds its Fisher: per-sample gradients and label draws of 20 pool images at the start and
    # 20 task images before stages 2 and 3
    ewc = cnn_runs["sequential+ewc"][1]["cost"]
    assert ewc["cost/train_flops"] == pytest.approx(3 * SAMPLES * step + 3 * 20 * (step + forward))


def test_freeze_trains_only_the_named_layers(cnn_runs):
    run_dir, _, cache = cnn_runs["sequential+freeze"]
    state, base = _final_state(run_dir), _baseline_state(cache)
    for key in base:
        frozen = key.startswith(("layers.conv1.", "layers.conv2."))
        assert torch.equal(state[key], base[key]) is frozen, key


def test_ewc_fisher_of_the_run_covers_the_convolutions(cnn_runs):
    fisher = cnn_runs["ewc_fisher"]
    assert {"layers.conv1.weight", "layers.conv2.weight", "layers.fc1.weight", "layers.output.weight"} <= set(fisher)
    assert all(float(fisher[k].sum()) > 0 for k in ("layers.conv1.weight", "layers.conv2.weight"))


def test_validating_once_per_stage_leaves_every_number_but_the_curves(tmp_path, compose_cfg):
    """The reduced CNN study (``experiment=fashion_mnist_cnn_cpu``) validates once per stage
    (``trainer.check_val_every_n_epoch``): the weights and every recorded metric are the same as
    with a validation pass after every epoch; only the curves and the evaluation cost thin out."""
    overrides = [*FAST, "method=sequential", "method.epochs_per_stage=2"]
    every, _ = train(compose_cfg(overrides, tmp_path / "every", tmp_path / "cache"))
    once, _ = train(compose_cfg([*overrides, "+trainer.check_val_every_n_epoch=2"], tmp_path / "once", tmp_path / "cache_once"))
    a, b = _final_state(tmp_path / "every"), _final_state(tmp_path / "once")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert once["final"] == every["final"] and once["per_stage"] == every["per_stage"]
    assert once["cost"]["cost/eval_flops"] == every["cost"]["cost/eval_flops"] / 2
