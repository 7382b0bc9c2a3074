"""tools/ci/summary.py: the end of the test command's output."""

import json
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
SUMMARY = os.path.join(ROOT, 'tools', 'ci', 'summary.py')
REPORT = os.path.join(ROOT, 'tools', 'ci', 'report.sh')


def _tier(results, name, rc=0, pytest_runs=(), checks=''):
    d = results / name
    d.mkdir(parents=True)
    for i, run in enumerate(pytest_runs):
        record = dict(kind='pytest', args=[], exitstatus=0, skip_reasons=[])
        record.update(run)
        (d / ('pytest-1-%d.json' % i)).write_text(json.dumps(record))
    if checks:
        (d / 'checks.tsv').write_text(checks)
    (d / 'rc').write_text('%d\n' % rc)
    (d / 'seconds').write_text('7\n')


def _summary(results, tiers):
    return subprocess.run([sys.executable, SUMMARY, str(results), tiers],
                          capture_output=True, text=True)


def test_counts_add_up_and_not_run_checks_count_as_skipped(tmp_path):
    _tier(tmp_path, 'unit', pytest_runs=[
        dict(passed=10, failed=0, skipped=2,
             skip_reasons=['needs libxen',
                           'apt says:\nE: Failed to fetch\n  x.deb']),
        dict(passed=5, failed=0, skipped=0)])
    _tier(tmp_path, 'native', checks='passed\tlibFuzzer\t\n'
          'notrun\tXen verify-stream-v2 checks\tno copy\n')
    _tier(tmp_path, 'integration',
          checks='counts\ttempest\t90 0 0\n'
                 'skipped\ttempest test_x\tno cinder\n')
    out = _summary(tmp_path, 'unit native integration')
    assert out.returncode == 0, out.stdout
    lines = out.stdout.splitlines()
    assert lines[-1] == 'total: 106 passed, 0 failed, 4 skipped'
    assert 'tier unit         ok: 15 passed, 0 failed, 2 skipped (7 s)' \
        in lines
    text = out.stdout
    assert 'unit         skipped: needs libxen' in text
    # a multi-line reason is one line of the block
    assert 'unit         skipped: apt says: E: Failed to fetch x.deb' in text
    assert 'native       NOT RUN: Xen verify-stream-v2 checks (no copy)' \
        in text
    assert 'integration  skipped: tempest test_x (no cinder)' in text


def test_a_failed_tier_fails_even_without_a_failed_test(tmp_path):
    _tier(tmp_path, 'unit', pytest_runs=[dict(passed=3, failed=0,
                                              skipped=0)])
    _tier(tmp_path, 'native', rc=1)        # the build broke
    (tmp_path / 'slow').mkdir()            # started, never finished
    out = _summary(tmp_path, 'unit native slow')
    assert out.returncode == 1
    assert re.search(r'tier native +FAILED: 0 passed, 1 failed.*'
                     r'exited rc=1 outside any counted test', out.stdout)
    assert re.search(r'tier slow +FAILED: .*did not finish', out.stdout)
    assert out.stdout.splitlines()[-1] == \
        'total: 3 passed, 2 failed, 0 skipped'


def test_a_tier_that_ran_nothing_is_not_run_not_passed(tmp_path):
    _tier(tmp_path, 'realxen')
    out = _summary(tmp_path, 'realxen')
    assert out.returncode == 0
    assert 'realxen      NOT RUN: the whole tier' in out.stdout
    assert out.stdout.splitlines()[-1] == \
        'total: 0 passed, 0 failed, 1 skipped'


def test_report_sh_records_for_the_summary(tmp_path):
    env = dict(os.environ, NXS_RESULTS_DIR=str(tmp_path / 'native'))
    out = subprocess.run(
        ['bash', '-c', '. "$0"; report notrun "verifier" "no copy";'
         ' report passed fuzz; report_counts tempest 4 1 0', REPORT],
        env=env, capture_output=True, text=True, check=True)
    assert '!!! NOT RUN: verifier (no copy)' in out.stdout
    assert (tmp_path / 'native' / 'checks.tsv').read_text() == (
        'notrun\tverifier\tno copy\npassed\tfuzz\t\n'
        'counts\ttempest\t4 1 0\n')


def test_pytest_runs_record_themselves(tmp_path):
    tests = tmp_path / 't'
    tests.mkdir()
    (tests / 'test_x.py').write_text(
        'import pytest\n'
        'def test_ok():\n    pass\n'
        'def test_skip():\n    pytest.skip("no hypervisor here")\n')
    conftest = os.path.join(ROOT, 'tests', 'conftest.py')
    (tests / 'conftest.py').write_text(open(conftest).read())
    env = dict(os.environ, NXS_RESULTS_DIR=str(tmp_path / 'r'))
    subprocess.run([sys.executable, '-m', 'pytest', '-q', '-p',
                    'no:cacheprovider', str(tests)], env=env, check=True,
                   capture_output=True, cwd=str(tmp_path))
    [name] = os.listdir(tmp_path / 'r')
    run = json.loads((tmp_path / 'r' / name).read_text())
    assert (run['passed'], run['failed'], run['skipped']) == (1, 0, 1)
    assert run['skip_reasons'] == ['no hypervisor here']
