"""The emucore benchmark runs end to end on a small size (no timing checks)."""

from nova_xen_stubdom.cmd import main as cli


def test_bench_emucore_small(capsys):
    assert (
        cli.main(
            [
                'bench',
                'emucore',
                '--size-mib',
                '4',
                '--mix',
                'typical',
                '--mix',
                'zero',
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    for figure in (
        'memcpy',
        'zero scan',
        'bitmap walk',
        'compat encode',
        'full encode',
        'compat decode',
        'full decode',
        'xbzrle encode',
        'xbzrle decode',
    ):
        assert figure in out
    assert 'bytes written per mix' in out
    assert 'issue 4 targets (measured)' in out
