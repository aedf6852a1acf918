"""PyTorch twins of grng's models, for the references in bench/ (torch_step.py, torch_accuracy.py)."""
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
