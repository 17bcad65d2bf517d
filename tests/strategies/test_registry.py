import sys
from typing import Annotated

import pytest

import strategies
from strategies import Choice, Range, Registry, StrategyError


def _template(**fields):
    """An Avalanche template object (no training machinery) carrying ``fields``: what a factory
    must return, without the cost of building a real strategy."""
    from avalanche.training.templates import BaseTemplate

    t = BaseTemplate.__new__(BaseTemplate)
    t.__dict__.update(fields)
    return t


def _factory(*, model, context, lr: Annotated[float, Range(gt=0)] = 0.1,
             mode: Annotated[str, Choice("a", "b")] = "a", steps: int = 3, flag: bool = False):
    """A test strategy."""
    return _template(args=(model, context, lr, mode, steps, flag))


def test_register_reads_hyperparameters_from_the_signature():
    reg = Registry()
    reg.register("My_Strategy", aliases=("mine",))(_factory)
    d = reg.get("my-strategy")
    assert d.name == "my-strategy" and d.description == "A test strategy."
    assert [(h.name, h.kind, h.default) for h in d.hparams] == [
        ("lr", "float", 0.1), ("mode", "str", "a"), ("steps", "int", 3), ("flag", "bool", False)]
    assert reg.get("MY STRATEGY") is d and reg.get("mine") is d
    assert reg.available() == {"my-strategy": {"lr": 0.1, "mode": "a", "steps": 3, "flag": False}}
    assert reg.build("my_strategy", model="m", context="c", steps=5).args == ("m", "c", 0.1, "a", 5, False)


def test_duplicate_names_are_an_error():
    reg = Registry()
    reg.register("x")(_factory)
    with pytest.raises(StrategyError, match="strategy name 'x' is already registered"):
        reg.register("X")(_factory)
    with pytest.raises(StrategyError, match="already registered"):
        reg.register("y", aliases=("x",))(_factory)


@pytest.mark.parametrize("given,pattern", [
    ({"lr": 0}, r"'lr' must be > 0, got 0"),
    ({"lr": "1"}, r"'lr' must be a number"),
    ({"mode": "c"}, r"'mode' is 'c'; allowed: a, b"),
    ({"steps": 2.5}, r"'steps' must be an integer"),
    ({"flag": 1}, r"'flag' must be true or false"),
    ({"setps": 1}, r"unknown hyperparameter 'setps' \(did you mean 'steps'\?\)"),
])
def test_bad_hyperparameters(given, pattern):
    reg = Registry()
    reg.register("x")(_factory)
    with pytest.raises(StrategyError, match=pattern):
        reg.resolve("x", given)


def test_unknown_strategy_lists_names_and_suggests():
    with pytest.raises(StrategyError, match=r"unknown strategy 'nave' \(did you mean 'naive'\?\); allowed: .*er"):
        strategies.resolve("nave")


def test_factories_must_declare_keyword_only_hyperparameters():
    def positional(model, context, lr=0.1):
        return None

    with pytest.raises(StrategyError, match="argument 'lr' must be keyword-only"):
        Registry().register("p")(positional)


def test_builtin_baselines_are_registered():
    names = strategies.available()
    for n in ("naive", "er", "ewc", "si", "lwf", "agem", "gem", "joint", "avalanche-mer", "avalanche-la-maml"):
        assert n in names
    assert strategies.resolve("experience_replay")[0] == "er"


def test_entry_points_register_and_a_broken_one_is_isolated(tmp_path, monkeypatch):
    site = tmp_path / "site"
    dist = site / "fakeplug-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: fakeplug\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        "[clbench.strategies]\nfake-one = fakeplug_mod:factory\nbroken-one = fakeplug_broken:factory\n")
    (site / "fakeplug_mod.py").write_text(
        "from avalanche.training.templates import BaseTemplate\n"
        "def factory(*, model, context, lr: float = 0.5):\n    '''Fake.'''\n"
        "    t = BaseTemplate.__new__(BaseTemplate)\n    t.lr = lr\n    return t\n")
    (site / "fakeplug_broken.py").write_text("raise ImportError('missing dependency foo')\n")
    monkeypatch.syspath_prepend(str(site))
    reg = Registry()
    assert reg.names() == ["fake-one"]
    assert reg.build("fake_one", model=None, context=None).lr == 0.5
    with pytest.raises(StrategyError, match=r"unknown strategy 'broken-one'.*broken-one: ImportError: missing dependency foo"):
        reg.get("broken-one")
    sys.modules.pop("fakeplug_mod", None)


def test_snapshot_and_restore_isolate_registrations():
    from strategies.registry import Registry

    reg = Registry()

    @reg.register("first")
    def first(*, model, context):
        """One."""

    saved = reg.snapshot()

    @reg.register("second")
    def second(*, model, context):
        """Two."""

    assert {"first", "second"} <= set(reg.names())
    reg.restore(saved)
    assert "first" in reg.names() and "second" not in reg.names()
    reg.restore()  # a new registry's state
    assert "first" not in reg.names()


def test_a_hyperparameter_added_later_stays_out_of_the_run_id_at_its_default():
    from typing import Annotated

    from benchmark.config import validate
    from strategies.hparams import AddedLater

    reg = strategies.REGISTRY
    state = reg.snapshot()
    try:
        @reg.register("test-later")
        def first(*, model, context, lr: float = 0.1):
            raise AssertionError("never built here")

        def spec(entry):
            exp = validate({"name": "x", "scenarios": [{"name": "permuted-mnist", "source": "digits", "n_tasks": 2,
                                                         "per_task": 10}], "strategies": [entry]})
            return exp.specs()[0]

        before = spec({"name": "test-later"})
        reg.restore(state)

        @reg.register("test-later")
        def second(*, model, context, lr: float = 0.1, steps: Annotated[int, AddedLater()] = 1):
            raise AssertionError("never built here")

        at_default, other = spec({"name": "test-later"}), spec({"name": "test-later", "steps": 3})
        assert at_default.hparams == {"lr": 0.1, "steps": 1}  # the strategy still gets every value
        assert at_default.run_id == before.run_id and at_default.to_dict()["hparams"] == {"lr": 0.1}
        assert other.run_id != before.run_id and other.to_dict()["hparams"] == {"lr": 0.1, "steps": 3}
    finally:
        reg.restore(state)
