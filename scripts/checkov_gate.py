"""Run checkov on a directory and fail unless every failed check is on the skip list.

Usage: ``python scripts/checkov_gate.py [--framework bicep|kubernetes] [--checkov PATH] <dir> <skip file>``.
The skip file holds one ``CHECK_ID  reason`` per line (``#`` starts a comment line). The gate fails
when checkov fails a check not on the list, when a file does not parse (``CKV_PARSE_ERROR_FAIL=true``),
when a skip has no reason, and when a listed check no longer fires: a stale skip would silently hide
a future failure.

Checkov runs once with every check on (``--skip-check`` would drop skipped checks from the report,
so stale skips could not be seen); the skip list is applied to its JSON report here. The last line
of output is a summary (passed / failed / skipped) that tests and CI logs quote.

``--checkov`` defaults to ``checkov`` on PATH (the dev extra installs it).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

_CHECK_ID = re.compile(r"^CKV2?_[A-Z0-9]+_\d+$")


def read_skips(path: Path) -> dict[str, str]:
    """Check id -> reason; raises ``ValueError`` on a malformed line or a missing reason."""
    skips: dict[str, str] = {}
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        check_id, _, reason = line.partition(" ")
        if not _CHECK_ID.match(check_id):
            raise ValueError(f"{path}:{number}: {check_id!r} is not a checkov check id")
        if not reason.strip():
            raise ValueError(f"{path}:{number}: {check_id} has no reason; say why it is skipped")
        if check_id in skips:
            raise ValueError(f"{path}:{number}: {check_id} is listed twice")
        skips[check_id] = reason.strip()
    return skips


def run_checkov(checkov: str, framework: str, directory: Path) -> tuple[int, dict[str, Any]]:
    command = [checkov, "--framework", framework, "-d", str(directory), "-o", "json", "--compact", "--quiet"]
    env = dict(os.environ, CKV_PARSE_ERROR_FAIL="true", BC_SKIP_MAPPING="TRUE")
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    try:
        report = json.loads(done.stdout)
    except json.JSONDecodeError:
        sys.stderr.write(done.stdout + done.stderr)
        raise SystemExit(f"checkov printed no JSON report (exit {done.returncode})") from None
    reports = report if isinstance(report, list) else [report]
    matching = [r for r in reports if r.get("check_type") == framework]
    if not matching:
        raise SystemExit(f"checkov found no {framework} resources under {directory}")
    return done.returncode, matching[0]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--framework", default="bicep", choices=["bicep", "kubernetes"])
    parser.add_argument("--checkov", default="checkov", help="the checkov executable")
    parser.add_argument("directory", type=Path)
    parser.add_argument("skip_file", type=Path)
    args = parser.parse_args(argv)
    try:
        skips = read_skips(args.skip_file)
    except ValueError as exc:
        print(f"checkov gate: {exc}", file=sys.stderr)
        return 1
    returncode, report = run_checkov(args.checkov, args.framework, args.directory)
    summary = report.get("summary", {})
    results = report.get("results", {})
    all_failed = results.get("failed_checks", [])
    failed = [check for check in all_failed if check["check_id"] not in skips]
    skipped_ids = {check["check_id"] for check in all_failed if check["check_id"] in skips}
    problems: list[str] = []
    for check in failed:
        problems.append(
            f"FAILED {check['check_id']} {check['check_name']}: {check['resource']} "
            f"({check['file_path']}:{check['file_line_range'][0]})"
        )
    parsing_errors = summary.get("parsing_errors", 0)
    if parsing_errors:
        problems.append(f"{parsing_errors} file(s) did not parse: {results.get('parsing_errors', [])}")
    for stale in sorted(set(skips) - skipped_ids):
        problems.append(f"stale skip {stale}: the check no longer fires; remove it from {args.skip_file}")
    if returncode not in (0, 1):  # 1: some check failed (judged above); anything else: checkov broke
        problems.append(f"checkov exited {returncode}")
    for problem in problems:
        print(f"  {problem}", file=sys.stderr)
    skip_list = ", ".join(sorted(skipped_ids))
    skipped = f"{len(all_failed) - len(failed)} skipped by {args.skip_file.name} ({skip_list})"
    print(
        f"checkov {args.framework}: {summary.get('passed', 0)} checks passed, {len(failed)} failed, "
        f"{skipped}, {parsing_errors} parse errors ({summary.get('resource_count', 0)} resources)"
    )
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
