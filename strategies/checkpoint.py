"""What a strategy must remember between two tasks to continue a run exactly after a restart.

The protocol, for a strategy or one of its Avalanche plugins that keeps state of its own::

    checkpoint_state() -> dict          # plain data only (below)
    load_checkpoint_state(state: dict)  # on a freshly built object with the same hyperparameters

"Plain data" is what ``torch.load(..., weights_only=True)`` reads back: tensors, numbers,
strings, bools, None, and lists, tuples and dicts of them. NumPy arrays and random generators
must be converted (:func:`numpy_rng_state`, :func:`torch.Generator.get_state`). The built-in
strategies implement it (``mer``, ``c-maml``, ``la-maml``, ``sync-la-maml``; ``er`` through its
replay plugin).

:func:`capture` and :func:`restore` add what every Avalanche template keeps: the optimizer's
state, and the state of every plugin (the clock, the harness's monitor, EWC's importances,
SI's trajectories, LwF's previous model, GEM's memories...). A plugin without the protocol is
walked generically: its attributes are encoded when they are made of plain data, tensors,
NumPy arrays and generators, ``ParamData`` and ``torch.nn.Module`` (kept as a ``state_dict``),
and data-only Avalanche objects; anything else (a dataset, a data loader, an iterator, a
function) makes the strategy :class:`NotCheckpointable` with the reason. Nothing executable is
ever stored. An Avalanche strategy that keeps state outside its plugins and has no
``checkpoint_state`` is refused too (:func:`unsupported`), so a run never resumes wrongly.
"""

from __future__ import annotations

import copy
import json
from collections import OrderedDict, defaultdict
from typing import Any

import numpy as np
import torch

from strategies.contract import Checkpoints

FORMAT = 1
TAG = "__ckpt__"  # marks an encoded non-plain value; plain dicts are encoded as key/value lists


class NotCheckpointable(Exception):
    """The state of this strategy cannot be saved (or restored) exactly; the message says why."""


# Avalanche strategies whose whole mutable state lives in the model, the optimizer and the
# plugins (their __init__ only builds plugins): the generic walk covers them.
_PLUGIN_ONLY_TEMPLATES = ("Naive", "EWC", "SynapticIntelligence", "LwF", "AGEM", "GEM")


def _plugin_only_classes() -> tuple[type, ...]:
    from avalanche.training.supervised import strategy_wrappers as w

    return tuple(getattr(w, n) for n in _PLUGIN_ONLY_TEMPLATES if hasattr(w, n))


def has_protocol(obj: Any) -> bool:
    """Whether ``obj`` implements :class:`strategies.contract.Checkpoints`."""
    return isinstance(obj, Checkpoints)


def unsupported(strategy: Any) -> str | None:
    """Why ``strategy`` cannot be checkpointed (before looking at its plugins), or None."""
    if has_protocol(strategy) or type(strategy) in _plugin_only_classes():
        return None
    cls = type(strategy)
    return (f"{cls.__module__}.{cls.__qualname__} keeps state outside its plugins and has no "
            "checkpoint_state()/load_checkpoint_state()")


def _evaluator(strategy: Any, plugin: Any) -> bool:
    """The evaluation plugin only collects metrics: nothing of training depends on it."""
    if plugin is getattr(strategy, "evaluator", None):
        return True
    try:
        from avalanche.training.plugins import EvaluationPlugin
    except ImportError:  # pragma: no cover
        return False
    return isinstance(plugin, EvaluationPlugin)


def _name(obj: Any) -> str:
    cls = type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


# -- the strategy as a whole --------------------------------------------------------------
def capture(strategy: Any) -> dict[str, Any]:
    """The state of ``strategy`` between two tasks (not the model's weights: the caller saves
    ``strategy.model.state_dict()``), as plain data. Raises :class:`NotCheckpointable`."""
    reason = unsupported(strategy)
    if reason:
        raise NotCheckpointable(reason)
    state: dict[str, Any] = {"format": FORMAT, "class": _name(strategy)}
    optimizer = getattr(strategy, "optimizer", None)
    state["optimizer"] = None if optimizer is None else encode(optimizer.state_dict(), "optimizer")
    state["optimizer_ready"] = getattr(strategy, "optimized_param_id", None) is not None
    plugins = []
    for i, p in enumerate(getattr(strategy, "plugins", ())):
        if _evaluator(strategy, p):
            plugins.append({"class": _name(p), "skip": True})
        elif has_protocol(p):
            plugins.append({"class": _name(p), "own": _plain(p.checkpoint_state(), f"plugin {_name(p)}")})
        else:
            where = f"plugin {type(p).__name__}"
            plugins.append({"class": _name(p), "attrs": {k: encode(v, f"{where}.{k}") for k, v in vars(p).items()}})
    state["plugins"] = plugins
    state["own"] = _plain(strategy.checkpoint_state(), _name(strategy)) if has_protocol(strategy) else None
    return state


