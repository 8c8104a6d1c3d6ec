"""``avsc manifest``: the clip manifest avsc makes of a collection."""

from __future__ import annotations

import argparse

from avsc.cli import options
from avsc.utils import read_names_csv


def add_parser(sub) -> None:
    m = options.subcommand(
        sub,
        "manifest",
        "write the clip manifest avsc makes of a collection, to inspect and edit",
        "avsc manifest /data/my_sounds --out manifest.csv",
    )
    m.add_argument("root", help="a collection's folder (or a manifest file, to check it)")
    options.recipe_options(m)
    m.add_argument("--out", required=True, help="the manifest file to write (.csv or .tsv)")
    m.add_argument("--head", type=int, default=5, help="rows to print")
    m.add_argument("--limit", type=int, default=20, help="print at most this many problems")
    options.module_option(m, "it registers recipes of its own")
    options.config_options(m, "config override (data.modalities, data.labels)")
    m.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from avsc.data import load_manifest, write_manifest

    options.import_modules(args)
    data = options.data_config(args)
    manifest = load_manifest(args.root, data.recipe, data.labels, data.modalities)
    out = write_manifest(manifest, args.out)
    import pandas as pd

    print(f"{manifest.source}: {manifest.describe()}; written to {out}")
    with pd.option_context("display.width", 160, "display.max_columns", 10):
        print(
            read_names_csv(out, dtype=str, keep_default_na=False)
            .head(args.head)
            .to_string(index=False)
        )
    for p in manifest.problems[: args.limit]:
        print(f"  {p.severity.upper():7s} {p.file}: {p.problem}")
    if len(manifest.problems) > args.limit:
        print(f"  ... and {len(manifest.problems) - args.limit} more (avsc validate lists all)")
    if manifest.errors:
        print(
            f"{len(manifest.errors)} error(s): fix them (in the files, or by editing {out} and "
            f"using it as the dataset), then: avsc validate {out}"
        )
        return 1
    return 0
