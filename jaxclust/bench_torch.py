"""The PyTorch peers of ``jaxclust bench steps --peers``: the same training steps in plain PyTorch.

Run as a script by a Python that has torch (and torchvision for the ResNets, clustpy for DEC), never imported by
jaxclust, which keeps torch out of its dependencies::

  python jaxclust/bench_torch.py SPEC_JSON

``SPEC_JSON`` comes from a method's ``bench_peers(config, shape, k)``: the step (``simclr``, ``moco``, ``scan``,
``swav`` or ``clustpy_dec``), the backbone as jaxclust builds it (``small_cnn``, ``resnet18/34/50`` with the CIFAR
or ImageNet stem, ``mlp``), the heads' sizes and the batch. The network is the same layer for layer (channels-last,
SGD with momentum, bf16 autocast for ``dtype=bfloat16``); the views are plain copies of a synthetic batch, with no
augmentation, which jaxclust's step does on the device: the ratio undercounts jaxclust's work, never the peer's.
ClustPy's DEC has no per-epoch timer: an epoch is the difference of whole fits (3 epochs minus 1, halved).

Prints one JSON line: ``{"seconds": per step (per epoch for clustpy_dec), "peer": ..., "torch": version}``.
"""

from __future__ import annotations

import json
import sys
import time


def backbone(spec):
  """``(module, features)`` as jaxclust's ``networks.backbone`` builds it."""
  import torch
  from torch import nn
  kind, shape = spec["kind"], spec["shape"]
  if kind == "mlp":
    layers, width = [nn.Flatten()], int(torch.tensor(shape).prod())
    for w in spec["widths"]:
      layers += [nn.Linear(width, w), nn.BatchNorm1d(w), nn.ReLU()]
      width = w
    return nn.Sequential(*layers), width
  if kind == "small_cnn":
    layers, width = [], shape[-1]
    for i, c in enumerate(spec["channels"]):
      layers += [nn.Conv2d(width, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU()]
      if i < len(spec["channels"]) - 1:
        layers.append(nn.MaxPool2d(2))
      width = c
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten()), width
  import torchvision
  net = getattr(torchvision.models, kind)()
  if shape[-1] != 3:
    net.conv1 = nn.Conv2d(shape[-1], 64, 7, 2, 3, bias=False)
  if spec["stem"] == "cifar":
    net.conv1 = nn.Conv2d(shape[-1], 64, 3, 1, 1, bias=False)
    net.maxpool = nn.Identity()
  width = net.fc.in_features
  net.fc = nn.Identity()
  return net, width


def projection(width, hidden, out):
  from torch import nn
  return nn.Sequential(nn.Linear(width, hidden), nn.ReLU(), nn.Linear(hidden, out))


def nt_xent(z1, z2, temperature):
  import torch
  import torch.nn.functional as F
  z = F.normalize(torch.cat([z1, z2]).float(), dim=1)
  n = z1.shape[0]
  logits = z @ z.T / temperature
  logits.fill_diagonal_(float("-inf"))
  return F.cross_entropy(logits, torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device))


def scan_loss(logits, entropy_weight):
  """SCAN summed over heads: ``logits [heads, 2B, k]``, anchors then neighbours."""
  import torch
  total = 0.0
  for head in logits.float():
    anchor, neighbor = head.chunk(2)
    pa, pn = anchor.softmax(1), neighbor.softmax(1)
    mean = pa.mean(0)
    total = total - torch.log((pa * pn).sum(1).clamp_min(1e-8)).mean() + entropy_weight * (
        mean * torch.log(mean.clamp_min(1e-8))).sum()
  return total


def sinkhorn(scores, epsilon, n_iter=3):
  import torch
  with torch.no_grad():
    q = torch.exp(scores.float() / epsilon).T
    q /= q.sum()
    k, b = q.shape
    for _ in range(n_iter):
      q /= q.sum(1, keepdim=True) * k
      q /= q.sum(0, keepdim=True) * b
    return (q * b).T