def restore(strategy: Any, state: dict[str, Any]) -> None:
    """Put ``state`` (from :func:`capture`) back into a freshly built ``strategy`` whose
    model already holds the saved weights. Raises (and may leave the strategy half restored:
    the caller must rebuild it) when the state does not fit."""
    reason = unsupported(strategy)
    if reason:
        raise NotCheckpointable(reason)
    if state.get("format") != FORMAT or state.get("class") != _name(strategy):
        raise NotCheckpointable(f"the checkpoint holds a {state.get('class')}, not a {_name(strategy)}")
    plugins = list(getattr(strategy, "plugins", ()))
    saved = state["plugins"]
    if [s["class"] for s in saved] != [_name(p) for p in plugins]:
        raise NotCheckpointable("the strategy's plugins differ from the checkpoint's")
    ctx = _Context(strategy)
    if state["optimizer"] is not None:
        strategy.optimizer.load_state_dict(decode(state["optimizer"], None, ctx))
    if state["optimizer_ready"] and hasattr(strategy, "optimized_param_id"):
        # Avalanche resets the optimizer's state the first time it sees it (optimized_param_id
        # None); it had seen it already when the checkpoint was taken
        strategy.optimized_param_id = dict(strategy.model.named_parameters())
    for p, s in zip(plugins, saved):
        if s.get("skip"):
            continue
        if "own" in s:
            p.load_checkpoint_state(s["own"])
        else:
            for k, v in s["attrs"].items():
                setattr(p, k, decode(v, getattr(p, k, None), ctx))
    if state["own"] is not None:
        strategy.load_checkpoint_state(state["own"])


# -- random generators --------------------------------------------------------------------
def numpy_rng_state(gen: np.random.Generator) -> str:
    """The state of a NumPy Generator as JSON text (its integers exceed 64 bits)."""
    return json.dumps(_jsonable(gen.bit_generator.state))


def set_numpy_rng_state(gen: np.random.Generator, state: str) -> None:
    loaded = json.loads(state)
    name = gen.bit_generator.state["bit_generator"]
    if loaded.get("bit_generator") != name:
        raise NotCheckpointable(f"saved NumPy generator is a {loaded.get('bit_generator')}, not a {name}")
    gen.bit_generator.state = _unjsonable(loaded)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, np.ndarray):
        return {"__ndarray__": obj.tolist(), "dtype": str(obj.dtype)}
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    return obj


def _unjsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        if "__ndarray__" in obj:
            return np.asarray(obj["__ndarray__"], dtype=obj["dtype"])
        return {k: _unjsonable(v) for k, v in obj.items()}
    return obj


def global_rng_state() -> dict[str, Any]:
    """Python's, NumPy's and torch's global generators (and CUDA's where there is one)."""
    import random

    version, internal, gauss = random.getstate()
    np_state = np.random.get_state(legacy=False)
    return {
        "python": {"version": version, "internal": torch.tensor(internal, dtype=torch.int64), "gauss": gauss},
        "numpy": json.dumps(_jsonable(np_state)),
        "torch": torch.get_rng_state(),
        "cuda": list(torch.cuda.get_rng_state_all()) if torch.cuda.is_available() else None,
    }


def set_global_rng_state(state: dict[str, Any]) -> None:
    import random

    py = state["python"]
    random.setstate((int(py["version"]), tuple(int(v) for v in py["internal"].tolist()),
                     None if py["gauss"] is None else float(py["gauss"])))
    np.random.set_state(_unjsonable(json.loads(state["numpy"])))
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


# -- generic encoding of plugin attributes ------------------------------------------------
_INIT_FUNCTIONS = {"zeros": torch.zeros, "ones": torch.ones, "empty": torch.empty}
_FACTORIES = {"dict": dict, "list": list, "set": set, "int": int, "float": float}


