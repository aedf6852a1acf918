#!/usr/bin/python3
"""PyTorch accuracy reference for grng's CNN (issue 11): the same model, data and settings as
`grng compare --dataset fashion-mnist --model cnn:... --optimizers sgd,adamw`, so grng's AdamW and
SGD test accuracies can be read against PyTorch's.

Trains a `cnn:` spec (bench/torch_models.py) on Fashion-MNIST (Debian's dataset-fashion-mnist,
idx.gz files, pixels / 255) with batch 128, reshuffled every epoch from `--seed`, PyTorch's default
initialisation, softmax cross-entropy; AdamW (lr 1e-3, weight decay 1e-2, betas 0.9/0.999, eps
1e-8: grng's defaults) and SGD with momentum (lr 0.05, momentum 0.9, no weight decay: grng's
named defaults). Prints the test accuracy after every epoch and, with --json, one JSON object as
the last line of stdout.

    /usr/bin/python3 bench/torch_accuracy.py [--optimizers adamw,sgd] [--epochs 2] [--seeds 1]
                                             [--threads N] [--json]
"""
import argparse
import gzip
import json
import os
import struct
import sys
import time

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
parser.add_argument("--model", default="cnn:28x28x1-c32k3-p2-c64k3-p2-d128-10")
parser.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
parser.add_argument("--optimizers", default="adamw,sgd")
parser.add_argument("--epochs", type=int, default=2)
parser.add_argument("--seeds", default="1", help="comma-separated seeds")
parser.add_argument("--batch", type=int, default=128)
parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
parser.add_argument("--json", action="store_true")
args = parser.parse_args()
os.environ["OPENBLAS_NUM_THREADS"] = str(args.threads)
os.environ["OMP_NUM_THREADS"] = "1"

import torch  # noqa: E402  (after the thread variables: see torch_step.py)
import torch.nn.functional as F  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_models import cnn_from_spec  # noqa: E402

torch.set_num_threads(1)


def read_idx(path):
    """An idx(.gz) file as a uint8 tensor of its declared shape."""
    with (gzip.open if path.endswith(".gz") else open)(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = struct.unpack(">" + "I" * dims, data[4 : 4 + 4 * dims])
    return torch.frombuffer(bytearray(data[4 + 4 * dims :]), dtype=torch.uint8).reshape(shape)


def load(prefix):
    x = read_idx(os.path.join(args.data, f"{prefix}-images-idx3-ubyte.gz")).float() / 255
    y = read_idx(os.path.join(args.data, f"{prefix}-labels-idx1-ubyte.gz")).long()
    return x.unsqueeze(1), y  # N, 1, 28, 28


if not os.path.isdir(args.data):
    sys.exit(f"torch_accuracy.py: {args.data} not found (Debian package dataset-fashion-mnist)")
train_x, train_y = load("train")
test_x, test_y = load("t10k")


def evaluate(model):
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(test_x), 1000):
            correct += (model(test_x[i : i + 1000]).argmax(1) == test_y[i : i + 1000]).sum().item()
    model.train()
    return correct / len(test_x)


def run(name, seed):
    torch.manual_seed(seed)
    model, _, _ = cnn_from_spec(args.model)
    if name == "adamw":
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-2)
    elif name == "sgd":
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    else:
        parser.error(f"--optimizers: adamw or sgd, got {name!r}")
    generator = torch.Generator().manual_seed(seed)
    accuracies, started = [], time.perf_counter()
    for _ in range(args.epochs):
        order = torch.randperm(len(train_x), generator=generator)
        for i in range(0, len(order), args.batch):
            rows = order[i : i + args.batch]
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(model(train_x[rows]), train_y[rows]).backward()
            optimizer.step()
        accuracies.append(evaluate(model))
        print(f"{name} seed {seed} epoch {len(accuracies)}: test accuracy {accuracies[-1]:.4f}", file=sys.stderr)
    return {"optimizer": name, "seed": seed, "testAccuracyByEpoch": accuracies, "seconds": time.perf_counter() - started}


results = [run(name, int(seed)) for seed in args.seeds.split(",") for name in args.optimizers.split(",")]
summary = {"torch": torch.__version__, "model": args.model, "batch": args.batch, "epochs": args.epochs, "runs": results}
if args.json:
    print(json.dumps(summary))
else:
    for r in results:
        print(r["optimizer"], r["seed"], " ".join(f"{a:.4f}" for a in r["testAccuracyByEpoch"]))
