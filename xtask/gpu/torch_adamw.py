"""torch.optim Adam / AdamW step time: the peer of moment's fused step.

Used twice: by `gpu-check`'s `run.sh` on a CUDA card, and by moment's CPU `bench`
(`--torch`), which runs it in the middle of its own run so both are measured on the same
machine, under the same load, with the same bandwidth figures.

Same protocol as moment's bench: one flat f32 parameter of each size, three random gradients
used in turn, `--warmup` untimed steps, then the median and minimum of `--reps` timed steps
(CUDA events on the GPU, `time.perf_counter` on the CPU, where the step is synchronous).
Effective GB/s at Adam's 28 bytes per parameter (p, g, m, v read; p, m, v written).
Output: one markdown row per (optimizer, implementation, size) and, with `--json`, a report
whose `results[]` rows carry the bench's field names.
"""
import argparse
import json
import time

import torch


def parse_size(s):
    s = s.strip()
    mult = {"M": 1 << 20, "m": 1 << 20, "K": 1 << 10, "k": 1 << 10}.get(s[-1], 1)
    return int(s[:-1] if mult > 1 else s) * mult


def time_step(cls, n, fused, device, warmup, reps):
    p = torch.nn.Parameter(torch.randn(n, device=device) * 0.5)
    grads = [torch.randn(n, device=device) for _ in range(3)]
    opt = cls([p], lr=1e-3, fused=fused, foreach=None if fused else True)
    times = []
    for i in range(reps + warmup):
        p.grad = grads[i % 3]
        if device == "cuda":
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record()
            opt.step()
            end.record()
            torch.cuda.synchronize()
            ms = start.elapsed_time(end)
        else:
            t0 = time.perf_counter()
            opt.step()
            ms = (time.perf_counter() - t0) * 1e3
        if i >= warmup:
            times.append(ms)
    times.sort()
    return times[len(times) // 2], times[0]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="16M,256M")
    ap.add_argument("--optimizers", default="adamw")
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--json")
    a = ap.parse_args()
    if a.device == "cpu" and a.threads > 0:
        torch.set_num_threads(a.threads)
    classes = {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam}
    rows = []
    for n in map(parse_size, a.sizes.split(",")):
        for opt in a.optimizers.split(","):
            if opt not in classes:
                continue
            for name, fused in [("torch-fused", True), ("torch-foreach", False)]:
                med, mn = time_step(classes[opt], n, fused, a.device, a.warmup, a.reps)
                row = {
                    "optimizer": opt,
                    "impl": name,
                    "numel": n,
                    "median_ms": med,
                    "min_ms": mn,
                    "gbps": 28 * n / (med / 1e3) / 1e9,
                }
                rows.append(row)
                print(f"| {opt} | {name} | {n} | {med:.3f} | {mn:.3f} | {row['gbps']:.0f} |")
                if a.device == "cuda":
                    torch.cuda.empty_cache()
    report = {
        "device": torch.cuda.get_device_name(0) if a.device == "cuda" else "cpu",
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "results": rows,
    }
    if a.json:
        with open(a.json, "w") as f:
            json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
