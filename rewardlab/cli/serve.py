"""``rewardlab serve MODEL``: the reward model over HTTP."""

from __future__ import annotations

import os

from rewardlab.cli.options import command, load_scorer, port, positive_int, say, scoring_options


def add(sub) -> None:
    p = command(sub, "serve", "serve a reward model over HTTP (POST /score, POST /get_reward, GET /health)",
                "rewardlab serve runs/quickstart --port 8000")
    p.add_argument("model", help="a saved model or ensemble folder, offline name or hub id")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (loopback: this machine only)")
    p.add_argument("--port", type=port, default=8000, help="port to listen on (0: any free port, printed)")
    p.add_argument("--api-key", default=os.environ.get("REWARDLAB_API_KEY"),
                   help="require 'Authorization: Bearer KEY' (default: $REWARDLAB_API_KEY, else no key)")
    p.add_argument("--normalize", action="store_true", help="(reward - mean) / std with the saved statistics")
    p.add_argument("--max-items", type=positive_int, default=4096, help="most items in one request")
    p.add_argument("--no-merge", action="store_true", help="one forward pass per request (for comparison)")
    scoring_options(p)
    p.set_defaults(func=run)


def run(args) -> None:
    from rewardlab.inference.server import serve

    if args.host not in ("127.0.0.1", "localhost", "::1") and not args.api_key:
        say(f"warning: serving on {args.host} without --api-key: anyone who can reach it can use it")
    serve(load_scorer(args), args.host, args.port, api_key=args.api_key, max_items=args.max_items,
          merge=not args.no_merge, normalize=args.normalize)
