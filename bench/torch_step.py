#!/usr/bin/python3
"""PyTorch CPU reference for grng's training-step benchmark (bench/pipeline.ts, bench/torchReference.ts).

Times the same SGD step grng's `batches -> forwardBackward -> update(sgd) -> metrics({ norms: false })`
does: take a batch of rows from a shuffled host array, forward through an MLP (784-512-512-10, relu) or the CNN of a grng `cnn:` spec (--model),
softmax cross-entropy, backward, SGD update (lr 0.05, no momentum), then one read-back of loss and
accuracy. float32. Synthetic MNIST-shaped data (pixels uniform in [0, 1], labels 0-9, fixed seed, no
download): dense matmuls cost the same whatever the pixel values are.

With `--model gpt:...` (bench/torch_models.py, gpt_from_spec) the step is a language-model one: N
windows of ctx+1 byte tokens at random offsets of a synthetic random byte array (or of --text FILE),
inputs the first ctx tokens and targets the next ctx, mean cross-entropy over all N*ctx tokens,
backward, optimizer step, one read-back of loss and next-token accuracy.

`--optimizer adamw` uses torch.optim.AdamW (lr 1e-3, betas 0.9/0.999, eps 1e-8, weight decay
0.01: grng's defaults) instead of SGD; --lr overrides either default.

A few warm-up steps, then `rounds` x `steps` steps timed with time.perf_counter; the figure is the
median ms/step over rounds (as bench/pipeline.ts does). Also reports the torch version, the thread
counts, the BLAS (build configuration and the library actually loaded), oneDNN availability, and the
time of one 1024x1024 float32 matmul.

Threads: Debian's torch is built with BLAS_INFO=generic and OpenMP; its matmuls go to whatever
libblas.so.3 is (OpenBLAS pthread once libopenblas0-pthread is installed), which keeps its own
thread pool. `--threads N` is the number of cores PyTorch may use: the BLAS gets N threads and
torch's own OpenMP pool (`--intra-op`, the elementwise ops) gets 1 by default. Giving both N
(`--intra-op N`, what torch does out of the box) oversubscribes the cores: libgomp's spinning
workers and OpenBLAS's threads fight for them and the step gets ~3x slower on a 2-core machine.

Run with Debian's interpreter (python3-torch installs there, not into other pythons):

    /usr/bin/python3 bench/torch_step.py [--batch 128] [--hidden 512,512 | --model cnn:... | --model gpt:...]
                                         [--text FILE] [--optimizer sgd|adamw] [--steps 40]
                                         [--rounds 5] [--threads N] [--intra-op M]
                                         [--warmup 10] [--json]

With --json, the last line of stdout is one JSON object.
"""
import argparse
import json
import os
import statistics
import sys
import time

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
parser.add_argument("--batch", type=int, default=128)
parser.add_argument("--hidden", default="512,512", help="hidden widths, comma-separated (input 784, output 10)")
parser.add_argument("--model", default=None, help="a grng cnn: or gpt: spec (README, Model specs), e.g. cnn:28x28x1-c32k3-p2-c64k3-p2-d128-10 or gpt:L2-d128-h4-ctx64; replaces --hidden")
parser.add_argument("--text", default=None, help="gpt: cut the token windows from this file's bytes (default: synthetic random bytes)")
parser.add_argument("--optimizer", choices=("sgd", "adamw"), default="sgd", help="sgd (lr 0.05, no momentum; default) or adamw (lr 1e-3, weight decay 0.01)")
parser.add_argument("--steps", type=int, default=40, help="timed steps per round")
parser.add_argument("--rounds", type=int, default=5)
parser.add_argument("--warmup", type=int, default=10, help="untimed steps before the rounds")
parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="cores PyTorch may use = BLAS threads (default: all cores)")
parser.add_argument("--intra-op", type=int, default=1, help="torch's own OpenMP threads (default 1; = --threads oversubscribes, see above)")
parser.add_argument("--lr", type=float, default=None, help="learning rate (default 0.05 for sgd, 1e-3 for adamw)")
parser.add_argument("--seed", type=int, default=1)
parser.add_argument("--json", action="store_true")
args = parser.parse_args()
if min(args.batch, args.steps, args.rounds, args.threads, args.intra_op) < 1 or args.warmup < 0:
    parser.error("--batch, --steps, --rounds, --threads and --intra-op must be >= 1, --warmup >= 0")
try:
    hidden = [int(h) for h in args.hidden.split(",") if h.strip()]
except ValueError:
    parser.error(f"--hidden: expected comma-separated integers, got {args.hidden!r}")
if not hidden or min(hidden) < 1:
    parser.error("--hidden: expected at least one width >= 1")
