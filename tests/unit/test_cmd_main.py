import pytest

from nova_xen_stubdom.cmd import main


def test_help_lists_every_subcommand(capsys):
    with pytest.raises(SystemExit) as exc:
        main.main(['--help'])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for name in main.SUBCOMMANDS:
        assert name in out


def test_no_subcommand_prints_usage_and_fails(capsys):
    assert main.main([]) == 2
    assert 'COMMAND' in capsys.readouterr().out


def test_unknown_subcommand_is_an_error():
    with pytest.raises(SystemExit) as exc:
        main.main(['no-such-command'])
    assert exc.value.code == 2