class _Context:
    def __init__(self, strategy):
        self.model = strategy.model
        self.device = getattr(strategy, "device", torch.device("cpu"))


def _tensor(t: torch.Tensor) -> torch.Tensor:
    return t.detach().cpu().clone()


def _plain(obj: Any, where: str) -> Any:
    """Check that a protocol's state is plain data (tensors moved to the CPU)."""
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, torch.Tensor):
        return _tensor(obj)
    if isinstance(obj, list):
        return [_plain(v, where) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_plain(v, where) for v in obj)
    if type(obj) is dict:
        return {k: _plain(v, where) for k, v in obj.items()}
    raise NotCheckpointable(f"{where}: checkpoint_state() returned a {type(obj).__name__}, which is not plain data")


def encode(obj: Any, where: str) -> Any:
    """``obj`` as plain data, or :class:`NotCheckpointable` naming ``where`` it failed."""
    if obj is None or isinstance(obj, (bool, str, float)):
        return obj
    if isinstance(obj, int):
        return obj if -2**63 <= obj < 2**63 else {TAG: "bigint", "v": str(obj)}
    if isinstance(obj, torch.nn.Module):  # before the objects with a __dict__
        return {TAG: "module", "class": _name(obj), "training": obj.training,
                "state": {k: _tensor(v) for k, v in obj.state_dict().items()}}
    if isinstance(obj, torch.Tensor):
        return {TAG: "tensor", "v": _tensor(obj), "grad": bool(obj.requires_grad),
                "param": isinstance(obj, torch.nn.Parameter)}
    if isinstance(obj, torch.Size):
        return {TAG: "size", "v": list(obj)}
    if isinstance(obj, torch.device):
        return {TAG: "device", "v": str(obj)}
    if isinstance(obj, torch.Generator):
        return {TAG: "torch_generator", "device": str(obj.device), "v": obj.get_state()}
    if isinstance(obj, np.random.Generator):
        return {TAG: "numpy_generator", "v": numpy_rng_state(obj)}
    if isinstance(obj, np.ndarray):
        if obj.dtype == object:
            raise NotCheckpointable(f"{where} is a NumPy array of Python objects")
        return {TAG: "ndarray", "v": torch.from_numpy(np.array(obj, copy=True)), "dtype": str(obj.dtype)}
    if isinstance(obj, (np.integer, np.floating, np.bool_)):
        return encode(obj.item(), where)
    if isinstance(obj, list):
        return [encode(v, f"{where}[{i}]") for i, v in enumerate(obj)]
    if type(obj) is tuple:
        return {TAG: "tuple", "v": [encode(v, f"{where}[{i}]") for i, v in enumerate(obj)]}
    if type(obj) in (set, frozenset):
        return {TAG: type(obj).__name__, "v": [encode(v, f"{where}{{}}") for v in obj]}
    if type(obj) in (dict, OrderedDict, defaultdict):
        factory = None
        if type(obj) is defaultdict:
            factory = next((n for n, f in _FACTORIES.items() if obj.default_factory is f), None)
            if factory is None and obj.default_factory is not None:
                raise NotCheckpointable(f"{where} is a defaultdict whose default is {obj.default_factory!r}")
        return {TAG: "dict", "kind": type(obj).__name__, "factory": factory,
                "keys": [encode(k, f"{where} key") for k in obj],
                "values": [encode(v, f"{where}[{k!r}]") for k, v in obj.items()]}
    if _is_param_data(obj):
        init = next((n for n, f in _INIT_FUNCTIONS.items() if obj.init_function is f), None)
        return {TAG: "ParamData", "name": obj.name, "shape": list(obj.shape), "device": str(obj.device),
                "init": init, "v": _tensor(obj.data)}
    if _data_only_avalanche_object(obj):
        return {TAG: "object", "class": _name(obj),
                "attrs": {k: encode(v, f"{where}.{k}") for k, v in vars(obj).items()}}
    raise NotCheckpointable(f"{where} is a {_name(obj)}, whose state cannot be saved as plain data")


def _is_param_data(obj: Any) -> bool:
    try:
        from avalanche.training.utils import ParamData
    except ImportError:  # pragma: no cover
        return False
    return isinstance(obj, ParamData)


