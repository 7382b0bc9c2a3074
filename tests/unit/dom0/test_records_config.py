"""records (dataclasses for Python 3.6), agent.conf, shared constants."""
import sys

import pytest

from nova_xen_stubdom.dom0 import config
from nova_xen_stubdom.dom0 import constants
from nova_xen_stubdom.dom0 import errors
from nova_xen_stubdom.dom0 import records


@records.record
class Point:
    x: int
    y: int = 0
    tags: list = records.field(default_factory=list)


@records.record(frozen=True)
class Frozen:
    a: int


def test_record_init_repr_eq_asdict_replace():
    p = Point(1)
    assert (p.x, p.y, p.tags) == (1, 0, [])
    assert Point(1).tags is not p.tags          # a fresh default each time
    assert p == Point(x=1, y=0) and p != Point(2)
    assert repr(p) == 'Point(x=1, y=0, tags=[])'
    q = records.replace(p, y=5)
    assert (q.y, p.y) == (5, 0)
    assert records.asdict(Point(1, 2, [Point(3)])) == {
        'x': 1, 'y': 2, 'tags': [{'x': 3, 'y': 0, 'tags': []}]}
    assert records.fields(Point) == ('x', 'y', 'tags')
    with pytest.raises(TypeError):
        Point()
    with pytest.raises(TypeError):
        Point(1, z=2)
    with pytest.raises(TypeError):
        Point(1, x=1)
    with pytest.raises(TypeError):
        records.asdict({'x': 1})


def test_frozen_record():
    f = Frozen(1)
    with pytest.raises(AttributeError):
        f.a = 2
    assert hash(f) == hash(Frozen(1))


def test_non_default_after_default_is_refused():
    with pytest.raises(TypeError):
        @records.record
        class Bad:
            a: int = 0
            b: int


def test_config_defaults_are_the_shared_constants(tmp_path):
    cfg = config.load(str(tmp_path / 'missing.conf'))
    for key, value in constants.MIGRATION_DEFAULTS.items():
        assert getattr(cfg, key) == value
    assert cfg.socket_path == constants.DAEMON_SOCKET
    assert config.from_mapping({'agent_port_min': '100'}).agent_port_min \
        == 100
    with pytest.raises(errors.AgentError):
        config.from_mapping({'nope': 1})


def test_nova_options_default_to_the_shared_constants():
    if sys.version_info < (3, 7):
        pytest.skip('oslo.config is Nova-side; the unit tier checks this')
    from nova_xen_stubdom import conf
    from nova_xen_stubdom.driver import constants as dc
    group = conf.CONF.xen_stubdom
    for key, value in constants.MIGRATION_DEFAULTS.items():
        assert group[key] == value, key
    assert dc.AGENT_PLUGIN == constants.PLUGIN
