"""The arguments of the `pool`, `taxonomy`, `forget` and `export` subcommands, apart from their
code, so building the parser imports nothing heavy (a routed message should not wait for the
pool tools to load)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path


def folds(value: str) -> int:
    """Cross-validation folds: at least 2 (one fold would hold everything out)."""
    number = int(value)
    if number < 2:
        raise argparse.ArgumentTypeError("at least 2")
    return number


def add_pool_parser(
    commands: argparse._SubParsersAction, common: Callable[[argparse.ArgumentParser], None]
) -> None:
    """The `pool` subcommand and its own subcommands; `common` adds --config/--db/-v."""
    pool = commands.add_parser(
        "pool", help="validate, import, check, dedupe, review and purge the k-NN pool"
    )
    actions = pool.add_subparsers(dest="pool_command", required=True)

    check = actions.add_parser("validate", help="cross-validate the local signal over the pool")
    common(check)
    check.add_argument("--json", action="store_true", help="print one JSON object")
    check.add_argument("--plot", type=Path, metavar="FILE.png", help="draw the confusion matrix")
    check.add_argument("--folds", type=folds, default=10, help="folds for the classifier (10)")

    importer = actions.add_parser("import", help="import another database's pool entries")
    common(importer)
    importer.add_argument("other", type=Path, metavar="OTHER.db")
    importer.add_argument(
        "--reembed", action="store_true", help="embed entries of another embedder again"
    )
    importer.add_argument("--apply", action="store_true", help="store them (default: dry run)")

    compat = actions.add_parser(
        "check-compat", help="do another pool's vectors match this embedder? (exit 1 if not)"
    )
    common(compat)
    compat.add_argument("other", type=Path, metavar="OTHER.db")
    compat.add_argument("--sample", type=int, default=100, help="texts to embed again (100)")
    compat.add_argument("--embedder-id", help="which of its embedders (default: its largest)")
    compat.add_argument("--threshold", type=float, default=0.999, help="minimum cosine (0.999)")

    dedupe = actions.add_parser("dedupe", help="find and remove near-duplicate pool entries")
    common(dedupe)
    dedupe.add_argument(
        "--threshold", type=float, help="cosine (default pool.near_duplicate_cosine)"
    )
    dedupe.add_argument("--apply", action="store_true", help="remove them (default: dry run)")
    dedupe.add_argument("--show", type=int, default=10, help="clusters to list (10)")

    review = actions.add_parser(
        "review", help="show, accept or reject the labels the learning gate held back"
    )
    common(review)
    review.add_argument("--source", metavar="ORIGIN", help="only this origin's labels")
    review.add_argument("--accept", type=int, nargs="+", metavar="ID", help="into the pool")
    review.add_argument("--reject", type=int, nargs="+", metavar="ID", help="drop them")
    review.add_argument("--accept-all", action="store_true", help="every label shown")
    review.add_argument("--reject-all", action="store_true", help="every label shown")
    review.add_argument("--show", type=int, default=20, help="labels to list (20)")

    purge = actions.add_parser("purge", help="remove everything one origin taught the pool")
    common(purge)
    purge.add_argument(
        "--source",
        required=True,
        metavar="ORIGIN",
        help="a chat or conversation (telegram:-100…)"
        " or a proxy client key's origin, as `pool review` shows it",
    )
    purge.add_argument("--apply", action="store_true", help="remove them (default: dry run)")


def add_taxonomy_parser(
    commands: argparse._SubParsersAction, common: Callable[[argparse.ArgumentParser], None]
) -> None:
    taxonomy = commands.add_parser("taxonomy", help="merge categories in the stored data")
    actions = taxonomy.add_subparsers(dest="taxonomy_command", required=True)
    merge = actions.add_parser(
        "merge", help="relabel FROM as TO in the routing log and the pool (dry run by default)"
    )
    common(merge)
    merge.add_argument("source", metavar="FROM")
    merge.add_argument("target", metavar="TO")
    merge.add_argument("--apply", action="store_true", help="do it (default: dry run)")
    merge.add_argument("--json", action="store_true", help="print one JSON object")
    merge.add_argument(
        "--folds", type=folds, default=10, help="folds for the dry run's accuracy (10)"
    )
    show = actions.add_parser("show", help="the config's map, the stored version and the audit")
    common(show)


def add_privacy_parsers(
    commands: argparse._SubParsersAction, common: Callable[[argparse.ArgumentParser], None]
) -> None:
    """`forget` (erase a conversation's or a person's data) and `export` (a conversation's)."""
    forget = commands.add_parser(
        "forget", help="erase a conversation's or a person's data (memory, prompts, pool)"
    )
    common(forget)
    forget.add_argument("--conv", metavar="KEY", help="a conversation: telegram:-1001, console:ann")
    forget.add_argument(
        "--user", metavar="PLATFORM:ID", help="a person: telegram:12345 (with --conv: only there)"
    )
    forget.add_argument("--dry-run", action="store_true", help="count what would go; erase nothing")
    export = commands.add_parser("export", help="write what is kept about a conversation (JSONL)")
    common(export)
    export.add_argument("--conv", metavar="KEY", required=True, help="the conversation key")
    export.add_argument("--out", type=Path, metavar="FILE", help="write here (0600), not stdout")
