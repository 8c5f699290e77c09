"""Prints a workdir's per-epoch metrics as the markdown tables of RESULTS.md.

  python experiments/metrics_table.py WORKDIR [--stage deepcluster] [--columns loss,acc,nmi,ari]

Reads WORKDIR/metrics.jsonl (one JSON object per epoch, written by `jaxclust fit`) and, when the run
finished, WORKDIR/summary.json (its final labels).
"""
import argparse
import json
from pathlib import Path


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("workdir", type=Path)
  parser.add_argument("--stage", default=None, help="only rows of this stage (default: all)")
  parser.add_argument("--columns", default="loss,seconds,acc,nmi,ari")
  args = parser.parse_args()
  metrics = args.workdir / "metrics.jsonl"
  if not metrics.exists():
    raise SystemExit(f"no metrics.jsonl in {str(args.workdir)!r}")
  rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
  if args.stage is not None:
    rows = [r for r in rows if r.get("stage") == args.stage]
  columns = args.columns.split(",")
  print("| stage | epoch | " + " | ".join(columns) + " |")
  print("|---" * (len(columns) + 2) + "|")
  for r in rows:
    cells = [_cell(r.get(c)) for c in columns]
    print(f"| {r.get('stage', '')} | {r.get('epoch', '')} | " + " | ".join(cells) + " |")
  summary = args.workdir / "summary.json"
  if summary.exists():
    print("\nsummary.json:", json.dumps(json.loads(summary.read_text()), sort_keys=True))


def _cell(value):
  if value is None:
    return ""
  if isinstance(value, float):
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:.4f}"
  return str(value)


if __name__ == "__main__":
  main()