if args.lr is None:
    args.lr = 0.05 if args.optimizer == "sgd" else 1e-3
if args.text and not (args.model or "").startswith("gpt:"):
    parser.error("--text only goes with a --model gpt: spec")

# The BLAS behind Debian's torch is whatever libblas.so.3 resolves to (OpenBLAS pthread, OpenMP,
# or the reference BLAS); OpenBLAS reads its thread count from the environment when it loads,
# and torch.set_num_threads does not reach it in this build. Set them before importing torch.
os.environ["OPENBLAS_NUM_THREADS"] = str(args.threads)
os.environ["MKL_NUM_THREADS"] = str(args.threads)
os.environ["OMP_NUM_THREADS"] = str(args.intra_op)

try:
    import torch
    import torch.nn.functional as F
except ImportError as error:  # the runner checks first; this is for direct use
    print(f"PyTorch reference skipped: {sys.executable} cannot import torch ({error})", file=sys.stderr)
    sys.exit(3)

torch.set_num_threads(args.intra_op)
torch.manual_seed(args.seed)
FEATURES, CLASSES, POOL = 784, 10, 7996  # MNIST-shaped; the pool has as many rows as grng's MNIST train split


def blas_info():
    """Build-time BLAS from torch's config, and the BLAS shared library actually mapped now."""
    config = torch.__config__.show()
    build = "unknown"
    for line in config.splitlines():
        line = line.strip()
        if "BLAS_INFO=" in line:
            build = line.split("BLAS_INFO=", 1)[1].split(",")[0].strip()
            break
    if build == "unknown":
        lowered = config.lower()
        build = "mkl" if "mkl" in lowered and "use_mkl=on" in lowered else ("openblas" if "openblas" in lowered else "unknown")
    loaded = []
    try:
        with open("/proc/self/maps") as maps:
            for entry in maps:
                path = entry.split()[-1] if len(entry.split()) >= 6 else ""
                name = os.path.basename(path)
                if any(k in name for k in ("blas", "mkl_", "libmkl", "blis", "atlas")) and path not in loaded:
                    loaded.append(path)
    except OSError:
        pass
    resolved = [os.path.realpath(p) for p in loaded]
    joined = " ".join(resolved).lower()
    if "openblas" in joined:
        kind = "OpenBLAS" + (" (pthread)" if "pthread" in joined else " (openmp)" if "openmp" in joined else "")
    elif "mkl" in joined:
        kind = "MKL"
    elif "blis" in joined:
        kind = "BLIS"
    elif "atlas" in joined:
        kind = "ATLAS"
    elif "libblas" in joined:
        kind = "reference BLAS (netlib)"
    else:
        kind = build
    return {"name": kind, "build": build, "libraries": resolved}


def time_matmul(n=1024, reps=10):
    a = torch.rand(n, n)
    b = torch.rand(n, n)
    for _ in range(3):
        torch.mm(a, b)
    samples = []
    for _ in range(reps):
        t0 = time.perf_counter()
        torch.mm(a, b)
        samples.append(time.perf_counter() - t0)
    seconds = statistics.median(samples)
    return seconds * 1e3, 2 * n**3 / seconds / 1e9


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_models import cnn_from_spec, gpt_from_spec  # noqa: E402

GPT = bool(args.model and args.model.startswith("gpt:"))
if GPT:
    try:
        model, CTX, VOCAB = gpt_from_spec(args.model)
    except ValueError as error:
        parser.error(f"--model: {error}")
    model_name = args.model
elif args.model and args.model.startswith("cnn:"):
    try:
        model, (height, width, channels), CLASSES = cnn_from_spec(args.model)
    except ValueError as error:
        parser.error(f"--model: {error}")
    SHAPE, FEATURES = (channels, height, width), height * width * channels
    model_name = args.model
elif args.model:
    parser.error(f"--model: expected a cnn: or gpt: spec (MLPs take --hidden), got {args.model!r}")
else:
    widths = [FEATURES, *hidden, CLASSES]
    layers = []
    for i in range(len(widths) - 1):
        layers.append(torch.nn.Linear(widths[i], widths[i + 1]))
        if i < len(widths) - 2:
            layers.append(torch.nn.ReLU())
    model = torch.nn.Sequential(*layers)
    SHAPE = (FEATURES,)
    model_name = "mlp:" + "-".join(str(w) for w in widths)
if args.optimizer == "adamw":
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)
else:
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.0)

