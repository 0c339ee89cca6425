"""Repro: bf16 Conv3d weight gradients on the CPU (oneDNN) come out NaN now and then from finite
inputs (torch 2.14.1, AMD EPYC with avx512_bf16: 11 of 200 on 2 threads; with
torch.backends.mkldnn.flags(enabled=False) 0 of 200). Why lvas trains under train.amp: bf16 on a
CPU with oneDNN off (lvas.engine.setup.cpu_bf16_guard).

    python benchmarks/bf16_conv3d_cpu.py
"""
import torch
torch.manual_seed(0)
x = torch.randn(4, 24, 2, 12, 12).bfloat16()
g = (torch.randn(4, 32, 2, 6, 6) * 1e-4).bfloat16()
w0 = torch.randn(32, 24, 3, 3, 3) * 0.05
def count() -> int:
    bad = 0
    for _ in range(200):
        w = w0.bfloat16().requires_grad_()
        o = torch.nn.functional.conv3d(x, w, None, (1, 2, 2), (1, 1, 1))
        o.backward(g)
        bad += not torch.isfinite(w.grad).all().item()
    return bad


print("oneDNN on:  NaN weight gradients in", count(), "of 200")
with torch.backends.mkldnn.flags(enabled=False):
    print("oneDNN off: NaN weight gradients in", count(), "of 200")
