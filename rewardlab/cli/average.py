"""``rewardlab average MEMBERS... --output DIR``: weight averaging (WARM)."""

from __future__ import annotations

from rewardlab.cli.options import command, say


def add(sub) -> None:
    p = command(sub, "average", "average reward models fine-tuned from one initialisation into one (WARM)",
                "rewardlab average runs/ensemble --output runs/averaged")
    p.add_argument("members", nargs="+", help="model folders, or one ensemble folder")
    p.add_argument("--member", type=int, action="append", metavar="I",
                   help="of an ensemble folder, only member I (repeatable; one member alone: that member as a plain "
                        "model folder, LoRA merged)")
    p.add_argument("--output", required=True, help="the averaged model's folder (new or empty)")
    p.set_defaults(func=run)


def run(args) -> None:
    from rewardlab.inference.averaging import average, member_folders

    folders = member_folders(args.members, args.member)
    out = average(folders, args.output)
    say(f"averaged {len(folders)} members ({', '.join(map(str, folders))}) into {out}")
