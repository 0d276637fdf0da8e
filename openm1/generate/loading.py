"""MODEL as the CLI and the server take it: a checkpoint folder, or a preset name (random weights)."""

from __future__ import annotations

from pathlib import Path

import torch

from openm1.config import PRESETS, preset
from openm1.generate.tokenizer import ByteTokenizer, HFTokenizer, load_tokenizer

DTYPES = {
    "fp32": torch.float32,
    "float32": torch.float32,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
    "fp16": torch.float16,
    "float16": torch.float16,
}


def resolve_device(device: str | None) -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def load_model(
    model: str, device: str | None = None, dtype: str | None = None, seed: int = 0
) -> tuple[torch.nn.Module, ByteTokenizer | HFTokenizer, str]:
    """(model in eval mode, its tokenizer, a display name). Presets get seeded random weights."""
    if dtype is not None and dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; use one of {sorted(DTYPES)}")
    dev = resolve_device(device)
    torch_dtype = DTYPES[dtype] if dtype else None
    path = Path(model)
    if path.is_dir():
        from openm1.model.checkpoint import from_pretrained

        net = from_pretrained(path, device=dev, dtype=torch_dtype)
        tok = load_tokenizer(path, net.config.vocab_size, net.config.eos_token_id)
        return net.eval(), tok, path.resolve().name
    if model in PRESETS:
        from openm1.model import MiniMaxM1ForCausalLM

        config = preset(model)
        torch.manual_seed(seed)
        with torch.device(dev):
            net = MiniMaxM1ForCausalLM(config)
        if torch_dtype is not None:
            net = net.to(torch_dtype)
        return net.eval(), ByteTokenizer(config.vocab_size), model
    raise ValueError(
        f"MODEL {model!r} is neither a checkpoint folder nor a preset; give a folder with config.json and "
        f"safetensors, or one of the presets {sorted(PRESETS)}"
    )


def add_graph_options(p) -> None:  # noqa: ANN001 - an argparse parser
    """The GPU speed options ``openm1 generate`` and ``openm1 serve`` share."""
    p.add_argument("--compile", action="store_true", help="torch.compile the decode step (CUDA only)")
    p.add_argument(
        "--cuda-graph",
        action="store_true",
        help="replay the decode step, and a lone prompt's prefill, as CUDA graphs (CUDA only)",
    )
    p.add_argument(
        "--prefill-graph-max",
        type=int,
        default=None,
        metavar="N",
        help="with --cuda-graph: the longest prompt prefilled as a graph (default 8192; 0 = none)",
    )


def engine_from_args(model, tokenizer, args):  # noqa: ANN001, ANN201 - argparse namespace in, Engine out
    """The engine ``openm1 generate`` and ``openm1 serve`` build from their shared options."""
    from openm1.generate.engine import Engine

    return Engine(
        model,
        tokenizer,
        max_batch=args.max_batch,
        max_len=args.max_len,
        prefill_chunk=args.prefill_chunk,
        compile=args.compile,
        cuda_graph=args.cuda_graph,
        prefill_graph_max=args.prefill_graph_max,
    )
