"""The PyTorch peer for ``bench_ssl.py``: the same SimCLR, SCAN and SwAV steps in plain PyTorch.

torchvision's ResNet-18 (CIFAR stem: 3x3 first convolution, no max-pool) and ResNet-50, the same
heads and losses as jaxclust's steps, SGD with momentum, channels-last memory and, with
``--dtype bfloat16``, autocast to bf16 (the PyTorch reference recipes use AMP). The views are
plain slices of a synthetic batch already on the GPU: no augmentation work, which the caller
compares with jaxclust's "no aug" step. ``--compile`` adds ``torch.compile``.

Prints one JSON line: seconds per step (wall time of ``--steps`` steps after warm-up, synchronized).
Kept out of jaxclust's dependencies; run it with a Python that has torch and torchvision.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F
import torchvision
from torch import nn


def resnet18_cifar():
  net = torchvision.models.resnet18()
  net.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
  net.maxpool = nn.Identity()
  net.fc = nn.Identity()
  return net


def resnet50():
  net = torchvision.models.resnet50()
  net.fc = nn.Identity()
  return net


def nt_xent(z1, z2, temperature):
  z = F.normalize(torch.cat([z1, z2]).float(), dim=1)
  n = z1.shape[0]
  logits = z @ z.T / temperature
  logits.fill_diagonal_(float("-inf"))
  targets = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
  return F.cross_entropy(logits, targets)


def scan_loss(logits, entropy_weight):
  """SCAN over heads: logits [heads, 2B, k], anchors then neighbours."""
  total = 0.0
  for head in logits.float():
    anchor, neighbor = head.chunk(2)
    pa, pn = anchor.softmax(1), neighbor.softmax(1)
    consistency = -torch.log((pa * pn).sum(1).clamp_min(1e-8)).mean()
    mean = pa.mean(0)
    total = total + consistency + entropy_weight * (mean * torch.log(mean.clamp_min(1e-8))).sum()
  return total


@torch.no_grad()
def sinkhorn(scores, epsilon=0.05, n_iter=3):
  q = torch.exp(scores.float() / epsilon).T
  q /= q.sum()
  k, b = q.shape
  for _ in range(n_iter):
    q /= q.sum(1, keepdim=True)
    q /= k
    q /= q.sum(0, keepdim=True)
    q /= b
  return (q * b).T


class SwAVHead(nn.Module):
  def __init__(self, backbone, hidden=2048, out=128, prototypes=3000):
    super().__init__()
    self.backbone = backbone
    self.projection = nn.Sequential(nn.Linear(2048, hidden), nn.BatchNorm1d(hidden), nn.ReLU(), nn.Linear(hidden, out))
    self.prototypes = nn.Linear(out, prototypes, bias=False)

  def forward(self, x):
    z = F.normalize(self.projection(self.backbone(x)), dim=1)
    return self.prototypes(z)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--bench", required=True, choices=("simclr", "scan", "swav"))
  parser.add_argument("--batch", type=int, required=True)
  parser.add_argument("--steps", type=int, default=20)
  parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
  parser.add_argument("--compile", action="store_true")
  args = parser.parse_args()
  device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
  torch.backends.cudnn.benchmark = True
  b = args.batch
  if args.bench == "simclr":
    model = nn.Sequential(resnet18_cifar(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 128))
    images = torch.rand(b, 3, 32, 32, device=device)
    views = [images, images]
    lr, weight_decay = 0.4, 1e-4

    def loss_fn(outs):
      return nt_xent(outs[0][:b], outs[0][b:], 0.1)
  elif args.bench == "scan":
    backbone = resnet18_cifar()
    model_heads = nn.Linear(512, 10 * 10)
    model = nn.Sequential(backbone, model_heads)
    images = torch.rand(b, 3, 32, 32, device=device)
    views = [images, images]
    lr, weight_decay = 1e-4, 1e-4

    def loss_fn(outs):
      logits = outs[0].reshape(2 * b, 10, 10).permute(1, 0, 2)
      return scan_loss(logits, 5.0)
  else:
    model = SwAVHead(resnet50())
    images = torch.randint(0, 256, (b, 3, 256, 256), device=device, dtype=torch.uint8).float() / 255
    views = [images[:, :, :224, :224]] * 2 + [images[:, :, :96, :96]] * 6
    lr, weight_decay = 0.6, 1e-6

    def loss_fn(outs):
      scores = torch.cat(outs)  # [8B, K], 2 large crops then 6 small
      scores = scores.float()
      loss = 0.0
      for i in range(2):
        q = sinkhorn(scores[i * b:(i + 1) * b].detach())
        for v in range(8):
          if v != i:
            loss = loss - (q * F.log_softmax(scores[v * b:(v + 1) * b] / 0.1, dim=1)).sum(1).mean()
      return loss / (2 * 7)

  model = model.to(device).to(memory_format=torch.channels_last)
  optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=weight_decay)
  # Same-size views go through the network together, as in the SwAV and SimCLR reference code.
  groups = {}
  for v in views:
    groups.setdefault(tuple(v.shape[2:]), []).append(v)
  inputs = [torch.cat(g).contiguous(memory_format=torch.channels_last) for g in groups.values()]
  forward = torch.compile(model) if args.compile else model

  def step():
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.dtype == "bfloat16"):
      outs = [forward(x) for x in inputs]
      loss = loss_fn(outs)
    loss.backward()
    optimizer.step()
    return loss

  tick = time.perf_counter()
  for _ in range(3):
    step()
  if device.type == "cuda":
    torch.cuda.synchronize()
  warmup = time.perf_counter() - tick
  tick = time.perf_counter()
  for _ in range(args.steps):
    loss = step()
  float(loss)
  if device.type == "cuda":
    torch.cuda.synchronize()
  seconds = (time.perf_counter() - tick) / args.steps
  print(json.dumps({"bench": args.bench, "batch": b, "dtype": args.dtype, "seconds": seconds, "warmup": warmup,
                    "compile": args.compile, "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
                    "torch": torch.__version__}))


if __name__ == "__main__":
  main()
