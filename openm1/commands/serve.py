"""``openm1 serve MODEL``: an OpenAI-compatible HTTP server (and a chat page at ``/``)."""

from __future__ import annotations

import argparse
import sys

from openm1.generate.loading import add_graph_options


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "serve",
        help="serve a model over an OpenAI-compatible HTTP API",
        description="Serve MODEL (a checkpoint folder or a preset name) at /v1/models, /v1/completions and "
        "/v1/chat/completions, with a chat page at /. Concurrent requests are batched together.",
    )
    p.add_argument("model", metavar="MODEL", help="checkpoint folder or preset name (tiny, small, 1b, ...)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument(
        "--served-model-name", default=None, help="model name in the API (default: folder or preset)"
    )
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default=None, help="fp32, bf16, fp16 (default: as stored; presets fp32)")
    p.add_argument("--max-batch", type=int, default=16, help="requests decoded together (default 16)")
    p.add_argument(
        "--max-len", type=int, default=4096, help="tokens per request: prompt + answer (default 4096)"
    )
    p.add_argument("--prefill-chunk", type=int, default=4096)
    add_graph_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        import uvicorn
    except ImportError:
        raise ValueError("openm1 serve needs FastAPI and uvicorn: pip install 'openm1[serve]'") from None
    from openm1.generate.loading import engine_from_args, load_model
    from openm1.generate.server import create_app

    model, tok, name = load_model(args.model, args.device, args.dtype)
    engine = engine_from_args(model, tok, args)
    served = args.served_model_name or name
    app = create_app(engine, tok, served)
    print(f"serving {served!r} on http://{args.host}:{args.port} (chat page at /)", file=sys.stderr)
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    return 0
