"""torch.optim Adam / AdamW step time: the peer of moment's fused step.

Used twice: by `gpu-check`'s `run.sh` on a CUDA card, and by moment's CPU `bench`
(`--torch`), which runs it in the middle of its own run so both are measured on the same
machine, under the same load, with the same bandwidth figures.

Same protocol as moment's bench: one flat f32 parameter of each size, three random gradients
used in turn, `--warmup` untimed steps, then the median and minimum of `--reps` timed steps
(CUDA events on the GPU, `time.perf_counter` on the CPU, where the step is synchronous).
Effective GB/s at Adam's 28 bytes per parameter (p, g, m, v read; p, m, v written), 32 for
`torch-fused-clip` (`clip_grad_norm_(…, 1.0)` then the fused step: one more read of g).
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


def time_step(cls, n, fused, device, warmup, reps, clip=None):
    """Median and minimum ms of `opt.step()` (with `clip`: `clip_grad_norm_(…, clip)` then
    the step, as LLM training runs it; the clip scales the gradient in place, so each step
    gets a fresh copy, made outside the timed region)."""
    p = torch.nn.Parameter(torch.randn(n, device=device) * 0.5)
    grads = [torch.randn(n, device=device) for _ in range(3)]
    opt = cls([p], lr=1e-3, fused=fused, foreach=None if fused else True)

    def step():
        if clip is not None:
            torch.nn.utils.clip_grad_norm_([p], clip)
        opt.step()

    times = []
    for i in range(reps + warmup):
        p.grad = grads[i % 3].clone() if clip is not None else grads[i % 3]
        if device == "cuda":
            torch.cuda.synchronize()
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record()
            step()
            end.record()
            torch.cuda.synchronize()
            ms = start.elapsed_time(end)
        else:
            t0 = time.perf_counter()
            step()
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
            impls = [
                ("torch-fused", True, None, 28),
                ("torch-foreach", False, None, 28),
                # clip_grad_norm_ reads the gradient once more for the norm (32 B floor; it
                # also scales it in place: +8 B it moves that the floor does not count)
                ("torch-fused-clip", True, 1.0, 32),
            ]
            for name, fused, clip, floor in impls:
                med, mn = time_step(classes[opt], n, fused, a.device, a.warmup, a.reps, clip)
                row = {
                    "optimizer": opt,
                    "impl": name,
                    "numel": n,
                    "median_ms": med,
                    "min_ms": mn,
                    "gbps": floor * n / (med / 1e3) / 1e9,
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
