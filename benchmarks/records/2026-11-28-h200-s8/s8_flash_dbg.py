import itertools, torch, sys, time
from omnienc.encoders.ops.flash import flash_attention
from omnienc.encoders.attention import varlen_attention, cudnn_available
dev = torch.device("cuda")
blk = None if sys.argv[1] == "ref" else tuple(int(x) for x in sys.argv[1].split(","))
def ev(fn, n=50):
    fn(); torch.cuda.synchronize()
    e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    e0.record()
    for _ in range(n): fn()
    e1.record(); e1.synchronize(); return e0.elapsed_time(e1) * 1e3 / n
line = [str(blk)]
for segs, H, D in (([784], 16, 72), ([784, 240], 16, 72), ([104, 26] * 2, 20, 64), ([3680], 16, 72), ([784] * 8, 16, 72), ([196, 784, 1200, 3680], 16, 72)):
    T = sum(segs)
    qkv = torch.randn(T, 3, H, D, device=dev, dtype=torch.bfloat16)
    q, k, v = qkv.unbind(1)
    qc, kc, vc = q.contiguous(), k.contiguous(), v.contiguous()
    cu = torch.tensor([0] + list(itertools.accumulate(segs)), dtype=torch.int32, device=dev)
    if blk is None:
        t = ev(lambda: varlen_attention(qc, kc, vc, cu, max(segs), segs, "varlen"))
        t2 = ev(lambda: varlen_attention(qc, kc, vc, cu, max(segs), segs, "cudnn")) if cudnn_available() else 0
        t3 = ev(lambda: varlen_attention(qc, kc, vc, cu, max(segs), segs, "dense"))
        line.append(f"{len(segs)}x{max(segs)} fa2 {t:.1f} cudnn {t2:.1f} dense {t3:.1f}")
        continue
    ref = varlen_attention(qc.float(), kc.float(), vc.float(), cu, max(segs), segs, "sdpa")
    o = flash_attention(q, k, v, cu, max(segs), blocks=blk)
    torch.cuda.synchronize()
    err = (o.float() - ref).abs().max().item()
    t = ev(lambda: flash_attention(q, k, v, cu, max(segs), blocks=blk)) if err < 0.05 else float("nan")
    line.append(f"{len(segs)}x{max(segs)} {t:.1f}us e{err:.3f}")
print(" | ".join(line), flush=True)
