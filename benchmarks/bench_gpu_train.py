"""The training benchmark of ``python -m ddpm_lib bench train`` plus candidate BaselineUNet shapes.

Runs the networks of ``ddpm_lib.bench.NETWORKS`` and another BaselineUNet width (same depth,
attention at 16x16 and 8x8) so the default can be chosen from measured numbers, and writes JSON.
"""

import argparse
import json
from pathlib import Path

from ddpm_lib import bench
from ddpm_lib.models import BaselineUNet

bench.NETWORKS["BaselineUNet(32,(1,4,8,8))"] = lambda: BaselineUNet(base_channels=32, channel_mults=(1, 4, 8, 8))

parser = argparse.ArgumentParser()
parser.add_argument("--out", required=True)
parser.add_argument("--seconds", type=float, default=2.0)
parser.add_argument("--image-size", type=int, default=64)
parser.add_argument("--device", default=None)
args = parser.parse_args()
plan = [  # (networks, batch sizes, modes): every target case, compiled where it may help
    (["BaselineUNet", "BaselineUNet(32,(1,4,8,8))"], (128,), ("plain_bf16", "engine", "engine_compiled")),
    (["ddpm-pytorch Unet(64,(1,2,4,8))"], (128,), ("plain_fp32", "plain_bf16", "engine")),
    (["SmallUNet"], (32,), ("plain_fp32", "engine", "engine_compiled")),
]
results = []
for networks, batch_sizes, modes in plan:
    results.append(bench.bench_train(networks, batch_sizes, args.seconds, args.device, args.image_size, modes))
merged = {**results[0], "rows": [row for result in results for row in result["rows"]]}
Path(args.out).write_text(json.dumps(merged, indent=2) + "\n")
print("device:", merged["device"])
