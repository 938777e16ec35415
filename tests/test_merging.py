"""Tests for seqft_lightning.merging: task vectors and merging methods on tiny models."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch import nn

from seqft_lightning.merging import (
    Average,
    Dare,
    TaskArithmetic,
    TaskVector,
    Ties,
    dare_sparsify,
    ties_merge,
)
from seqft_lightning.merging import state_dict_ops as ops

CONF_DIR = Path(__file__).resolve().parents[1] / "conf" / "merging"


# ---------------------------------------------------------------------- fixtures / helpers
class WithCounter(nn.Module):
    """Linear layer plus a long buffer (a counter) and a float buffer."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 3)
        self.register_buffer("steps", torch.tensor(5, dtype=torch.long))
        self.register_buffer("running", torch.zeros(3))


class TwoParams(nn.Module):
    """Two parameter tensors of 3 and 2 entries, to test a trim that spans tensors."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.zeros(3))
        self.b = nn.Parameter(torch.zeros(2))


def make_mlp(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 2))


def perturbed(model: nn.Module, seed: int, size: float = 0.1) -> nn.Module:
    """A deep copy of ``model`` with every float param/buffer shifted by seeded noise."""
    out = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for tensor in out.state_dict().values():
            if torch.is_floating_point(tensor):
                tensor.add_(size * torch.randn(tensor.shape, generator=gen))
    return out


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {key: tensor.clone() for key, tensor in model.state_dict().items()}


def assert_sd_equal(actual: nn.Module | dict, expected: nn.Module | dict) -> None:
    """Bit-for-bit equality of two state dicts (same keys, torch.equal per tensor)."""
    a = actual.state_dict() if isinstance(actual, nn.Module) else actual
    e = expected.state_dict() if isinstance(expected, nn.Module) else expected
    assert list(a) == list(e)
    for key in a:
        assert a[key].dtype == e[key].dtype, key
        assert torch.equal(a[key], e[key]), key


def assert_sd_close(actual: nn.Module | dict, expected: nn.Module | dict, atol: float) -> None:
    a = actual.state_dict() if isinstance(actual, nn.Module) else actual
    e = expected.state_dict() if isinstance(expected, nn.Module) else expected
    assert list(a) == list(e)
    for key in a:
        torch.testing.assert_close(a[key], e[key], atol=atol, rtol=0, msg=key)


def two_params_model(a: list[float], b: list[float]) -> TwoParams:
    model = TwoParams()
    with torch.no_grad():
        model.a.copy_(torch.tensor(a))
        model.b.copy_(torch.tensor(b))
    return model


def tv_ab(a: list[float], b: list[float]) -> TaskVector:
    return TaskVector({"a": torch.tensor(a), "b": torch.tensor(b)})


@pytest.fixture()
def base() -> nn.Module:
    return make_mlp(0)


@pytest.fixture()
def finetuned(base: nn.Module) -> dict[str, nn.Module]:
    return {"t1": perturbed(base, 1), "t2": perturbed(base, 2)}


# ---------------------------------------------------------------------- state_dict_ops
def test_ops_are_pure_and_correct() -> None:
    a = {"w": torch.tensor([1.0, 2.0]), "n": torch.tensor([3], dtype=torch.long)}
    b = {"w": torch.tensor([0.5, -1.0]), "n": torch.tensor([1], dtype=torch.long)}
    a_copy = {k: v.clone() for k, v in a.items()}
    assert torch.equal(ops.sub(a, b)["w"], torch.tensor([0.5, 3.0]))
    assert torch.equal(ops.add(a, b)["w"], torch.tensor([1.5, 1.0]))
    assert torch.equal(ops.scale(a, -2.0)["w"], torch.tensor([-2.0, -4.0]))
    assert list(ops.float_entries(a)) == ["w"]
    assert_sd_equal(a, a_copy)


def test_check_compatible_names_keys_and_shapes() -> None:
    a = {"x": torch.zeros(2), "y": torch.zeros(3)}
    with pytest.raises(ValueError, match=r"missing from the second: \['y'\].*extra.*\['z'\]"):
        ops.check_compatible(a, {"x": torch.zeros(2), "z": torch.zeros(3)}, "left vs right")
    with pytest.raises(ValueError, match=r"left vs right: shape mismatch at 'y': \(3,\) vs \(4,\)"):
        ops.check_compatible(a, {"x": torch.zeros(2), "y": torch.zeros(4)}, "left vs right")
    ops.check_compatible(a, {"y": torch.ones(3), "x": torch.ones(2)}, "ok")  # order-free


# ---------------------------------------------------------------------- TaskVector
def test_task_vector_sign_and_apply_gives_finetuned(base, finetuned) -> None:
    ft = finetuned["t1"]
    tau = TaskVector.from_models(base, ft)
    # Sign convention: tau = theta_ft - theta_0.
    w = "0.weight"
    assert torch.equal(tau.state_dict()[w], ft.state_dict()[w] - base.state_dict()[w])
    assert tau.norm() > 0
    rebuilt = tau.apply_to(base, 1.0)
    assert rebuilt is not base
    # theta_0 + (theta_ft - theta_0) is theta_ft up to one rounding of each operation.
    assert_sd_close(rebuilt, ft, atol=1e-6)
    assert not torch.equal(rebuilt.state_dict()[w], base.state_dict()[w])


def test_lambda_zero_is_base_bit_for_bit_and_base_untouched(base, finetuned) -> None:
    before = snapshot(base)
    tau = TaskVector.from_models(base, finetuned["t1"])
    out = tau.apply_to(base, 0.0)
    assert_sd_equal(out, before)
    assert_sd_equal(base, before)
    # The returned model does not share storage with base.
    with torch.no_grad():
        out[0].weight.add_(1.0)
    assert_sd_equal(base, before)


def test_apply_to_does_not_mutate_base_for_nonzero_lambda(base, finetuned) -> None:
    before = snapshot(base)
    TaskVector.from_models(base, finetuned["t1"]).apply_to(base, 0.7)
    assert_sd_equal(base, before)


def test_negation_and_sum(base, finetuned) -> None:
    t1 = TaskVector.from_models(base, finetuned["t1"])
    t2 = TaskVector.from_models(base, finetuned["t2"])
    zero = t1 + (-t1)
    assert all(torch.count_nonzero(v) == 0 for v in zero.state_dict().values())
    assert zero.norm() == 0.0
    assert_sd_equal((t1 - t1).state_dict(), zero.state_dict())

    expected = {k: t1.state_dict()[k] + t2.state_dict()[k] for k in t1.keys()}
    assert_sd_equal((t1 + t2).state_dict(), expected)
    assert_sd_equal(sum([t1, t2]).state_dict(), expected)
    assert_sd_equal((t1 + 0).state_dict(), t1.state_dict())
    assert_sd_equal((0 + t1).state_dict(), t1.state_dict())


def test_scalar_multiplication_and_norm() -> None:
    tau = tv_ab([3.0, 0.0, 0.0], [0.0, 4.0])
    assert tau.norm() == pytest.approx(5.0)
    assert_sd_equal((2 * tau).state_dict(), tv_ab([6.0, 0.0, 0.0], [0.0, 8.0]).state_dict())
    assert_sd_equal((tau * -0.5).state_dict(), tv_ab([-1.5, 0.0, 0.0], [0.0, -2.0]).state_dict())
    assert (tau / 2).norm() == pytest.approx(2.5)
    with pytest.raises(TypeError):
        tau + 1  # only the zero scalar is a neutral element
    with pytest.raises(TypeError):
        tau * tau


def test_state_dict_is_a_copy() -> None:
    tau = tv_ab([1.0, 2.0, 3.0], [4.0, 5.0])
    sd = tau.state_dict()
    sd["a"].zero_()
    assert torch.equal(tau.state_dict()["a"], torch.tensor([1.0, 2.0, 3.0]))


def test_constructor_copies_and_rejects_integer_tensors() -> None:
    delta = {"a": torch.tensor([1.0])}
    tau = TaskVector(delta)
    delta["a"].add_(1.0)
    assert torch.equal(tau.state_dict()["a"], torch.tensor([1.0]))
    with pytest.raises(ValueError, match="floating-point"):
        TaskVector({"n": torch.tensor([1])})


def test_mismatched_keys_and_shapes_raise(base, finetuned) -> None:
    tau = TaskVector.from_models(base, finetuned["t1"])
    other_arch = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 3))  # wrong head shape
    # Message order: base model first, task vector second.
    with pytest.raises(ValueError, match=r"shape mismatch at '2.weight': \(3, 5\) vs \(2, 5\)"):
        tau.apply_to(other_arch)
    with pytest.raises(ValueError, match="shape mismatch at '2.weight'"):
        TaskVector.from_models(base, other_arch)
    renamed = nn.Sequential(nn.Linear(4, 5), nn.Linear(5, 2))  # keys '1.*' instead of '2.*'
    with pytest.raises(ValueError, match=r"missing from the second: \['2.weight', '2.bias'\]"):
        TaskVector.from_models(base, renamed)
    with pytest.raises(ValueError, match="different keys"):
        tau.apply_to(renamed)
    with pytest.raises(ValueError, match="different keys"):
        tau + TaskVector({"a": torch.zeros(1)})


def test_non_float_buffers_are_skipped_and_copied_from_base() -> None:
    torch.manual_seed(0)
    base = WithCounter()
    ft = perturbed(base, 3)
    ft.steps.fill_(42)
    tau = TaskVector.from_models(base, ft)
    assert "steps" not in tau.keys()
    assert "running" in tau.keys()  # float buffers are part of the vector
    out = tau.apply_to(base, 1.0)
    assert out.steps.item() == 5 and out.steps.dtype == torch.long
    torch.testing.assert_close(out.running, ft.running, atol=1e-6, rtol=0)
    assert not torch.equal(out.running, base.running)


# ---------------------------------------------------------------------- TaskArithmetic
def test_task_arithmetic_equals_base_plus_lambda_sum(base, finetuned) -> None:
    lambda_ = 0.4
    b, f1, f2 = base.state_dict(), finetuned["t1"].state_dict(), finetuned["t2"].state_dict()
    expected = {k: b[k] + lambda_ * ((f1[k] - b[k]) + (f2[k] - b[k])) for k in b}
    out = TaskArithmetic(lambda_=lambda_).run(base, finetuned)
    assert_sd_close(out, expected, atol=1e-6)
    # Per-call override equals the attribute, and the cached vector path gives the same bits.
    method = TaskArithmetic(lambda_=0.3)
    overridden = method.run(base, finetuned, lambda_=lambda_)
    assert_sd_equal(overridden, out)
    assert method.lambda_ == 0.3  # the override does not stick
    merged = method.merged_task_vector(base, finetuned)
    assert_sd_equal(merged.apply_to(base, lambda_), out)


def test_lambda_zero_methods_return_base_and_never_mutate(base, finetuned) -> None:
    before = {name: snapshot(m) for name, m in {"base": base, **finetuned}.items()}
    for method in (TaskArithmetic(), Ties(keep_fraction=0.5), Dare(drop_rate=0.3)):
        out = method.run(base, finetuned, lambda_=0.0)
        assert_sd_equal(out, before["base"])
    Average().run(base, finetuned)
    for name, model in {"base": base, **finetuned}.items():
        assert_sd_equal(model, before[name])


def test_empty_finetuned_raises(base) -> None:
    for method in (TaskArithmetic(), Ties(), Dare(), Average()):
        with pytest.raises(ValueError, match="empty"):
            method.run(base, {})


# ---------------------------------------------------------------------- TIES
def test_ties_on_hand_made_vectors() -> None:
    # keep_fraction = 0.4 of n = 5 entries (a: 3, b: 2) -> each vector keeps its 2 largest |entries|,
    # ranked over a and b TOGETHER:
    #   tau1: a=[ 1,  2,   0.5], b=[0.1,  0 ] -> keeps 2 (a1), 1 (a0)  -> a=[ 1, 2, 0], b=[0,  0]
    #   tau2: a=[ 1, -0.5, 0.2], b=[0.3, -4 ] -> keeps 4 (b1), 1 (a0)  -> a=[ 1, 0, 0], b=[0, -4]
    #   tau3: a=[-3,  0.1, 0.2], b=[0.05, 1 ] -> keeps 3 (a0), 1 (b1)  -> a=[-3, 0, 0], b=[0,  1]
    # Elected sign = sign of the sum of trimmed values:
    #   a0: 1 + 1 - 3 = -1 -> "-"   (a majority vote of signs would say "+")
    #   a1: 2 -> "+";  a2: 0 -> none;  b0: 0 -> none;  b1: -4 + 1 = -3 -> "-"
    # Disjoint mean over agreeing non-zero values:
    #   a0: mean(-3) = -3;  a1: mean(2) = 2;  a2: 0;  b0: 0;  b1: mean(-4) = -4 (not -4/2)
    # A per-tensor trim would keep tau1's b0 = 0.1 and give b0 = 0.1 instead of 0.
    vectors = [
        tv_ab([1.0, 2.0, 0.5], [0.1, 0.0]),
        tv_ab([1.0, -0.5, 0.2], [0.3, -4.0]),
        tv_ab([-3.0, 0.1, 0.2], [0.05, 1.0]),
    ]
    merged = ties_merge(vectors, keep_fraction=0.4)
    assert_sd_equal(merged.state_dict(), tv_ab([-3.0, 2.0, 0.0], [0.0, -4.0]).state_dict())


def test_ties_zero_sum_entry_and_disjoint_mean() -> None:
    # keep_fraction = 1 keeps everything. Entry 0: 1 + (-1) = 0 -> no elected sign -> 0.
    # Entry 1: both +2 agree -> mean 2 (a sum would give 4). Entry 2: 3 and -1 -> "+" -> 3.
    vectors = [
        TaskVector({"w": torch.tensor([1.0, 2.0, 3.0])}),
        TaskVector({"w": torch.tensor([-1.0, 2.0, -1.0])}),
    ]
    merged = ties_merge(vectors, keep_fraction=1.0)
    assert torch.equal(merged.state_dict()["w"], torch.tensor([0.0, 2.0, 3.0]))


def test_ties_run_matches_hand_result_on_models() -> None:
    base = two_params_model([0.5, -1.0, 2.0], [0.25, 1.0])
    deltas = [
        ([1.0, 2.0, 0.5], [0.1, 0.0]),
        ([1.0, -0.5, 0.2], [0.3, -4.0]),
        ([-3.0, 0.1, 0.2], [0.05, 1.0]),
    ]
    finetuned = {
        f"t{i}": two_params_model(
            [x + y for x, y in zip(base.a.tolist(), da)], [x + y for x, y in zip(base.b.tolist(), db)]
        )
        for i, (da, db) in enumerate(deltas)
    }
    method = Ties(lambda_=0.5, keep_fraction=0.4)
    out = method.run(base, finetuned)
    # theta_0 + 0.5 * [-3, 2, 0 | 0, -4]
    torch.testing.assert_close(out.a.detach(), torch.tensor([-1.0, 0.0, 2.0]), atol=1e-6, rtol=0)
    torch.testing.assert_close(out.b.detach(), torch.tensor([0.25, -1.0]), atol=1e-6, rtol=0)
    merged = method.merged_task_vector(base, finetuned)
    assert_sd_equal(merged.apply_to(base, 0.5), out)


# ---------------------------------------------------------------------- DARE
def test_dare_zero_drop_is_identity(base, finetuned) -> None:
    tau = TaskVector.from_models(base, finetuned["t1"])
    same = dare_sparsify(tau, 0.0, torch.Generator().manual_seed(0))
    assert_sd_equal(same.state_dict(), tau.state_dict())
    lambda_ = 0.3
    assert_sd_equal(
        Dare(lambda_=lambda_, drop_rate=0.0).run(base, finetuned),
        TaskArithmetic(lambda_=lambda_).run(base, finetuned),
    )


def test_dare_is_seeded_and_leaves_global_rng_alone(base, finetuned) -> None:
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a = Dare(drop_rate=0.5, seed=7).merged_task_vector(base, finetuned)
    assert torch.equal(torch.get_rng_state(), state)
    b = Dare(drop_rate=0.5, seed=7).merged_task_vector(base, finetuned)
    c = Dare(drop_rate=0.5, seed=8).merged_task_vector(base, finetuned)
    assert_sd_equal(a.state_dict(), b.state_dict())
    assert any(not torch.equal(a.state_dict()[k], c.state_dict()[k]) for k in a.keys())
    dense = TaskArithmetic().merged_task_vector(base, finetuned)
    assert any(not torch.equal(a.state_dict()[k], dense.state_dict()[k]) for k in a.keys())


def test_dare_rescales_survivors_and_is_unbiased() -> None:
    p = 0.75
    tau = TaskVector({"w": torch.ones(20_000)})
    w = dare_sparsify(tau, p, torch.Generator().manual_seed(0)).state_dict()["w"]
    # Every entry is either dropped (0) or rescaled by 1 / (1 - p) = 4.
    assert set(torch.unique(w).tolist()) == {0.0, 4.0}
    # Kept fraction ~ 1 - p; mean ~ 1 (std of the mean is sqrt(3)/sqrt(20000) ~ 0.012).
    assert abs((w != 0).float().mean().item() - (1 - p)) < 0.02
    assert abs(w.mean().item() - 1.0) < 0.06


# ---------------------------------------------------------------------- Average
def test_average_is_elementwise_mean_and_keeps_base_int_buffers() -> None:
    torch.manual_seed(0)
    base = WithCounter()
    ft1, ft2 = perturbed(base, 1, size=1.0), perturbed(base, 2, size=1.0)
    ft1.steps.fill_(9)
    out = Average().run(base, {"t1": ft1, "t2": ft2})
    s1, s2 = ft1.state_dict(), ft2.state_dict()
    for key, value in out.state_dict().items():
        if key == "steps":
            assert value.item() == 5
        else:
            torch.testing.assert_close(value, (s1[key] + s2[key]) / 2, atol=1e-7, rtol=0)
    assert not torch.equal(out.linear.weight, base.linear.weight)
    assert Average().lambda_ is None
    with pytest.raises(ValueError, match="does not apply"):
        Average().run(base, {"t1": ft1}, lambda_=0.5)


# ---------------------------------------------------------------------- validation / configs
@pytest.mark.parametrize(
    "make",
    [
        lambda: Ties(keep_fraction=0.0),
        lambda: Ties(keep_fraction=1.5),
        lambda: Dare(drop_rate=1.0),
        lambda: Dare(drop_rate=-0.1),
        lambda: TaskArithmetic(lambda_=float("nan")),
    ],
)
def test_invalid_arguments_raise(make) -> None:
    with pytest.raises(ValueError):
        make()


def test_invalid_override_raises(base, finetuned) -> None:
    with pytest.raises(ValueError, match="lambda_"):
        TaskArithmetic().run(base, finetuned, lambda_=float("inf"))


@pytest.mark.parametrize(
    ("name", "cls", "attrs"),
    [
        ("task_arithmetic", TaskArithmetic, {"lambda_": 0.3}),
        ("ties", Ties, {"lambda_": 1.0, "keep_fraction": 0.2}),
        ("dare", Dare, {"lambda_": 0.3, "drop_rate": 0.5, "seed": 7}),  # the masks follow the run seed
        ("average", Average, {"lambda_": None}),
    ],
)
def test_configs_instantiate(name, cls, attrs) -> None:
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    method = instantiate(OmegaConf.create({"seed": 7, "node": OmegaConf.load(CONF_DIR / f"{name}.yaml")}).node)
    assert type(method) is cls
    for attr, value in attrs.items():
        assert getattr(method, attr) == value


# ---------------------------------------------------------------------- renamed keys
RENAMED_MESSAGES = {
    "scaling_factor": "merger.scaling_factor was renamed to merger.lambda_; use method.merger.lambda_=...",
    "top_k": "merger.top_k was renamed to merger.keep_fraction; use method.merger.keep_fraction=...",
}


@pytest.mark.parametrize(
    ("cls", "old"),
    [(TaskArithmetic, "scaling_factor"), (Ties, "scaling_factor"), (Dare, "scaling_factor"), (Ties, "top_k")],
)
def test_old_argument_names_are_refused_with_one_line_hint(cls, old) -> None:
    with pytest.raises(ValueError) as info:
        cls(**{old: 0.5})
    assert str(info.value) == RENAMED_MESSAGES[old]


@pytest.mark.parametrize("kwargs", [{"top_k": 0.2}, {"lambda": 0.3}, {"keepfraction": 0.2}])
def test_other_unknown_argument_names_stay_type_errors(kwargs) -> None:
    # top_k never existed on TaskArithmetic: no "renamed" hint there, a plain TypeError.
    cls = Ties if "keepfraction" in kwargs else TaskArithmetic
    with pytest.raises(TypeError, match=repr(next(iter(kwargs)))):
        cls(**kwargs)


@pytest.mark.parametrize(
    ("method", "old"),
    [("task_arithmetic", "scaling_factor"), ("ties", "scaling_factor"), ("dare", "scaling_factor"), ("ties", "top_k")],
)
def test_old_config_keys_are_refused_from_the_composed_config(compose, method, old) -> None:
    """What a user with an old command line gets: the real config, old key added with '+'."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    new = {"scaling_factor": "lambda_", "top_k": "keep_fraction"}[old]
    cfg = compose([f"method={method}"])
    assert new in cfg.method.merger and old not in cfg.method.merger
    cfg = compose([f"method={method}", f"+method.merger.{old}=0.5"])
    with pytest.raises(InstantiationException) as info:
        instantiate(cfg.method.merger)
    assert str(info.value.__cause__) == RENAMED_MESSAGES[old]
    # The new key with the same value is accepted and lands on the attribute.
    merger = instantiate(compose([f"method={method}", f"method.merger.{new}=0.5"]).method.merger)
    assert getattr(merger, new) == 0.5
