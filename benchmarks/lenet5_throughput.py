"""LeNet-5 training throughput (images/s), its FLOP/s, and that as a fraction of this machine's matmul FLOP/s.

    python benchmarks/lenet5_throughput.py [--device cpu|cuda] [--batch 16 256] [--seconds 3]

FLOPs per image are counted analytically from the paper's connections (§II-B): a multiply-add is 2 FLOPs,
and a training step (forward + backward for inputs and weights) costs ~3x the forward pass. C3 is counted
with its Table I connections only (60 of 96 map pairs), as the paper does; our masked convolution actually
executes the dense 96, so the "executed" column says what the hardware was asked to do.
"""

from __future__ import annotations

import argparse
import time

import torch

from seminal.papers.foundations.lenet5 import C3_TABLE, LeNet5, map_loss, rbf_codes

# Multiply-adds of one forward pass, layer by layer (output units x inputs per unit).
C3_PAIRS = sum(len(t) for t in C3_TABLE)  # 60
FORWARD_MACS = {
    "C1": 6 * 28 * 28 * 25,
    "S2": 6 * 14 * 14 * 4,
    "C3": 10 * 10 * C3_PAIRS * 25,
    "S4": 16 * 5 * 5 * 4,
    "C5": 120 * 16 * 25,
    "F6": 84 * 120,
    "RBF": 10 * 84,
}


def train_flops_per_image(dense_c3: bool = False) -> float:
    macs = sum(FORWARD_MACS.values())
    if dense_c3:
        macs += 10 * 10 * (96 - C3_PAIRS) * 25
    return 3 * 2 * macs  # forward + backward (2x forward), 2 FLOPs per multiply-add


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def images_per_second(device: torch.device, batch: int, seconds: float) -> float:
    """Plain SGD steps of the preset's loop on random inputs, timed after a warm-up."""
    net = LeNet5(rbf_codes("bitmap")).to(device)
    x = torch.randn(batch, 1, 32, 32, device=device)
    y = torch.randint(0, 10, (batch,), device=device)

    def step() -> None:
        loss = map_loss(net(x), y, 10.0)
        net.zero_grad(set_to_none=True)
        loss.backward()
        with torch.no_grad():
            for p in net.parameters():
                p -= 1e-4 * p.grad

    for _ in range(10):
        step()
    sync(device)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(10):
            step()
        n += 10 * batch
        sync(device)
    return n / (time.perf_counter() - start)


def matmul_flops(device: torch.device, seconds: float) -> float:
    """FLOP/s of a large float32 matmul: the machine's practical peak for dense work."""
    size = 8192 if device.type == "cuda" else 2048
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    torch.matmul(a, b)
    sync(device)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        torch.matmul(a, b)
        n += 1
        sync(device)
    return n * 2 * size**3 / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, nargs="+", default=[16, 256])
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    device = torch.device(args.device)
    peak = matmul_flops(device, args.seconds)
    flops, dense = train_flops_per_image(), train_flops_per_image(dense_c3=True)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    print(f"device: {name}")
    print(f"matmul: {peak / 1e9:.1f} GFLOP/s (float32)")
    print(
        f"LeNet-5 training FLOPs per image: {flops / 1e6:.2f} M (paper's connections), "
        f"{dense / 1e6:.2f} M executed (dense C3)"
    )
    for batch in args.batch:
        ips = images_per_second(device, batch, args.seconds)
        print(
            f"batch {batch:4d}: {ips:10.0f} images/s  {ips * flops / 1e9:8.2f} GFLOP/s  "
            f"= {ips * flops / peak:.2%} of matmul ({ips * dense / peak:.2%} executed)"
        )


if __name__ == "__main__":
    main()
