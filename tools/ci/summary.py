#!/usr/bin/env python3
"""Add up what every tier of tools/run-tests.sh ran, and say what did not.

Reads RESULTS/TIER/ for each tier named on the command line:

- ``pytest-*.json``: one per pytest run (tests/conftest.py writes them);
- ``checks.tsv``: lines ``KIND<TAB>NAME<TAB>DETAIL`` from the tier scripts
  (tools/ci/report.sh): KIND is passed, failed, skipped or notrun, or
  ``counts`` with DETAIL ``PASSED FAILED SKIPPED`` for a runner that is not
  pytest (tempest);
- ``rc`` and ``seconds``: written by run-tests.sh.

Prints one line per tier, one block naming every check that did not run
(or was skipped) and why, and the closing ``total: N passed, N failed,
N skipped`` line, where a check that could not run counts as skipped --
never as passed.  Exits 1 when any tier failed.
"""

import collections
import glob
import json
import os
import sys
from typing import Dict, List


def _read(path: str, default: str = '') -> str:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return default


def tier_result(results: str, tier: str) -> Dict[str, object]:
    d = os.path.join(results, tier)
    passed = failed = skipped = 0
    why: List[str] = []          # skipped / not-run lines, with reasons
    for path in sorted(glob.glob(os.path.join(d, 'pytest-*.json'))):
        with open(path) as f:
            run = json.load(f)
        passed += run['passed']
        failed += run['failed']
        skipped += run['skipped']
        why += ['skipped: %s' % r for r in run['skip_reasons']]
    for line in _read(os.path.join(d, 'checks.tsv')).splitlines():
        kind, name, detail = (line.split('\t') + ['', ''])[:3]
        if kind == 'counts':
            p, f, s = (int(n) for n in detail.split())
            passed, failed, skipped = passed + p, failed + f, skipped + s
        elif kind == 'passed':
            passed += 1
        elif kind == 'failed':
            failed += 1
        elif kind in ('skipped', 'notrun'):
            skipped += 1
            why.append('%s: %s%s' % ('NOT RUN' if kind == 'notrun'
                                     else 'skipped', name,
                                     ' (%s)' % detail if detail else ''))
    rc = _read(os.path.join(d, 'rc'), 'missing')
    note = ''
    if rc == 'missing':
        note = 'did not finish'
        failed += 1
    elif rc != '0' and failed == 0:
        # the tier's script failed outside any counted test (a build, a
        # set-up step): that is a failure too
        note = 'exited rc=%s outside any counted test' % rc
        failed += 1
    elif rc == '0' and passed + failed + skipped == 0:
        note = 'ran nothing'
        skipped += 1
        why.append('NOT RUN: the whole tier (it has no tests yet)')
    return {'passed': passed, 'failed': failed, 'skipped': skipped,
            'why': why, 'rc': rc, 'note': note,
            'seconds': _read(os.path.join(d, 'seconds'), '?')}


def _one_line(text: str, limit: int = 300) -> str:
    # a reason may carry a tool's multi-line output: one line, bounded
    text = ' '.join(text.split())
    return text if len(text) <= limit else text[:limit - 3] + '...'


def _grouped(lines: List[str]) -> List[str]:
    counts = collections.Counter(_one_line(line) for line in lines)
    return ['%s%s' % ('%d x ' % n if n > 1 else '', line)
            for line, n in sorted(counts.items())]


def main(argv: List[str]) -> int:
    results, tiers = argv[1], argv[2].split()
    totals = collections.Counter()
    rows, blocks = [], []
    for tier in tiers:
        r = tier_result(results, tier)
        for k in ('passed', 'failed', 'skipped'):
            totals[k] += r[k]
        rows.append('tier %-12s %s: %d passed, %d failed, %d skipped '
                    '(%s s)%s' % (tier, 'FAILED' if r['failed'] else 'ok',
                                  r['passed'], r['failed'], r['skipped'],
                                  r['seconds'],
                                  ' -- %s' % r['note'] if r['note'] else ''))
        blocks += ['  %-12s %s' % (tier, line) for line in _grouped(r['why'])]
    print('\n=== summary ===')
    print('\n'.join(rows))
    if blocks:
        print('\nnot run or skipped, and why:')
        print('\n'.join(blocks))
    print('\ntotal: %d passed, %d failed, %d skipped'
          % (totals['passed'], totals['failed'], totals['skipped']))
    return 1 if totals['failed'] else 0


if __name__ == '__main__':
    sys.exit(main(sys.argv))
