#!/usr/bin/python3
"""PyTorch accuracy reference for grng's byte-level language model: the `gpt:` twin
(bench/torch_models.py, gpt_from_spec) trained on the same data and settings as grng's `fortunes`
dataset, so grng's validation loss and bits per character can be read against PyTorch's.

Data, as grng's loadFortunes (src/data/textDataset.ts) reads it: every regular file under
--data (default /usr/share/games/fortunes), recursively, skipping `.dat` files and symbolic links
(the `.u8` files are links), sorted by full path in UTF-16 code-unit order (JavaScript's), bytes
concatenated. The last floor(10%) of the bytes are the validation part, the rest training; each
part is cut on its own into non-overlapping windows of ctx+1 bytes at stride ctx (inputs the first
ctx bytes, targets the next byte at each position), a trailing partial window dropped. Training
windows are reshuffled every epoch from --seed, in batches of --batch (the last partial batch
kept, grng's default). Loss: mean cross-entropy over every token of the batch. Optimizer: AdamW
(lr 1e-3, betas 0.9/0.999, eps 1e-8, weight decay 0.01: grng's defaults), float32.

Stops after --steps steps or --seconds of training (wall clock, evaluation excluded), whichever
comes first, then evaluates on every validation window: mean loss in nats per token, bits per
character (loss / ln 2; one byte per token), next-token accuracy. --eval-every N also evaluates
every N steps (to stderr). The last line of stdout is one JSON object.

    /usr/bin/python3 bench/torch_lm.py [--model gpt:L2-d128-h4-ctx64] [--batch 32] [--lr 1e-3]
                                       [--steps N] [--seconds S] [--seed 1] [--eval-every N]
                                       [--threads N]
"""
import argparse
import json
import math
import os
import stat
import sys
import time

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
parser.add_argument("--model", default="gpt:L2-d128-h4-ctx64")
parser.add_argument("--data", default="/usr/share/games/fortunes", help="folder of text files (grng's fortunes dataset)")
parser.add_argument("--batch", type=int, default=32)
parser.add_argument("--lr", type=float, default=1e-3)
parser.add_argument("--steps", type=int, default=None, help="stop after this many steps")
parser.add_argument("--seconds", type=float, default=None, help="stop after this much training wall-clock time")
parser.add_argument("--seed", type=int, default=1)
parser.add_argument("--eval-every", type=int, default=0, help="also evaluate every N steps (0: only at the end)")
parser.add_argument("--eval-batch", type=int, default=32, help="windows per evaluation forward pass")
parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="BLAS threads (torch's own pool gets 1: see torch_step.py)")
args = parser.parse_args()
if args.steps is None and args.seconds is None:
    parser.error("give --steps, --seconds or both (training stops at whichever comes first)")
if min(args.batch, args.threads, args.eval_batch) < 1 or args.eval_every < 0:
    parser.error("--batch, --threads and --eval-batch must be >= 1, --eval-every >= 0")
if (args.steps is not None and args.steps < 0) or (args.seconds is not None and args.seconds < 0):
    parser.error("--steps and --seconds must be >= 0")
os.environ["OPENBLAS_NUM_THREADS"] = str(args.threads)
os.environ["MKL_NUM_THREADS"] = str(args.threads)
os.environ["OMP_NUM_THREADS"] = "1"

import torch  # noqa: E402  (after the thread variables: see torch_step.py)
import torch.nn.functional as F  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_models import gpt_from_spec, parse_gpt_spec  # noqa: E402

torch.set_num_threads(1)
TEST_FRACTION = 0.1


def collect_files(folder, files):
    """Every regular file under folder, recursively; links (to files or folders) and .dat skipped."""
    for entry in os.listdir(folder):
        path = os.path.join(folder, entry)
        mode = os.lstat(path).st_mode
        if stat.S_ISDIR(mode):
            collect_files(path, files)
        elif stat.S_ISREG(mode) and not entry.endswith(".dat"):
            files.append(path)


def read_corpus(folder):
    files = []
    collect_files(folder, files)
    files.sort(key=lambda p: p.encode("utf-16-be", "surrogatepass"))  # JavaScript's string order
    chunks = []
    for path in files:
        with open(path, "rb") as f:
            chunks.append(f.read())
    return b"".join(chunks), len(files)


def windows(data, ctx):
    """Non-overlapping windows of ctx+1 bytes at stride ctx, as int64 [n, ctx+1]."""
    n = (len(data) - 1) // ctx if len(data) > ctx else 0
    tokens = torch.frombuffer(bytearray(data), dtype=torch.uint8) if data else torch.zeros(0, dtype=torch.uint8)
    starts = torch.arange(n).unsqueeze(1) * ctx
    return tokens.long()[starts + torch.arange(ctx + 1)] if n else torch.zeros(0, ctx + 1, dtype=torch.long)


