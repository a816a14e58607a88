"""The command line shared by the benchmark scripts that write a CSV and a README block.

``pretrain_budget.py`` and ``gap_mechanism.py`` both: measure rows (or, with ``--smoke``, a
few of them at a tiny size), write them to ``--out``, and with ``--update-readme`` or
``--readme-only`` rewrite their README block from the CSV
(:func:`tpccma_lib.app.readme.update_csv_section`).
"""

from __future__ import annotations

import argparse
import csv
from collections.abc import Callable, Sequence
from pathlib import Path

from tpccma_lib.app.readme import update_csv_section


def write_rows(rows: list[dict[str, object]], fields: Sequence[str], out: Path) -> None:
    """Write ``rows`` (dicts with ``fields``) to the CSV ``out``, creating its folder."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(fields))
        writer.writeheader()
        writer.writerows(rows)


def run_cli(
    argv: list[str] | None,
    description: str,
    *,
    block: str,
    out: Path,
    runs: Path,
    fields: Sequence[str],
    measure: Callable[[Path, bool], list[dict[str, object]]],
) -> int:
    """Parse ``--out --runs --update-readme --readme-only --smoke`` and do what they say.

    ``measure(runs, smoke)`` returns the rows. A smoke run must name its own ``--out`` and never
    touches the README (it is a test run). Returns the exit status 0.
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--out", type=Path, default=out)
    parser.add_argument("--runs", type=Path, default=runs)
    parser.add_argument("--update-readme", action="store_true")
    parser.add_argument("--readme-only", action="store_true", help="only rewrite the README block")
    parser.add_argument("--smoke", action="store_true", help="tiny data and budget (needs --out)")
    args = parser.parse_args(argv)
    if args.smoke and (args.out == out or args.update_readme or args.readme_only):
        parser.error("--smoke is a test run: give --out and no README option.")
    if not args.readme_only:
        rows = measure(args.runs, args.smoke)
        for row in rows:
            print(", ".join(f"{k}={row[k]}" for k in fields), flush=True)
        write_rows(rows, fields, args.out)
        print(f"wrote {args.out}")
    if args.update_readme or args.readme_only:
        readme = Path(__file__).resolve().parents[1] / "README.md"
        update_csv_section(readme, block, args.out)
        print(f"README {block} block updated")
    return 0