generator = torch.Generator().manual_seed(args.seed)
if GPT:
    TEXT_BYTES = 1 << 20  # synthetic corpus: 1 MiB of uniform random tokens
    if args.text:
        try:
            with open(args.text, "rb") as f:
                raw = f.read()
        except OSError as error:
            parser.error(f"--text: {error}")
        text = torch.frombuffer(bytearray(raw), dtype=torch.uint8).long() if raw else torch.zeros(0, dtype=torch.long)
        if len(text) < CTX + 1:
            parser.error(f"--text: {args.text} has {len(text)} bytes, fewer than ctx + 1 = {CTX + 1}")
        if VOCAB < 256 and int(text.max()) >= VOCAB:
            parser.error(f"--text: {args.text} has byte {int(text.max())}, outside the vocabulary of {VOCAB}")
    else:
        text = torch.randint(0, VOCAB, (TEXT_BYTES,), generator=generator)
    window = torch.arange(CTX + 1)
else:
    pool_x = torch.rand(POOL, *SHAPE, generator=generator)
    pool_y = torch.randint(0, CLASSES, (POOL,), generator=generator)
    order = torch.randperm(POOL, generator=generator)
cursor = 0


def next_batch():
    """Rows of a shuffled host array (what grng's batch source does), reshuffled per epoch."""
    global cursor, order
    if cursor + args.batch > POOL:
        order = torch.randperm(POOL, generator=generator)
        cursor = 0
    rows = order[cursor : cursor + args.batch]
    cursor += args.batch
    return pool_x.index_select(0, rows), pool_y.index_select(0, rows)


def next_windows():
    """N windows of ctx+1 tokens at random offsets: inputs the first ctx, targets the next ctx."""
    starts = torch.randint(0, len(text) - CTX, (args.batch, 1), generator=generator)
    tokens = text[starts + window]  # [N, ctx+1]
    return tokens[:, :-1], tokens[:, 1:]


def step():
    """One training step: forward, loss, backward, optimizer update, read back loss and accuracy."""
    if GPT:
        x, y = next_windows()
        y = y.reshape(-1)
    else:
        x, y = next_batch()
    optimizer.zero_grad(set_to_none=True)
    logits = model(x)
    if GPT:
        logits = logits.reshape(-1, VOCAB)  # [N*ctx, V]: the mean is over every token
    loss = F.cross_entropy(logits, y)
    loss.backward()
    optimizer.step()
    with torch.no_grad():
        accuracy = (logits.argmax(1) == y).float().mean()
        return torch.stack([loss.detach(), accuracy]).tolist()  # one read-back, like grng's metrics


for _ in range(args.warmup):
    step()
round_ms = []
last = None
for _ in range(args.rounds):
    t0 = time.perf_counter()
    for _ in range(args.steps):
        last = step()
    round_ms.append((time.perf_counter() - t0) * 1e3 / args.steps)
matmul_ms, matmul_gflops = time_matmul()  # after the steps, so the BLAS is loaded and warm

result = {
    "version": torch.__version__,
    "python": sys.executable,
    "threads": args.threads,
    "intraOpThreads": torch.get_num_threads(),
    "blas": blas_info(),
    "mkldnn": bool(torch.backends.mkldnn.is_available()),
    "model": model_name,
    "batchSize": args.batch,
    "steps": args.steps,
    "rounds": args.rounds,
    "msPerStep": statistics.median(round_ms),
    "roundsMsPerStep": round_ms,
    "matmulMs": matmul_ms,
    "matmulGflops": matmul_gflops,
    "finalLoss": last[0] if last else None,
}
if GPT or args.optimizer != "sgd":
    result["optimizer"] = args.optimizer
    result["lr"] = args.lr
if GPT:
    result.update({
        "batch": args.batch,
        "ctx": CTX,
        "vocab": VOCAB,
        "tokensPerStep": args.batch * CTX,
        "parameters": sum(p.numel() for p in model.parameters()),
        "data": args.text or "synthetic random bytes",
        "tokensPerSecond": args.batch * CTX / (result["msPerStep"] / 1e3),
    })
if args.json:
    print(json.dumps(result))
else:
    print(f"PyTorch {result['version']}, {result['threads']} BLAS thread(s), {result['intraOpThreads']} intra-op thread(s), BLAS {result['blas']['name']} (build: {result['blas']['build']}), oneDNN {'yes' if result['mkldnn'] else 'no'}")
    extra = (f", {args.optimizer}" if GPT or args.optimizer != "sgd" else "") + (f", {args.batch * CTX} tokens/step" if GPT else "")
    print(f"  {result['model']}, batch {args.batch}{extra}, {args.steps} steps x {args.rounds} rounds: {result['msPerStep']:.2f} ms/step (median; rounds {', '.join(f'{m:.2f}' for m in round_ms)})")
    print(f"  1024x1024 matmul: {matmul_ms:.2f} ms = {matmul_gflops:.1f} GFLOP/s")
