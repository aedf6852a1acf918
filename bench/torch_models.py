"""PyTorch twins of grng's models, for the references in bench/ (torch_step.py, torch_accuracy.py)."""
import math
import re

import torch


def cnn_from_spec(spec):
    """The PyTorch twin of grng's `cnn:` spec (src/nn/modelSpec.ts): conv cNkK[xK][sS][v] (same
    padding unless v, relu), pool pK[sS] (max) or aK[sS] (average), valid, stride = size unless
    given; dense dN (relu), a flatten before the first dense after an image; the last number is
    the class count (identity). Input HxWxC is NHWC in grng and NCHW here: the arithmetic is the
    same."""
    parts = spec[len("cnn:"):].split("-")
    h, w, c = (int(v) for v in parts[0].split("x"))
    layers, image = [], True
    for token in parts[1:-1]:
        conv = re.fullmatch(r"c(\d+)k(\d+)(?:x(\d+))?(?:s(\d+))?(v?)", token)
        pool = re.fullmatch(r"([pa])(\d+)(?:s(\d+))?", token)
        dense = re.fullmatch(r"d(\d+)", token)
        if conv:
            filters, kh = int(conv[1]), int(conv[2])
            kw, stride = int(conv[3] or kh), int(conv[4] or 1)
            if conv[5]:
                layers.append(torch.nn.Conv2d(c, filters, (kh, kw), stride=stride))
                h, w = (h - kh) // stride + 1, (w - kw) // stride + 1
            else:
                # grng's `same` is TensorFlow's: out = ceil(in / stride), extra padding at the end.
                oh, ow = -(-h // stride), -(-w // stride)
                ph, pw = max(0, (oh - 1) * stride + kh - h), max(0, (ow - 1) * stride + kw - w)
                if ph % 2 == 0 and pw % 2 == 0:  # symmetric: the conv pads itself (no extra op)
                    layers.append(torch.nn.Conv2d(c, filters, (kh, kw), stride=stride, padding=(ph // 2, pw // 2)))
                else:
                    layers.append(torch.nn.ZeroPad2d((pw // 2, pw - pw // 2, ph // 2, ph - ph // 2)))
                    layers.append(torch.nn.Conv2d(c, filters, (kh, kw), stride=stride))
                h, w = oh, ow
            layers.append(torch.nn.ReLU())
            c = filters
        elif pool:
            size = int(pool[2])
            stride = int(pool[3] or size)
            layers.append((torch.nn.MaxPool2d if pool[1] == "p" else torch.nn.AvgPool2d)(size, stride))
            h, w = (h - size) // stride + 1, (w - size) // stride + 1
        elif dense:
            if image:
                layers.append(torch.nn.Flatten())
                c, image = h * w * c, False
            layers.append(torch.nn.Linear(c, int(dense[1])))
            layers.append(torch.nn.ReLU())
            c = int(dense[1])
        else:
            raise ValueError(f"cannot read part {token!r} of {spec!r}")
    if image:
        layers.append(torch.nn.Flatten())
        c = h * w * c
    layers.append(torch.nn.Linear(c, int(parts[-1])))
    return torch.nn.Sequential(*layers), [int(v) for v in parts[0].split("x")], int(parts[-1])


class _Block(torch.nn.Module):
    """A pre-norm transformer block: x + attn(ln1(x)), then x + mlp(ln2(x))."""

    def __init__(self, d, heads, mlp):
        super().__init__()
        self.heads = heads
        self.ln1 = torch.nn.LayerNorm(d, eps=1e-5)
        self.q = torch.nn.Linear(d, d)
        self.k = torch.nn.Linear(d, d)
        self.v = torch.nn.Linear(d, d)
        self.proj = torch.nn.Linear(d, d)
        self.ln2 = torch.nn.LayerNorm(d, eps=1e-5)
        self.fc = torch.nn.Linear(d, mlp)
        self.gelu = torch.nn.GELU()  # exact (erf) GELU
        self.out = torch.nn.Linear(mlp, d)

    def attention(self, x):
        n, t, d = x.shape
        hd = d // self.heads

        def split(y):  # [N, T, d] -> [N, h, T, d/h]
            return y.view(n, t, self.heads, hd).transpose(1, 2)

        q, k, v = split(self.q(x)), split(self.k(x)), split(self.v(x))
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(hd)  # [N, h, T, T]
        causal = torch.ones(t, t, dtype=torch.bool, device=x.device).tril()
        scores = scores.masked_fill(~causal, float("-inf"))
        y = torch.softmax(scores, dim=-1) @ v  # [N, h, T, d/h]
        return self.proj(y.transpose(1, 2).reshape(n, t, d))

    def forward(self, x):
        x = x + self.attention(self.ln1(x))
        return x + self.out(self.gelu(self.fc(self.ln2(x))))


class GPT(torch.nn.Module):
    """Token + learned positional embeddings, L pre-norm blocks, final LayerNorm, untied head."""

    def __init__(self, layers, d, heads, ctx, mlp, vocab):
        super().__init__()
        self.wte = torch.nn.Parameter(torch.randn(vocab, d) * 0.02)
        self.wpe = torch.nn.Parameter(torch.randn(ctx, d) * 0.02)
        self.blocks = torch.nn.ModuleList(_Block(d, heads, mlp) for _ in range(layers))
        self.ln_f = torch.nn.LayerNorm(d, eps=1e-5)
        self.head = torch.nn.Linear(d, vocab)

    def forward(self, ids):
        """ids [N, T] int64 (T <= ctx) -> logits [N, T, vocab]."""
        x = self.wte[ids] + self.wpe[: ids.shape[1]]
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))


def parse_gpt_spec(spec):
    """A `gpt:` spec as a dict {L, d, h, ctx, m, v}; ValueError naming the bad part."""
    if not spec.startswith("gpt:"):
        raise ValueError(f"expected a spec starting with 'gpt:', got {spec!r}")
    values = {}
    for token in spec[len("gpt:"):].split("-"):
        match = re.fullmatch(r"(L|d|h|ctx|m|v)(\d+)", token)
        if not match:
            raise ValueError(f"cannot read part {token!r} of {spec!r} (expected L<blocks>, d<width>, h<heads>, ctx<context>, m<mlp>, v<vocab>)")
        key, value = match[1], int(match[2])
        if key in values:
            raise ValueError(f"part {token!r} of {spec!r}: {key} given more than once")
        if value < 1:
            raise ValueError(f"part {token!r} of {spec!r}: {key} must be >= 1")
        values[key] = value
    for key, name in (("L", "L<blocks>"), ("d", "d<width>"), ("h", "h<heads>"), ("ctx", "ctx<context>")):
        if key not in values:
            raise ValueError(f"{spec!r} lacks the part {name}")
    if values["d"] % values["h"]:
        raise ValueError(f"part 'h{values['h']}' of {spec!r}: the width d{values['d']} is not divisible by {values['h']} heads")
    values.setdefault("m", 4 * values["d"])
    values.setdefault("v", 256)
    return values


def gpt_from_spec(spec):
    """The PyTorch twin of grng's `gpt:` spec, as (module, ctx, vocab); module(ids [N, ctx]) gives
    logits [N, ctx, vocab]. Parts, any order after `gpt:`, each once: L<blocks>, d<width>,
    h<heads> (d divisible by h), ctx<context>, optional m<mlp> (default 4*d) and v<vocab>
    (default 256, byte tokens). Embeddings init N(0, 0.02); Linear layers PyTorch's default.

    >>> model, ctx, vocab = gpt_from_spec("gpt:L2-d128-h4-ctx64")
    >>> (ctx, vocab)
    (64, 256)
    >>> parameter_count(model) == (2 * (4 * (128 * 128 + 128) + 2 * 128 * 512 + 512 + 128 + 4 * 128)
    ...                            + 256 * 128 + 64 * 128 + 2 * 128 + 128 * 256 + 256)
    True
    >>> parameter_count(model)
    470784
    """
    p = parse_gpt_spec(spec)
    return GPT(p["L"], p["d"], p["h"], p["ctx"], p["m"], p["v"]), p["ctx"], p["v"]


def parameter_count(model):
    return sum(t.numel() for t in model.parameters())


if __name__ == "__main__":
    import doctest

    spec = "gpt:L2-d128-h4-ctx64"
    expected = (2 * (4 * (128 * 128 + 128) + 2 * 128 * 512 + 512 + 128 + 4 * 128)
                + 256 * 128 + 64 * 128 + 2 * 128 + 128 * 256 + 256)
    model, ctx, vocab = gpt_from_spec(spec)
    count = parameter_count(model)
    print(f"{spec}: {count} parameters (expected {expected}) {'ok' if count == expected else 'MISMATCH'}")
    ids = torch.randint(0, vocab, (2, ctx))
    assert model(ids).shape == (2, ctx, vocab)
    failures, _ = doctest.testmod()
    if count != expected or failures:
        raise SystemExit(1)
