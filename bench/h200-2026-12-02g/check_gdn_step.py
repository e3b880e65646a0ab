"""GPU check of the recurrent ops after they took any layout: the strided Gated DeltaNet step kernel against
the PyTorch reference, and the compiled decode step of small GDN and Mamba2 models against eager mode."""
import copy
import sys

import torch

sys.path.insert(0, "src")
from phase_energy.engines.native.recurrent import launch_step_kernel, recurrent_step_reference
from phase_energy.engines.native.transformer import Transformer, init_random_
from phase_energy.model.presets import get_preset

torch.manual_seed(0)
b, groups, hv, kd, vd = 32, 16, 32, 128, 128
widths = [groups * kd, groups * kd, hv * vd, hv, hv]
row = torch.randn(b, sum(widths) + 48, device="cuda", dtype=torch.bfloat16)
q, k, v, g, beta = row[:, :sum(widths)].split(widths, -1)
q, k, v, g, beta = q.view(b, groups, kd), k.view(b, groups, kd), v.view(b, hv, vd), -g.float().abs(), beta.sigmoid()
state = torch.randn(b, hv, kd, vd, device="cuda")
s1, s2 = state.clone(), state.clone()
o1 = launch_step_kernel(s1, q, k, v, g, beta, kd**-0.5, True)
o2 = recurrent_step_reference(s2, q, k, v, g, beta, kd**-0.5, True)
print("check gdn step: max |o| error", (o1 - o2).abs().max().item(), "state", (s1 - s2).abs().max().item(),
      "of", o2.abs().max().item())
for arch in ("tiny-gdn", "tiny-mamba2"):
    cfg = get_preset(arch)
    torch.manual_seed(1)
    model = Transformer(cfg).to("cuda", torch.bfloat16)
    model = init_random_(model, 0).fuse()
    model.setup_caches(4, 40)
    model.prefill(torch.randint(0, cfg.vocab, (4, 16), device="cuda"))
    twin = copy.deepcopy(model)
    tok, pos = torch.randint(0, cfg.vocab, (4, 1), device="cuda"), torch.tensor(16, device="cuda")
    eager = [model.decode_step(tok, pos + i).float() for i in range(3)]
    step = torch.compile(twin.decode_step, fullgraph=True)
    comp = [step(tok, pos + i).float() for i in range(3)]
    err = max((a - c).abs().max().item() for a, c in zip(eager, comp, strict=True))
    print(f"check {arch}: compiled against eager decode, 3 steps, max |logit| error {err:.4f} of "
          f"{max(a.abs().max().item() for a in eager):.2f}")
