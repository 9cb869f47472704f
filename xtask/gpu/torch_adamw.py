"""torch.optim.AdamW step time on the GPU, the peer of moment's fused AdamW in `run.sh`.

Same protocol as moment's bench: one flat f32 parameter of each size, random gradients,
warm-up steps, then the median and minimum of timed steps (CUDA events); effective GB/s at
AdamW's 28 bytes per parameter (p, g, m, v read; p, m, v written).
"""
import argparse
import json

import torch


def parse_size(s):
    s = s.strip()
    mult = {"M": 1 << 20, "m": 1 << 20, "K": 1 << 10, "k": 1 << 10}.get(s[-1], 1)
    return int(s[:-1] if mult > 1 else s) * mult


def time_step(n, fused, reps):
    p = torch.nn.Parameter(torch.randn(n, device="cuda") * 0.5)
    grads = [torch.randn(n, device="cuda") for _ in range(3)]
    opt = torch.optim.AdamW([p], lr=1e-3, fused=fused, foreach=None if fused else True)
    times = []
    for i in range(reps + 3):
        p.grad = grads[i % 3]
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        opt.step()
        end.record()
        torch.cuda.synchronize()
        if i >= 3:
            times.append(start.elapsed_time(end))
    times.sort()
    return times[len(times) // 2], times[0]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="16M,256M")
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--json")
    a = ap.parse_args()
    rows = []
    for n in map(parse_size, a.sizes.split(",")):
        for name, fused in [("torch-fused", True), ("torch-foreach", False)]:
            med, mn = time_step(n, fused, a.reps)
            row = {
                "optimizer": "adamw",
                "impl": name,
                "numel": n,
                "median_ms": med,
                "min_ms": mn,
                "gbps": 28 * n / (med / 1e3) / 1e9,
            }
            rows.append(row)
            print(f"| adamw | {name} | {n} | {med:.3f} | {mn:.3f} | {row['gbps']:.0f} |")
            torch.cuda.empty_cache()
    report = {
        "device": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "results": rows,
    }
    if a.json:
        with open(a.json, "w") as f:
            json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
