"""What the 2-process workers and the single-process references share: the model, the data, the loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from openm1.config import hybrid_layer_types, preset
from openm1.distributed.grad import clip_grad_norm_
from openm1.model.model import MiniMaxM1ForCausalLM

WORLD = 2
STEPS = 3
LR = 1e-2
AUX = 0.01
CLIP = 1.0


def config():
    """The tiny preset cut to 4 layers (3 lightning, 1 softmax), 4 experts top-2."""
    return preset("tiny").replace(num_hidden_layers=4, layer_types=hybrid_layer_types(4, softmax_every=4))


def build_model() -> MiniMaxM1ForCausalLM:
    torch.manual_seed(0)
    return MiniMaxM1ForCausalLM(config())


def batches(world: int = WORLD) -> list[torch.Tensor]:
    """One global batch [2 x world, 17] per step; rank r trains on rows 2r, 2r + 1."""
    g = torch.Generator().manual_seed(1)
    return [torch.randint(0, config().vocab_size, (2 * world, 17), generator=g) for _ in range(STEPS)]


def shard(batch: torch.Tensor, rank: int, world: int = WORLD) -> torch.Tensor:
    per = batch.shape[0] // world
    return batch[rank * per : (rank + 1) * per]


def loss_fn(model, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Next-token cross-entropy plus the weighted load-balancing loss; also returns the logits."""
    out = model(ids[:, :-1])
    ce = F.cross_entropy(out.logits.flatten(0, 1).float(), ids[:, 1:].flatten())
    return ce + AUX * out.router_loss, out.logits


def optimizer(model) -> torch.optim.Optimizer:
    return torch.optim.AdamW(model.parameters(), lr=LR, betas=(0.9, 0.95), weight_decay=0.1)


def reference_run(record_first: bool = False, world: int = WORLD) -> dict:
    """The single-process run: each step averages the ranks' losses over the same shards."""
    model = build_model()
    opt = optimizer(model)
    losses, norms, first = [], [], {}
    for step, batch in enumerate(batches(world)):
        opt.zero_grad()
        parts = [loss_fn(model, shard(batch, r, world)) for r in range(world)]
        loss = torch.stack([p[0] for p in parts]).mean()
        loss.backward()
        if step == 0 and record_first:
            first = {
                "logits": [p[1].detach() for p in parts],
                "grads": {n: p.grad.detach().clone() for n, p in model.named_parameters()},
            }
        norms.append(float(clip_grad_norm_(model, CLIP)))
        opt.step()
        losses.append(loss.item())
    state = model.state_dict()
    return {"losses": losses, "norms": norms, "state": state, "optim": opt, "model": model, **first}


RL_GROUP = 4


def rl_batch(world: int = WORLD) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """Rewards and completion masks of 3 groups of 4 rollouts per 2 ranks, split unevenly (groups
    straddle ranks), and the row bounds of each rank's share."""
    g = torch.Generator().manual_seed(2)
    n = 6 * world
    rewards = torch.randn(n, generator=g)
    mask = torch.rand(n, 9, generator=g) > 0.3
    bounds = [0] + [r * 6 - 1 for r in range(1, world)] + [n]  # rank 0 has one row fewer
    return rewards, mask, bounds
