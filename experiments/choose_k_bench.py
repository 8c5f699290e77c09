"""How often each rule for choosing k finds the true number of clusters (experiments/RESULTS.md, "Choosing k").

The rule is chosen on the SELECTION sets and confirmed on the CONFIRMATION sets, both named here before any
run: Gaussian blobs of make_blobs (2,000 rows; 3, 6, 10 or 15 centers; 2 or 16 features; standard deviation
1.0 or 2.5) with random_state 0 (selection) and 1 (confirmation), and real data sets with classes
(confirmation only; classes need not be the data's cluster structure). k = 2..20 everywhere.

  python experiments/choose_k_bench.py [--only selection|confirmation] [--data-dir ../shared/data]
"""

import argparse
import itertools
import json
import time

import numpy as np
from sklearn import datasets
from sklearn.preprocessing import StandardScaler

from jaxclust import k_choice

KS = range(2, 21)


def blobs(state: int):
  for k, d, std in itertools.product((3, 6, 10, 15), (2, 16), (1.0, 2.5)):
    x, _ = datasets.make_blobs(2000, centers=k, n_features=d, cluster_std=std, random_state=state)
    yield f"blobs k={k} d={d} std={std} seed={state}", x, k


def real(data_dir):
  yield "digits (8x8, /16)", datasets.load_digits().data / 16.0, 10
  yield "iris (standardized)", StandardScaler().fit_transform(datasets.load_iris().data), 3
  yield "wine (standardized)", StandardScaler().fit_transform(datasets.load_wine().data), 3
  yield "breast cancer (standardized)", StandardScaler().fit_transform(datasets.load_breast_cancer().data), 2
  if data_dir:  # choose_k draws 10,000 of the 70,000 rows
    from jaxclust.data import sources
    mnist = sources.load("mnist", data_dir=data_dir)
    yield "MNIST pixels (/255, 10,000 of 70,000 rows)", mnist.x.reshape(len(mnist.x), -1), 10


def rules(choice) -> dict:
  picks = choice.by_criterion()
  picks["RULE"] = choice.k
  return picks


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--only", choices=["selection", "confirmation"])
  parser.add_argument("--data-dir", help="the folder holding mnist/ (adds MNIST to the confirmation sets)")
  args = parser.parse_args()
  sets = {"selection": lambda: blobs(0), "confirmation": lambda: itertools.chain(blobs(1), real(args.data_dir))}
  for part, make in sets.items():
    if args.only and part != args.only:
      continue
    right = {}
    for name, x, k in make():
      start = time.time()
      choice = k_choice.choose_k(x, KS)
      picks = rules(choice)
      for rule, pick in picks.items():
        right.setdefault(rule, []).append(pick == k)
      print(json.dumps({"part": part, "data": name, "true_k": k, "picks": picks,
                        "seconds": round(time.time() - start, 1)}), flush=True)
    for rule, hits in right.items():
      print(f"{part}: {rule}: {sum(hits)} of {len(hits)} right", flush=True)


if __name__ == "__main__":
  main()
