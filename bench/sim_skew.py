#!/usr/bin/env python3
"""The expert skew of a model that no one here ran, drawn from the loads a real run logged.

Pools every expert's load over its layer's mean from the last N logged steps of a moe train
log (expert_load), then draws E experts' loads from that pool, places them E/ep a device in
order (no dynamic placement) and prints the mean, over the draws, of the busiest device's load
over the mean device's: what `moe simulate --load SKEW` takes (bench/sim_published.py).
  bench/sim_skew.py LOG.jsonl E EP [--last 20] [--draws 2000] [--seed 1]
"""
import json, random, sys

def main():
    a = sys.argv[1:]
    if len(a) < 3:
        sys.exit(__doc__.strip().splitlines()[-1].strip())
    opt = dict(zip(a[3::2], a[4::2]))
    try:
        path, E, ep = a[0], int(a[1]), int(a[2])
        last, draws, seed = int(opt.get("--last", 20)), int(opt.get("--draws", 2000)), int(opt.get("--seed", 1))
    except ValueError as e:
        sys.exit(f"sim_skew: not a number: {e}")
    if E < 1 or ep < 1 or E % ep:
        sys.exit(f"sim_skew: E {E} must be a positive multiple of ep {ep}")
    steps = []
    try:
        f = open(path)
    except OSError as e:
        sys.exit(f"sim_skew: {path}: {e.strerror}")
    with f:
        for n, line in enumerate(f, 1):
            if '"expert_load"' not in line:
                continue
            try:
                load = json.loads(line)["expert_load"]
            except (ValueError, KeyError, TypeError) as e:
                sys.exit(f"sim_skew: {path}:{n}: not a log line with expert_load ({e})")
            if not isinstance(load, list) or not all(isinstance(l, list) and all(isinstance(x, (int, float)) and x >= 0 for x in l) for l in load):
                sys.exit(f"sim_skew: {path}:{n}: expert_load must be a list of layers, each a list of counts")
            steps.append(load)
    if not steps:
        sys.exit(f"sim_skew: {path}: no expert_load in the log")
    pool = []
    for layers in steps[-last:]:
        for load in layers:
            m = sum(load) / len(load)
            if m > 0:
                pool += [x / m for x in load]
    rng = random.Random(seed)
    per, total = E // ep, 0.0
    for _ in range(draws):
        x = [rng.choice(pool) for _ in range(E)]
        dev = [sum(x[d * per:(d + 1) * per]) for d in range(ep)]
        total += max(dev) / (sum(dev) / ep)
    print(f"{total / draws:.3f}")

main()
