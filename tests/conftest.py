"""Shared pytest configuration for every tier.

When tools/run-tests.sh runs a tier it sets ``NXS_RESULTS_DIR`` (one
folder per tier): each pytest run then leaves its counts and skip reasons
there as JSON, and tools/ci/summary.py adds every tier up at the end.
"""

import json
import os


def _skip_reason(report) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        reason = longrepr[2]
    else:
        reason = str(longrepr)
    return reason[len('Skipped: '):] if reason.startswith('Skipped: ') \
        else reason


def pytest_sessionfinish(session, exitstatus):
    out = os.environ.get('NXS_RESULTS_DIR')
    reporter = session.config.pluginmanager.get_plugin('terminalreporter')
    if not out or reporter is None:
        return
    stats = reporter.stats
    skipped = [r for r in stats.get('skipped', [])
               if getattr(r, 'when', None) is not None]
    result = {
        'kind': 'pytest',
        'args': list(session.config.invocation_params.args),
        'passed': len(stats.get('passed', [])) + len(stats.get('xpassed',
                                                               [])),
        'failed': len(stats.get('failed', [])) + len(stats.get('error', [])),
        'skipped': len(skipped) + len(stats.get('xfailed', [])),
        'skip_reasons': sorted(_skip_reason(r) for r in skipped),
        'exitstatus': int(exitstatus),
    }
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, 'pytest-%d-%d.json' % (os.getpid(),
                                                    len(os.listdir(out))))
    with open(path, 'w') as f:
        json.dump(result, f, indent=1)