def _data_only_avalanche_object(obj: Any) -> bool:
    """An Avalanche helper object held by a plugin (say, LwF's LearningWithoutForgetting),
    restored attribute by attribute into the live one; datasets, loaders and iterators are not."""
    cls = type(obj)
    if not cls.__module__.startswith("avalanche.") or not hasattr(obj, "__dict__"):
        return False
    if isinstance(obj, (torch.utils.data.Dataset, torch.utils.data.DataLoader)):
        return False
    # an object with a __call__ method is fine (its code stays in Avalanche; only its
    # attributes are saved); functions and partials are not Avalanche classes
    return not (hasattr(obj, "__next__") or hasattr(obj, "__iter__"))


def decode(enc: Any, live: Any, ctx: _Context) -> Any:
    """The value encoded by :func:`encode`; ``live`` is the attribute's current value on the
    freshly built object (reused where it holds the right kind of thing)."""
    if isinstance(enc, list):
        return [decode(v, live[i] if isinstance(live, list) and i < len(live) else None, ctx)
                for i, v in enumerate(enc)]
    if not isinstance(enc, dict) or TAG not in enc:
        if isinstance(enc, dict):  # a plain dict (an optimizer's state_dict is one)
            return {k: decode(v, None, ctx) for k, v in enc.items()}
        return enc
    kind = enc[TAG]
    if kind == "bigint":
        return int(enc["v"])
    if kind == "tensor":
        device = live.device if isinstance(live, torch.Tensor) else ctx.device
        t = enc["v"].to(device).clone()
        if enc["param"]:
            return torch.nn.Parameter(t, requires_grad=enc["grad"])
        return t.requires_grad_(enc["grad"])
    if kind == "size":
        return torch.Size(enc["v"])
    if kind == "device":
        return torch.device(enc["v"])
    if kind == "torch_generator":
        gen = live if isinstance(live, torch.Generator) else torch.Generator(device=enc["device"])
        gen.set_state(enc["v"])
        return gen
    if kind == "numpy_generator":
        if isinstance(live, np.random.Generator):
            gen = live
        else:
            name = json.loads(enc["v"])["bit_generator"]
            gen = np.random.Generator(getattr(np.random, name)())
        set_numpy_rng_state(gen, enc["v"])
        return gen
    if kind == "ndarray":
        return enc["v"].numpy().astype(enc["dtype"], copy=True)
    if kind == "tuple":
        items = live if isinstance(live, tuple) else ()
        return tuple(decode(v, items[i] if i < len(items) else None, ctx) for i, v in enumerate(enc["v"]))
    if kind in ("set", "frozenset"):
        items = [decode(v, None, ctx) for v in enc["v"]]
        return set(items) if kind == "set" else frozenset(items)
    if kind == "dict":
        if isinstance(live, defaultdict):
            out: dict = defaultdict(live.default_factory)
        elif enc["kind"] == "defaultdict":
            out = defaultdict(_FACTORIES[enc["factory"]] if enc["factory"] else None)
        elif enc["kind"] == "OrderedDict":
            out = OrderedDict()
        else:
            out = {}
        for k, v in zip(enc["keys"], enc["values"]):
            key = decode(k, None, ctx)
            out[key] = decode(v, live.get(key) if isinstance(live, dict) else None, ctx)
        return out
    if kind == "ParamData":
        from avalanche.training.utils import ParamData

        init = _INIT_FUNCTIONS.get(enc["init"]) or getattr(live, "init_function", None)
        if init is None:
            raise NotCheckpointable(f"ParamData '{enc['name']}' had an unknown init function")
        device = torch.device(enc["device"])
        return ParamData(enc["name"], shape=tuple(enc["shape"]), init_function=init,
                         init_tensor=enc["v"].to(device).clone(), device=device)
    if kind == "module":
        module = live if isinstance(live, torch.nn.Module) and _name(live) == enc["class"] else None
        if module is None:  # a saved copy of the model (LwF's previous model): copy the model
            if _name(ctx.model) != enc["class"]:
                raise NotCheckpointable(f"cannot rebuild a saved {enc['class']} (the model is a {_name(ctx.model)})")
            module = copy.deepcopy(ctx.model)
        module.load_state_dict(enc["state"])
        module.train(enc["training"])
        return module
    if kind == "object":
        if live is None or _name(live) != enc["class"]:
            raise NotCheckpointable(f"cannot rebuild a saved {enc['class']} (found {type(live).__name__})")
        for k, v in enc["attrs"].items():
            setattr(live, k, decode(v, getattr(live, k, None), ctx))
        return live
    raise NotCheckpointable(f"unknown encoded value '{kind}'")