def network_step(spec, device):
  """``(model, inputs, loss_fn)``: the step's network, its inputs grouped by size, its loss."""
  import copy

  import torch
  import torch.nn.functional as F
  from torch import nn
  b, shape, step = spec["batch"], spec["backbone"]["shape"], spec["step"]
  net, width = backbone(spec["backbone"])
  images = torch.rand(b, *(shape[-1:] + shape[:-1] if len(shape) == 3 else shape), device=device)
  if step in ("simclr", "moco"):
    model = nn.Sequential(net, projection(width, spec["hidden"], spec["out"]))
    if step == "simclr":
      return model, [torch.cat([images, images])], lambda outs: nt_xent(*outs[0].chunk(2), spec["temperature"])
    key_model = copy.deepcopy(model).to(device)
    queue = F.normalize(torch.randn(spec["queue"], spec["out"], device=device), dim=1)

    def moco_loss(outs):
      q = F.normalize(outs[0].float(), dim=1)
      with torch.no_grad():
        for pk, pq in zip(key_model.parameters(), model.parameters()):
          pk.mul_(0.999).add_(pq.detach(), alpha=0.001)
        k = F.normalize(key_model(images).float(), dim=1)
      logits = torch.cat([(q * k).sum(1, keepdim=True), q @ queue.T], 1) / spec["temperature"]
      return F.cross_entropy(logits, torch.zeros(b, dtype=torch.long, device=device))
    return model, [images], moco_loss
  if step == "scan":
    heads = nn.Linear(width, spec["heads"] * spec["k"])
    if spec["frozen"]:  # jaxclust trains the heads on precomputed features: so does the peer
      model, inputs = heads, [torch.rand(2 * b, width, device=device)]
    else:
      model, inputs = nn.Sequential(net, heads), [torch.cat([images, images])]
    return model, inputs, lambda outs: scan_loss(
        outs[0].reshape(2 * b, spec["heads"], spec["k"]).permute(1, 0, 2), spec["entropy_weight"])
  if step == "swav":
    class SwAV(nn.Module):  # the projection l2-normalized, then scored against the prototypes, as SwAV's
      def __init__(self):
        super().__init__()
        self.body = nn.Sequential(net, projection(width, spec["hidden"], spec["out"]))
        self.prototypes = nn.Linear(spec["out"], spec["prototypes"], bias=False)

      def forward(self, x):
        return self.prototypes(F.normalize(self.body(x), dim=1))

    inputs = [torch.cat([images[..., :size, :size]] * n) for n, size in spec["crops"]]
    views, large = sum(n for n, _ in spec["crops"]), spec["crops"][0][0]

    def swav_loss(outs):
      scores = torch.cat(outs).float()
      loss = 0.0
      for i in range(large):
        q = sinkhorn(scores[i * b:(i + 1) * b].detach(), spec["epsilon"])
        for v in range(views):
          if v != i:
            loss = loss - (q * F.log_softmax(scores[v * b:(v + 1) * b] / spec["temperature"], dim=1)).sum(1).mean()
      return loss / (large * (views - 1))
    return SwAV(), inputs, swav_loss
  raise ValueError(f"step={step!r}: no PyTorch peer")


def time_steps(spec) -> float:
  """Seconds per step of the spec's network step: the median of ``steps`` after three warm-up steps."""
  import statistics

  import torch
  device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
  torch.backends.cudnn.benchmark = True
  model, inputs, loss_fn = network_step(spec, device)
  model = model.to(device)
  model = model.to(memory_format=torch.channels_last)
  inputs = [x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x for x in inputs]
  params = [p for p in model.parameters() if p.requires_grad]
  optimizer = torch.optim.SGD(params, lr=0.01, momentum=0.9, weight_decay=1e-6)

  def step():
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=spec["dtype"] == "bfloat16"):
      loss = loss_fn([model(x) for x in inputs])
    loss.backward()
    optimizer.step()
    float(loss.detach())  # synchronizes

  for _ in range(3):
    step()
  times = []
  for _ in range(spec["steps"]):
    tick = time.perf_counter()
    step()
    times.append(time.perf_counter() - tick)
  return statistics.median(times)


def clustpy_epoch(spec) -> float:
  """Seconds of one ClustPy DEC epoch of ``spec["stage"]`` (pretrain or cluster) on ``n`` uniform rows:
  (T(3 epochs) - T(1 epoch)) / 2 of whole fits, the other stage at one epoch."""
  import numpy as np
  import torch
  from clustpy.deep import DEC
  x = np.random.default_rng(0).uniform(size=(spec["n"], int(np.prod(spec["backbone"]["shape"])))).astype(np.float32)

  def fit(pretrain, cluster):
    torch.manual_seed(0)
    tick = time.perf_counter()
    DEC(n_clusters=spec["k"], batch_size=spec["batch"], pretrain_epochs=pretrain, clustering_epochs=cluster,
        embedding_size=spec["embedding"]).fit(x)
    return time.perf_counter() - tick

  one = fit(1, 1)
  three = fit(3, 1) if spec["stage"] == "pretrain" else fit(1, 3)
  return (three - one) / 2


def main(spec) -> dict:
  import torch
  if spec["step"] == "clustpy_dec":
    import clustpy
    return {"seconds": clustpy_epoch(spec), "peer": f"clustpy {clustpy.__version__}", "per": "epoch",
            "torch": torch.__version__}
  return {"seconds": time_steps(spec), "peer": f"torch {torch.__version__}", "per": "step", "torch": torch.__version__}


if __name__ == "__main__":
  print(json.dumps(main(json.loads(sys.argv[1]))))