try:
    spec = parse_gpt_spec(args.model)
    CTX, VOCAB = spec["ctx"], spec["v"]
except ValueError as error:
    parser.error(f"--model: {error}")
if not os.path.isdir(args.data):
    sys.exit(f"torch_lm.py: {args.data} not found (Debian package fortunes)")
corpus, file_count = read_corpus(args.data)
test_bytes = math.floor(len(corpus) * TEST_FRACTION)
train_bytes = len(corpus) - test_bytes
train_w, val_w = windows(corpus[:train_bytes], CTX), windows(corpus[train_bytes:], CTX)
if len(train_w) == 0 or len(val_w) == 0:
    sys.exit(f"torch_lm.py: {len(corpus)} bytes: a part is shorter than one window of ctx {CTX} + 1")
if int(corpus and max(corpus)) >= VOCAB:
    sys.exit(f"torch_lm.py: the corpus has byte {max(corpus)}, outside the vocabulary of {VOCAB}")
print(f"{args.data}: {file_count} files, {len(corpus)} bytes; train {len(train_w)} windows ({train_bytes} bytes), "
      f"validation {len(val_w)} windows ({test_bytes} bytes), ctx {CTX}", file=sys.stderr)

torch.manual_seed(args.seed)
model, _, _ = gpt_from_spec(args.model)  # after the seed, so the initialisation is the seed's
optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)
generator = torch.Generator().manual_seed(args.seed)


def evaluate():
    """Mean loss (nats/token), bits per character and next-token accuracy over every validation window."""
    model.eval()
    total_loss, correct, tokens = 0.0, 0, 0
    with torch.no_grad():
        for i in range(0, len(val_w), args.eval_batch):
            w = val_w[i : i + args.eval_batch]
            logits = model(w[:, :-1]).reshape(-1, VOCAB)
            y = w[:, 1:].reshape(-1)
            total_loss += F.cross_entropy(logits, y, reduction="sum").item()
            correct += (logits.argmax(1) == y).sum().item()
            tokens += y.numel()
    model.train()
    loss = total_loss / tokens
    return {"valLoss": loss, "valBpc": loss / math.log(2), "valAccuracy": correct / tokens, "valTokens": tokens}


steps, epochs, tokens_seen, train_seconds, eval_seconds, last_loss = 0, 0, 0, 0.0, 0.0, None
history = []


def done():
    return (args.steps is not None and steps >= args.steps) or (args.seconds is not None and train_seconds >= args.seconds)


while not done():
    order = torch.randperm(len(train_w), generator=generator)
    epochs += 1
    for i in range(0, len(order), args.batch):
        if done():
            break
        t0 = time.perf_counter()
        w = train_w[order[i : i + args.batch]]
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(w[:, :-1]).reshape(-1, VOCAB), w[:, 1:].reshape(-1))
        loss.backward()
        optimizer.step()
        last_loss = loss.item()
        train_seconds += time.perf_counter() - t0
        steps += 1
        tokens_seen += w.shape[0] * CTX
        if args.eval_every and steps % args.eval_every == 0:
            t0 = time.perf_counter()
            metrics = evaluate()
            eval_seconds += time.perf_counter() - t0
            history.append({"step": steps, "trainLoss": last_loss, **metrics})
            print(f"step {steps} ({train_seconds:.1f} s): train loss {last_loss:.4f}, val loss {metrics['valLoss']:.4f}, "
                  f"bpc {metrics['valBpc']:.4f}, accuracy {metrics['valAccuracy']:.4f}", file=sys.stderr)

t0 = time.perf_counter()
final = history[-1] if history and history[-1]["step"] == steps else {"step": steps, "trainLoss": last_loss, **evaluate()}
eval_seconds += time.perf_counter() - t0
print(f"final, step {steps} ({train_seconds:.1f} s training, {eval_seconds:.1f} s evaluating): val loss {final['valLoss']:.4f}, "
      f"bpc {final['valBpc']:.4f}, accuracy {final['valAccuracy']:.4f}", file=sys.stderr)
print(json.dumps({
    "torch": torch.__version__,
    "model": args.model,
    "parameters": sum(p.numel() for p in model.parameters()),
    "data": args.data,
    "bytes": len(corpus),
    "trainWindows": len(train_w),
    "valWindows": len(val_w),
    "batch": args.batch,
    "lr": args.lr,
    "optimizer": "adamw",
    "seed": args.seed,
    "threads": args.threads,
    "steps": steps,
    "epochs": epochs,
    "tokensSeen": tokens_seen,
    "seconds": train_seconds,
    "msPerStep": train_seconds * 1e3 / steps if steps else None,
    "evalSeconds": eval_seconds,
    "trainLoss": last_loss,
    "valLoss": final["valLoss"],
    "valBpc": final["valBpc"],
    "valAccuracy": final["valAccuracy"],
    "valTokens": final["valTokens"],
    "history": history,
}))
