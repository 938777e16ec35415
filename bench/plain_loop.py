"""The reference study as a plain PyTorch script: the yardstick for the pipeline's overhead.

It performs as many optimizer steps as ``python train.py -m method=sequential,joint`` with the
default config (same batch size, Adam settings and pinned thread count) and the same evaluation work
(calibration loss/accuracy after every epoch, a test confusion matrix after every stage), with no
framework: no Lightning, no Hydra, no logging. It is a timing reference only: its split and seeding
are those of the pipeline before issue 16, so its accuracies differ from ``metrics.json``'s.

    python bench/plain_loop.py --out plain.json
"""

from __future__ import annotations

import argparse
import copy
import json
import random
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from seqft_lightning.data.mnist_files import ensure_mnist_raw
from seqft_lightning.data.splits import make_splits
from seqft_lightning.models.components.mlp import MLP

ROOT = Path(__file__).resolve().parents[1]
TASKS = [[3], [4], [7]]
PRETRAIN_EPOCHS, STAGE_EPOCHS, BATCH, LR = 5, 10, 64, 1e-3


def seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def load():
    from torchvision.datasets import MNIST

    root = ROOT / "data" / "cache"
    ensure_mnist_raw(ROOT / "data" / "mnist", root)
    train, test = MNIST(str(root), train=True), MNIST(str(root), train=False)
    norm = lambda images: images.reshape(len(images), -1).float().div_(255.0).sub_(0.1307).div_(0.3081)  # noqa: E731
    return norm(train.data), train.targets.long(), norm(test.data), test.targets.long()


def train_epochs(net, x, y, epochs, x_val, y_val, fused):
    opt = torch.optim.Adam(net.parameters(), lr=LR, fused=fused)
    for _ in range(epochs):
        net.train()
        order = torch.randperm(len(x))
        for start in range(0, len(x), BATCH):
            idx = order[start : start + BATCH]
            loss = F.cross_entropy(net(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        evaluate(net, x_val, y_val)


@torch.no_grad()
def evaluate(net, x, y, batch=1000):
    net.eval()
    confusion = torch.zeros(10, 10, dtype=torch.long)
    loss = 0.0
    for start in range(0, len(x), batch):
        logits = net(x[start : start + batch])
        loss += float(F.cross_entropy(logits, y[start : start + batch], reduction="sum"))
        confusion += torch.bincount(y[start : start + batch] * 10 + logits.argmax(1), minlength=100).reshape(10, 10)
    return confusion, loss / len(x)


def accuracy(confusion, classes=range(10)):
    classes = list(classes)
    return float(confusion[classes, classes].sum() / confusion[classes].sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (the pipeline's torch_threads)")
    parser.add_argument("--fused", action=argparse.BooleanOptionalAction, default=True, help="fused Adam (the pipeline's default)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    train_x, train_y, test_x, test_y = load()
    splits = make_splits(train_y, [3, 4, 7], 1000, 5000, split_seed=0)
    pre_x, pre_y = train_x[splits.pretrain], train_y[splits.pretrain]
    cal_x, cal_y = train_x[splits.calibration], train_y[splits.calibration]
    task = {c: (train_x[i], train_y[i]) for c, i in splits.tasks.items()}

    seed_all(args.seed)
    net = MLP()
    train_epochs(net, pre_x, pre_y, PRETRAIN_EPOCHS, cal_x, cal_y, args.fused)
    pretrained = copy.deepcopy(net.state_dict())
    results = {"baseline": accuracy(evaluate(net, test_x, test_y)[0])}

    for method, stages in {"sequential": TASKS, "joint": [sum(TASKS, [])]}.items():
        seed_all(args.seed)
        net.load_state_dict(pretrained)
        for classes in stages:
            x, y = (torch.cat(parts) for parts in zip(*(task[c] for c in classes)))
            train_epochs(net, x, y, STAGE_EPOCHS, cal_x, cal_y, args.fused)
            confusion, _ = evaluate(net, test_x, test_y)
        results[method] = {"acc": accuracy(confusion), "acc_target": accuracy(confusion, [3, 4, 7])}
    args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
