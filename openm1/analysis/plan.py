"""Parallelism planner: memory per GPU and an estimated step time for a model, a GPU type and a layout.

Everything is arithmetic on the configuration's shapes (:func:`~openm1.analysis.params.count_params`),
so the 456B release plans as quickly as ``tiny``. The model of the machine is deliberately simple and
every assumption is a named field of :class:`Assumptions`; ``docs/scale.md`` writes the formulas out.

Layout. ``gpus = replicate x fsdp x cp x tp``. Ranks are laid out innermost first as tp, cp, fsdp,
replicate (tensor parallelism inside a node). Dense parameters are sharded over ``tp`` and then by FSDP
over the ``fsdp x cp`` ranks; experts are split over ``ep`` ranks (an inner factor of ``fsdp x cp``, as
torchtitan does), each expert's hidden dimension over ``tp``, and what remains by FSDP over
``fsdp x cp / ep``. ``replicate`` > 1 is HSDP: whole shards repeated, gradients all-reduced across them.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass, field, replace

from openm1.analysis.params import LIGHTNING_STATE_BYTES, count_params, sequence_memory
from openm1.config import ModelConfig

GiB = 1024**3


class LayoutError(ValueError):
    """A parallel layout that cannot be built for this model and GPU count; the message says the fix."""


@dataclass(frozen=True)
class GPU:
    """One accelerator as the planner sees it (vendor datasheet figures, SXM parts)."""

    name: str
    memory_bytes: int
    """Device memory as the driver reports it (nvidia-smi's total)."""
    bf16_flops: float
    """Dense bf16 tensor-core peak, FLOP/s (no sparsity)."""
    hbm_bytes_per_s: float
    """Device memory bandwidth."""
    intra_node_bytes_per_s: float
    """NVLink bandwidth per GPU and direction, for groups inside one node."""
    inter_node_bytes_per_s: float
    """Network bandwidth per GPU and direction (one 400 Gb/s NIC per GPU unless said), across nodes."""
    gpus_per_node: int = 8


MiB = 1024**2
GPUS: dict[str, GPU] = {
    "H100": GPU("H100", 81_559 * MiB, 989e12, 3.35e12, 450e9, 50e9),
    "H200": GPU("H200", 143_771 * MiB, 989e12, 4.8e12, 450e9, 50e9),
    # H800: the H100 chip with NVLink cut to 400 GB/s (200 GB/s a direction); MiniMax trained on 512.
    "H800": GPU("H800", 81_559 * MiB, 989e12, 3.35e12, 200e9, 50e9),
    # A100 80GB SXM: 600 GB/s NVLink (300 a direction), 200 Gb/s HDR per GPU.
    "A100": GPU("A100", 81_920 * MiB, 312e12, 2.039e12, 300e9, 25e9),
}


def get_gpu(name: str) -> GPU:
    """A GPU by name (case-insensitive)."""
    try:
        return GPUS[name.upper()]
    except KeyError:
        raise ValueError(f"unknown GPU {name!r}; choose one of {sorted(GPUS)}") from None


@dataclass(frozen=True)
class Layout:
    """Degrees of parallelism; their product (with ``replicate``) is the number of GPUs."""

    fsdp: int = 1
    """Ranks that shard parameters, gradients and optimizer state (FSDP2 ``fully_shard``)."""
    ep: int = 1
    """Ranks the experts are split over (an inner factor of ``fsdp x cp``)."""
    tp: int = 1
    """Tensor parallelism: heads and expert hidden dims split, activations sequence-parallel."""
    cp: int = 1
    """Context parallelism: each sequence split into ``cp`` pieces along time."""
    replicate: int = 1
    """HSDP replicas of the FSDP group (gradients all-reduced across them)."""

    @property
    def gpus(self) -> int:
        return self.replicate * self.fsdp * self.cp * self.tp

    @property
    def data_parallel(self) -> int:
        """Model replicas that each see their own micro-batch: ``replicate x fsdp``."""
        return self.replicate * self.fsdp

    def describe(self) -> str:
        parts = [f"fsdp {self.fsdp}", f"ep {self.ep}", f"tp {self.tp}", f"cp {self.cp}"]
        if self.replicate > 1:
            parts.append(f"replicate {self.replicate}")
        return ", ".join(parts)


@dataclass(frozen=True)
class Workload:
    """What one step does: sequences of ``seq_len`` tokens, ``micro_batch`` per data-parallel rank."""

    seq_len: int = 8192
    micro_batch: int = 1
    """Sequences per data-parallel replica per forward/backward."""
    grad_accum: int = 1
    """Micro-batches per optimizer step."""
    activation_checkpointing: bool = True
    """Keep only each decoder block's input and recompute the block in backward."""
    rollout_len: int = 0
    """Tokens per rollout sequence (prompt + generation) for the RL rollout engine; 0: no rollout."""
    rollout_seqs: int = 0
    """Rollout sequences decoding at once per GPU."""


@dataclass(frozen=True)
class Assumptions:
    """The model's knobs. Defaults follow common practice for bf16 FSDP training on Hopper."""

    mfu: float = 0.4
    """Fraction of the bf16 peak the model's FLOPs run at (matmuls and attention together)."""
    link_efficiency: float = 0.7
    """Fraction of the link bandwidth that collectives reach (NCCL bus bandwidth vs the datasheet)."""
    compute_bytes: int = 2
    """bf16 copies of the parameters that forward/backward use (FSDP2 ``param_dtype``)."""
    master_bytes: int = 4
    """Sharded float32 master weights."""
    grad_bytes: int = 4
    """Sharded gradients (FSDP2 ``reduce_dtype`` float32)."""
    optimizer_bytes: int = 8
    """AdamW's two float32 moments per parameter."""
    activation_bytes: int = 2
    """Saved activations in bf16."""
    usable_memory: float = 0.9
    """Fraction of device memory a plan may fill (the rest: CUDA context, NCCL buffers, fragmentation)."""
    overlap_fsdp: bool = True
    """FSDP all-gathers and reduce-scatters run under compute (prefetch); EP, TP, CP collectives do not."""


@dataclass
class Memory:
    """Bytes per GPU for training, by what holds them."""

    weights: float
    gradients: float
    optimizer: float
    unsharded: float
    """FSDP working set: two units of bf16 parameters (current and prefetched) and one of gradients."""
    activations: float
    logits: float
    """The float32 LM-head logits and their gradient for the micro-batch."""

    @property
    def total(self) -> float:
        return (
            self.weights + self.gradients + self.optimizer + self.unsharded + self.activations + self.logits
        )


@dataclass
class Rollout:
    """Bytes per GPU of the rollout engine: bf16 weights resident (no FSDP) and the caches."""

    weights: float
    lightning_state: float
    softmax_kv: float

    @property
    def total(self) -> float:
        return self.weights + self.lightning_state + self.softmax_kv


@dataclass
class StepTime:
    """Seconds per optimizer step and what they are made of (per micro-batch figures x grad_accum)."""

    compute: float
    fsdp_comm: float
    ep_comm: float
    tp_comm: float
    cp_comm: float
    optimizer: float
    total: float
    tokens_per_step: int
    tokens_per_s_per_gpu: float
    flops_per_token: float
    """Training FLOPs per token (forward, backward, and the recompute when checkpointing)."""
    comm_bytes: dict[str, float] = field(default_factory=dict)
    """Bytes each GPU sends per micro-batch, per collective kind."""


@dataclass
class Plan:
    config_name: str
    gpu: GPU
    layout: Layout
    workload: Workload
    assumptions: Assumptions
    memory: Memory
    rollout: Rollout | None
    time: StepTime
    capacity: float
    """Bytes a plan may use per GPU: ``memory_bytes x usable_memory``."""

    @property
    def fits(self) -> bool:
        return self.memory.total <= self.capacity and (
            self.rollout is None or self.rollout.total <= self.capacity
        )

    def to_dict(self) -> dict:
        mem = asdict(self.memory) | {"total": self.memory.total}
        return {
            "config": self.config_name,
            "gpu": asdict(self.gpu),
            "layout": asdict(self.layout) | {"gpus": self.layout.gpus},
            "workload": asdict(self.workload),
            "assumptions": asdict(self.assumptions),
            "memory_bytes": mem,
            "rollout_bytes": None
            if self.rollout is None
            else asdict(self.rollout) | {"total": self.rollout.total},
            "capacity_bytes": self.capacity,
            "fits": self.fits,
            "time": asdict(self.time),
        }


# ---------------------------------------------------------------------- validation
def divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def validate(config: ModelConfig, layout: Layout, workload: Workload, gpus: int | None = None) -> None:
    """Raise :class:`LayoutError` naming the degree at fault and the values that would work."""
    for name in ("fsdp", "ep", "tp", "cp", "replicate"):
        if getattr(layout, name) < 1:
            raise LayoutError(f"--{name} must be a positive integer, got {getattr(layout, name)}")
    if gpus is not None and layout.gpus != gpus:
        raise LayoutError(
            f"replicate x fsdp x cp x tp = {layout.replicate} x {layout.fsdp} x {layout.cp} x {layout.tp} "
            f"= {layout.gpus}, but there are {gpus} GPUs; make the product equal the GPU count"
        )
    e = config.num_local_experts
    if e % layout.ep:
        raise LayoutError(f"ep = {layout.ep} does not divide the {e} experts; choose one of {divisors(e)}")
    if (layout.fsdp * layout.cp) % layout.ep:
        ok = [d for d in divisors(e) if (layout.fsdp * layout.cp) % d == 0]
        raise LayoutError(
            f"ep = {layout.ep} must divide fsdp x cp = {layout.fsdp * layout.cp} (experts are spread over "
            f"data-parallel ranks); choose ep in {ok}"
        )
    heads, kv, inter = config.num_attention_heads, config.num_key_value_heads, config.intermediate_size
    if heads % layout.tp or inter % layout.tp:
        ok = [d for d in divisors(math.gcd(heads, inter))]
        raise LayoutError(
            f"tp = {layout.tp} must divide the {heads} heads and the expert width {inter}; choose one of {ok}"
        )
    if kv % layout.tp and layout.tp % kv:
        raise LayoutError(f"tp = {layout.tp} and the {kv} KV heads must divide one another")
    if workload.seq_len % layout.cp:
        raise LayoutError(f"cp = {layout.cp} does not divide the sequence length {workload.seq_len}")
    for name in ("seq_len", "micro_batch", "grad_accum"):
        if getattr(workload, name) < 1:
            raise LayoutError(f"{name} must be positive, got {getattr(workload, name)}")
    if (workload.rollout_len > 0) != (workload.rollout_seqs > 0):
        raise LayoutError("give both rollout_len and rollout_seqs (or neither)")


# ---------------------------------------------------------------------- per-token figures
def activation_elements(config: ModelConfig) -> tuple[float, float]:
    """Saved activation elements per token of one (lightning, softmax) layer, MoE included, no AC.

    What openm1's eager model keeps for backward: the layer input, its norm, the mid residual and its
    norm (4h); lightning: q/k/v before and after the SiLU (6HD), the output, its norm, the gate logits,
    the gate and the gated product (5HD), and the per-block float32 states (2 H D^2 / block elements);
    softmax: q/k/v before and after RoPE (2HD + 4 KV D), the attention output (HD); MoE: per routed
    copy the input and output (2h), the gate/up product (2I), SiLU(gate) and the product (2I), plus the
    combined output (h).
    """
    h, heads, d, kv = (
        config.hidden_size,
        config.num_attention_heads,
        config.head_dim,
        config.num_key_value_heads,
    )
    k, inter = config.num_experts_per_tok, config.intermediate_size
    hd = heads * d
    common = 4 * h + k * (2 * h + 4 * inter) + h
    lightning = common + 11 * hd + 2 * heads * d * d / config.block_size
    softmax = common + 3 * hd + 4 * kv * d
    return lightning, softmax


def forward_flops_per_token(config: ModelConfig, seq_len: int) -> float:
    """Forward FLOPs per token: 2 per active matmul parameter (LM head included) plus attention.

    Softmax layers attend causally to ``seq_len / 2`` positions on average (4 H D per position: scores
    and values); lightning layers do the block form: ``4 H D (block / 2)`` inside a block and
    ``4 H D^2`` for reading and updating the state.
    """
    p = count_params(config)
    heads, d = config.num_attention_heads, config.head_dim
    matmul = 2.0 * (p.active_matmul + config.vocab_size * config.hidden_size)
    softmax = config.num_softmax_layers * 4 * heads * d * seq_len / 2
    lightning = config.num_lightning_layers * (4 * heads * d * config.block_size / 2 + 4 * heads * d * d)
    return matmul + softmax + lightning


# ---------------------------------------------------------------------- the plan
def _ring(nbytes: float, n: int) -> float:
    """Bytes each rank sends in a ring all-gather / reduce-scatter of a tensor of ``nbytes`` over n ranks."""
    return nbytes * (n - 1) / n if n > 1 else 0.0


def _bandwidth(gpu: GPU, span: int, a: Assumptions) -> float:
    """Link bandwidth a group gets: NVLink when its ranks lie within one node, the network otherwise."""
    bw = gpu.intra_node_bytes_per_s if span <= gpu.gpus_per_node else gpu.inter_node_bytes_per_s
    return bw * a.link_efficiency


def plan(
    config: ModelConfig,
    gpu: GPU,
    layout: Layout,
    workload: Workload | None = None,
    assumptions: Assumptions | None = None,
    config_name: str = "",
) -> Plan:
    """Memory per GPU, rollout memory and an estimated step time for one layout (see the module doc)."""
    w = workload or Workload()
    a = assumptions or Assumptions()
    validate(config, layout, w)
    lay = layout
    p = count_params(config)
    experts, dense = p.experts, p.total - p.experts
    shard = lay.fsdp * lay.cp  # ranks of one FSDP group (dense parameters)
    expert_shard = shard // lay.ep  # ranks that FSDP-shard one EP slice of the experts
    layers = config.num_hidden_layers

    # ---- memory: sharded state
    per_gpu_params = dense / (lay.tp * shard) + experts / (lay.ep * lay.tp * expert_shard)
    weights = per_gpu_params * a.master_bytes
    gradients = per_gpu_params * a.grad_bytes
    optimizer = per_gpu_params * a.optimizer_bytes
    # ---- FSDP working set: the largest unit (a decoder block, or the embedding / head) unsharded
    block_dense = (dense - p.embed - p.lm_head - p.final_norm) / layers
    block = block_dense / lay.tp + experts / layers / (lay.ep * lay.tp)
    unit = max(block, p.embed / lay.tp, p.lm_head / lay.tp)
    unsharded = unit * (2 * a.compute_bytes + a.grad_bytes)
    # ---- activations (sequence-parallel under tp, split over time under cp)
    tokens = w.micro_batch * w.seq_len / lay.cp
    lin, soft = activation_elements(config)
    per_layer = [lin if t == "linear_attention" else soft for t in config.layer_types]
    if w.activation_checkpointing:
        elems = layers * config.hidden_size + max(per_layer)
    else:
        elems = sum(per_layer)
    activations = elems * tokens * a.activation_bytes / lay.tp
    logits = 2 * tokens * config.vocab_size * 4 / lay.tp
    memory = Memory(weights, gradients, optimizer, unsharded, activations, logits)

    # ---- rollout engine: weights resident in bf16 over tp (dense) and ep x tp (experts), caches
    rollout = None
    if w.rollout_seqs > 0:
        seq = sequence_memory(config, w.rollout_len, "bf16")
        kv_split = min(lay.tp, config.num_key_value_heads)
        rollout = Rollout(
            weights=(dense / lay.tp + experts / (lay.ep * lay.tp)) * a.compute_bytes,
            lightning_state=w.rollout_seqs * seq.lightning_state_bytes / lay.tp,
            softmax_kv=w.rollout_seqs * seq.softmax_kv_bytes / kv_split,
        )

    # ---- time per micro-batch
    passes = 3 if w.activation_checkpointing else 2  # forward (+ recompute) + backward
    fwd = forward_flops_per_token(config, w.seq_len)
    flops_per_token = fwd * (4 if w.activation_checkpointing else 3)
    compute = flops_per_token * w.micro_batch * w.seq_len / (lay.tp * lay.cp) / (gpu.bf16_flops * a.mfu)

    # FSDP: all-gather bf16 in forward and again in backward (reshard after forward), reduce-scatter
    # gradients in reduce dtype; dense over `shard` ranks, experts over `expert_shard` ranks.
    dense_bytes, expert_bytes = dense / lay.tp, experts / (lay.ep * lay.tp)
    fsdp_dense = _ring(dense_bytes, shard) * (2 * a.compute_bytes + a.grad_bytes)
    fsdp_expert = _ring(expert_bytes, expert_shard) * (2 * a.compute_bytes + a.grad_bytes)
    hsdp = 2 * _ring(per_gpu_params * a.grad_bytes * 1.0, lay.replicate)  # all-reduce of the shards
    inner = lay.tp * lay.cp * lay.fsdp
    fsdp_time = (
        fsdp_dense / _bandwidth(gpu, lay.tp * shard, a)
        + fsdp_expert / _bandwidth(gpu, inner, a)
        + hsdp / _bandwidth(gpu, inner * lay.replicate, a)
    )
    # EP: dispatch and combine each routed copy of a token (bf16) per MoE layer, each pass.
    ep_bytes = (
        layers
        * tokens
        / lay.tp
        * config.num_experts_per_tok
        * config.hidden_size
        * a.activation_bytes
        * (lay.ep - 1)
        / lay.ep
        * 2
        * passes
    )
    ep_time = ep_bytes / _bandwidth(gpu, lay.tp * lay.ep, a)
    # TP with sequence parallelism: 2 all-gathers + 2 reduce-scatters of [tokens, hidden] per layer and pass.
    tp_bytes = layers * 4 * _ring(tokens * config.hidden_size * a.activation_bytes, lay.tp) * passes
    tp_time = tp_bytes / _bandwidth(gpu, lay.tp, a)
    # CP: softmax layers pass K/V around the ring (cp - 1 hops); lightning layers pass the float32 state.
    kv_chunk = tokens * 2 * config.num_key_value_heads * config.head_dim * a.activation_bytes
    state = config.num_attention_heads * config.head_dim**2 * LIGHTNING_STATE_BYTES / lay.tp
    cp_bytes = 0.0
    if lay.cp > 1:
        cp_bytes = (
            config.num_softmax_layers * kv_chunk * (lay.cp - 1) * (passes + 1)
            + config.num_lightning_layers * state * (passes + 1)
        ) / lay.tp
    cp_time = cp_bytes / _bandwidth(gpu, lay.tp * lay.cp, a)

    exposed_fsdp = max(0.0, fsdp_time - compute) if a.overlap_fsdp else fsdp_time
    micro = compute + exposed_fsdp + ep_time + tp_time + cp_time
    # AdamW: read and write master weights, moments, and read gradients, at memory bandwidth.
    opt_time = (
        per_gpu_params * (2 * a.master_bytes + 2 * a.optimizer_bytes + a.grad_bytes) / gpu.hbm_bytes_per_s
    )
    total = micro * w.grad_accum + opt_time
    tokens_per_step = lay.data_parallel * w.micro_batch * w.seq_len * w.grad_accum
    time = StepTime(
        compute=compute * w.grad_accum,
        fsdp_comm=fsdp_time * w.grad_accum,
        ep_comm=ep_time * w.grad_accum,
        tp_comm=tp_time * w.grad_accum,
        cp_comm=cp_time * w.grad_accum,
        optimizer=opt_time,
        total=total,
        tokens_per_step=tokens_per_step,
        tokens_per_s_per_gpu=tokens_per_step / total / lay.gpus,
        flops_per_token=flops_per_token,
        comm_bytes={
            "fsdp_dense": fsdp_dense,
            "fsdp_experts": fsdp_expert,
            "hsdp_allreduce": hsdp,
            "ep_all_to_all": ep_bytes,
            "tp": tp_bytes,
            "cp": cp_bytes,
        },
    )
    return Plan(config_name, gpu, lay, w, a, memory, rollout, time, gpu.memory_bytes * a.usable_memory)


# ---------------------------------------------------------------------- search
def candidate_layouts(config: ModelConfig, gpus: int, workload: Workload, gpu: GPU) -> list[Layout]:
    """Every valid layout of ``gpus`` GPUs with tp within a node, cp up to 8, no HSDP replicas."""
    out = []
    for tp, cp in itertools.product(divisors(gpu.gpus_per_node), (1, 2, 4, 8)):
        if gpus % (tp * cp):
            continue
        fsdp = gpus // (tp * cp)
        for ep in divisors(config.num_local_experts):
            layout = Layout(fsdp=fsdp, ep=ep, tp=tp, cp=cp)
            try:
                validate(config, layout, workload, gpus)
            except LayoutError:
                continue
            out.append(layout)
    return out


def suggest(
    config: ModelConfig,
    gpu: GPU,
    gpus: int,
    workload: Workload | None = None,
    assumptions: Assumptions | None = None,
    top: int = 5,
    config_name: str = "",
) -> list[Plan]:
    """The layouts that fit with the most tokens/s per GPU, best first (checkpointing tried both ways).

    Empty when nothing fits on ``gpus`` GPUs: see :func:`min_gpus`.
    """
    w = workload or Workload()
    plans = []
    for layout in candidate_layouts(config, gpus, w, gpu):
        for ac in (False, True):
            pl = plan(config, gpu, layout, replace(w, activation_checkpointing=ac), assumptions, config_name)
            if pl.fits:
                plans.append(pl)
    plans.sort(key=lambda pl: (-pl.time.tokens_per_s_per_gpu, pl.memory.total))
    return plans[:top]


def min_gpus(
    config: ModelConfig,
    gpu: GPU,
    workload: Workload | None = None,
    assumptions: Assumptions | None = None,
    limit: int = 8192,
) -> int | None:
    """The fewest GPUs on which some layout fits, among 1, 2, 4 and whole nodes of 2^i or 3 x 2^i GPUs."""
    node = gpu.gpus_per_node
    steps = sorted({m * 2**i for i in range(20) for m in (1, 3)})
    counts = [n for n in (1, 2, 4) if n < node] + [node * s for s in steps if node * s <= limit]
    for n in counts:
        if suggest(config, gpu, n, workload, assumptions, top=1):
            return n
    return None
