"""Layer specs: one spelling names a conv layer in every tool, registered or the user's own.

    unfold                                     a registered name (`convlab.conv.CONV_LAYERS`)
    package.module:ClassName                   an importable class
    path/to/file.py:ClassName                  a class in a file, relative to the working directory
    path/to/file.py:conv_forward[,backward]    a NumPy function pair (backward found by name if not given)

From Python the object itself works too: a class, a function, or a (forward, backward) tuple.
`resolve_conv` turns a spec into a class with `nn.Conv2d`'s constructor: a registered class (or any
`nn.Conv2d` / `Conv2dBase` subclass) as it is, anything else wrapped by `convlab.conv.adapter`.
Every way a spec can fail is one `SpecError` whose message says what was wrong and how to fix it;
constructor and weight problems are found at resolve time (one small probe instance), before any data
loads.

A file is loaded with importlib under a name of its own (its folder need not be a package, and two
files called my_conv.py do not collide); its folder is on sys.path while it loads, so it can import its
neighbours. Loading the same unchanged file again returns the same module, hence the same classes.
"""

from __future__ import annotations

import copyreg
import hashlib
import importlib
import importlib.util
import inspect
import re
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from torch import nn

from convlab.conv.adapter import (
    ConstructorPlan,
    Conv2dFace,
    FunctionAdapter,
    ModuleAdapter,
    NumpyAdapter,
    probe_names,
)
from convlab.conv.base import Conv2dBase
from convlab.conv.errors import SpecError

FORMS = (
    "a registered name ({names}), package.module:ClassName, path/to/file.py:ClassName, "
    "or path/to/file.py:forward_fn[,backward_fn]"
)

_loaded: dict[tuple[Path, int], ModuleType] = {}
_file_of_module: dict[str, str] = {}  # module name given to a loaded file -> the path as the user spelled it
_path_of_module: dict[str, str] = {}  # ... -> its absolute path, for another process to load it again
_adapters: dict[tuple, type[nn.Module]] = {}


class _AdapterClass(type):
    """The metaclass of adapter classes, so that pickle can rebuild them (see `_reduce_adapter_class`)."""


def _portable(obj: Any) -> Any:
    """A user object as another process can find it: 'absolute/path.py:name' for a file convlab loaded
    (its module name exists only here), else the object itself (pickled by reference)."""
    if obj is None:
        return None
    module = getattr(obj, "__module__", "")
    if module in _path_of_module:
        return f"{_path_of_module[module]}:{obj.__qualname__}"
    return obj


def _unportable(item: Any) -> Any:
    if isinstance(item, str):
        path, _, name = item.rpartition(":")
        return getattr(load_file(path), name)
    return item


def _rebuild_adapter(objects: tuple, weight: str | None, bias: str | None, label: str) -> type[nn.Module]:
    found = tuple(o for o in (_unportable(item) for item in objects) if o is not None)
    return _resolve(found[0] if len(found) == 1 else found, weight, bias, label)


def _reduce_adapter_class(cls: type) -> tuple:
    """Pickle an adapter class as the recipe that resolves it again: what ddp_spawn's workers and
    torch.save of a whole model need, since the class itself is made at run time."""
    return _rebuild_adapter, cls.recipe


copyreg.pickle(_AdapterClass, _reduce_adapter_class)


def _registry() -> dict[str, type[nn.Module]]:
    from convlab.conv import CONV_LAYERS  # the package imports this module: look the registry up late

    return CONV_LAYERS


def _forms() -> str:
    return FORMS.format(names=", ".join(_registry()))


def _where(error: BaseException, path: Path) -> str:
    """'file.py:LINE' of the innermost frame of `error`'s traceback inside `path`, or ''."""
    frames = [f for f in traceback.extract_tb(error.__traceback__) if Path(f.filename) == path]
    return f" (at {path.name}:{frames[-1].lineno})" if frames else ""


def load_file(spelled: str) -> ModuleType:
    """The module of the Python file `spelled` (relative to the working directory); SpecError if it fails."""
    path = Path(spelled).expanduser()
    if not path.is_file():
        where = "" if path.is_absolute() else f" (relative to the working directory {Path.cwd()})"
        raise SpecError(f"{spelled}: no such file{where}")
    path = path.resolve()
    key = (path, path.stat().st_mtime_ns)
    if key in _loaded:
        return _loaded[key]
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:10]
    stem = re.sub(r"\W", "_", path.stem)
    name = f"convlab_user_{stem}_{digest}"
    module_spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module  # before exec: dataclasses and pickle look the module up by name
    sys.path.insert(0, str(path.parent))
    try:
        module_spec.loader.exec_module(module)
    except SyntaxError as error:
        del sys.modules[name]
        raise SpecError(
            f"{spelled}:{error.lineno}: cannot load it: SyntaxError: {error.msg}"
            + (f"\n    {error.text.strip()}" if error.text else "")
        ) from error
    except Exception as error:
        del sys.modules[name]
        raise SpecError(
            f"{spelled}: importing it raised {type(error).__name__}: {error}{_where(error, path)}"
        ) from error
    finally:
        sys.path.remove(str(path.parent))
    _loaded[key] = module
    _file_of_module[name] = spelled
    _path_of_module[name] = str(path)
    return module


def _import(target: str) -> ModuleType:
    try:
        return importlib.import_module(target)
    except ModuleNotFoundError as error:
        if error.name and target.startswith(error.name):  # the module itself, not one it imports
            raise SpecError(
                f"{target}: no module of that name is importable (for a file, spell it path/to/file.py:Name)"
            ) from error
        raise SpecError(f"{target}: importing it raised ModuleNotFoundError: {error}") from error
    except Exception as error:
        raise SpecError(f"{target}: importing it raised {type(error).__name__}: {error}") from error


def _definitions(module: ModuleType) -> str:
    """'A (class), f (function)': the public classes and functions `module` itself defines."""
    found = []
    for name, value in vars(module).items():
        if name.startswith("_") or getattr(value, "__module__", None) != module.__name__:
            continue
        if inspect.isclass(value):
            found.append(f"{name} (class)")
        elif inspect.isfunction(value):
            found.append(f"{name} (function)")
    return ", ".join(found) or "no classes or functions"


def _attribute(module: ModuleType, name: str, where: str) -> Any:
    if not name.isidentifier():
        raise SpecError(f"{where}:{name}: {name!r} is not a Python name; expected {_forms()}")
    try:
        return getattr(module, name)
    except AttributeError:
        raise SpecError(f"{where} defines no {name!r}; it defines: {_definitions(module)}") from None


def _parse(spec: str) -> tuple[Any, str]:
    """(the object a string spec names, the label): a registered class, a user class, or a function pair."""
    text = spec.strip()
    registry = _registry()
    if text in registry:
        return registry[text], text
    target, colon, attr = text.rpartition(":")
    if not colon or not target or not attr:
        if text.endswith(".py"):
            module = load_file(text)
            raise SpecError(
                f"{text}: name what in it to use, as {text}:Name; it defines: {_definitions(module)}"
            )
        raise SpecError(f"unknown conv layer {text!r}: expected {_forms()}")
    is_file = target.endswith(".py") or "/" in target or "\\" in target
    module = load_file(target) if is_file else _import(target)
    names = [n.strip() for n in attr.split(",")]
    if len(names) > 2:
        raise SpecError(f"{text}: at most two names, forward_fn,backward_fn; got {len(names)}")
    objects = [_attribute(module, n, target) for n in names]
    if len(objects) == 2:
        if not all(inspect.isroutine(o) for o in objects):
            raise SpecError(f"{text}: a pair forward_fn,backward_fn must name two functions")
        return tuple(objects), text
    return objects[0], text


def _backward_of(forward: Callable) -> Callable | None:
    """The backward named after `forward` ('forward' -> 'backward') in its module, or None."""
    name = getattr(forward, "__name__", "")
    namespace = getattr(forward, "__globals__", {})  # its module's, even if sys.modules names another
    candidate = namespace.get(name.replace("forward", "backward")) if "forward" in name else None
    return candidate if callable(candidate) else None


def _object_label(obj: Any) -> str:
    """How a class or function is labelled when passed as an object: its file spec, module path or name."""
    if isinstance(obj, tuple) and len(obj) == 2:
        return _pair_label(obj[0], obj[1], None)
    module, name = getattr(obj, "__module__", ""), getattr(obj, "__qualname__", type(obj).__name__)
    for registered, cls in _registry().items():
        if obj is cls:
            return registered
    if isinstance(obj, type) and issubclass(obj, Conv2dFace) and obj.label:
        return obj.label
    if module in _file_of_module:
        return f"{_file_of_module[module]}:{name}"
    if module in ("__main__", "builtins", None, ""):
        return name
    return f"{module}:{name}"


def _pair_label(forward: Callable, backward: Callable | None, text: str | None) -> str:
    if text is not None:
        return text
    label = _object_label(forward)
    return label if backward is None else f"{label},{backward.__name__}"


def _adapter(base: type, key: tuple, label: str, **attributes: Any) -> type[nn.Module]:
    """A subclass of `base` for one user object (cached: resolving twice gives the same class)."""
    cache_key = (base, key, label, attributes.get("weight_name"), attributes.get("bias_name"))
    if cache_key not in _adapters:
        name = getattr(key[0], "__name__", "Layer")
        recipe = (
            tuple(_portable(o) for o in key),
            attributes.get("weight_name"),
            attributes.get("bias_name"),
            label,
        )
        namespace = {"label": label, "recipe": recipe, "__module__": __name__, **attributes}
        cls = _AdapterClass(f"Adapted{name}", (base,), namespace)
        cls.__qualname__ = cls.__name__
        if base is not FunctionAdapter:
            cls.weight_name, cls.bias_name = probe_names(cls)
        _adapters[cache_key] = cls
    return _adapters[cache_key]


def resolve_conv(spec: Any, *, weight: str | None = None, bias: str | None = None) -> type[nn.Module]:
    """The class, with nn.Conv2d's constructor, for a layer spec (see the module docstring).

    spec: a string spec, or a class, function, (forward, backward) tuple, or an instance (its class).
    weight / bias: the names of the user's weight and bias (parameters, or array attributes of a NumPy
        class), when finding them by shape is ambiguous.
    Returns the registered class itself for a registered name or class (and any nn.Conv2d / Conv2dBase
    subclass); otherwise an adapter class (`convlab.conv.adapter`), the same class each time.
    Raises SpecError when the spec cannot be resolved.
    """
    return _resolve(spec, weight, bias)


def _resolve(spec: Any, weight: str | None, bias: str | None, label: str | None = None) -> type[nn.Module]:
    """resolve_conv; `label` overrides the label (a rebuilt adapter keeps the one it was first given)."""
    text = spec if isinstance(spec, str) else None
    obj, parsed_label = _parse(spec) if text is not None else (spec, None)
    text = label or text
    label = label or parsed_label
    if isinstance(obj, nn.Module) or not (isinstance(obj, tuple) or inspect.isroutine(obj)):
        obj = obj if isinstance(obj, type) else type(obj)  # an instance stands for its class
    if isinstance(obj, type) and issubclass(obj, (nn.Conv2d, Conv2dBase, Conv2dFace)):
        if (weight or "weight") != "weight" or (bias or "bias") != "bias":
            raise SpecError(f"{_object_label(obj)} already names its parameters weight and bias")
        return obj
    if isinstance(obj, tuple):
        if len(obj) != 2 or not all(callable(o) for o in obj):
            raise SpecError(f"a function pair is (forward_fn, backward_fn); got {obj!r}")
        forward, backward = obj
        return _adapter(
            FunctionAdapter, obj, _pair_label(forward, backward, text), **_pair_attributes(forward, backward)
        )
    if inspect.isroutine(obj):
        backward = _backward_of(obj)
        return _adapter(
            FunctionAdapter, (obj, backward), _pair_label(obj, None, text), **_pair_attributes(obj, backward)
        )
    cls = obj
    label = label or _object_label(cls)
    if cls.__module__ == "builtins":
        raise SpecError(f"{spec!r} is not a conv layer: expected {_forms()}")
    plan = ConstructorPlan.of(cls, label)
    base = ModuleAdapter if issubclass(cls, nn.Module) else NumpyAdapter
    if base is NumpyAdapter and not callable(getattr(cls, "forward", None)) and not callable(cls.__call__):
        raise SpecError(f"{label}: not an nn.Module and has no forward method to call")
    return _adapter(base, (cls,), label, user_class=cls, plan=plan, weight_name=weight, bias_name=bias)


def _pair_attributes(forward: Callable, backward: Callable | None) -> dict[str, Any]:
    return {
        "forward_fn": staticmethod(forward),
        "backward_fn": None if backward is None else staticmethod(backward),
    }


def conv_label(spec: Any) -> str:
    """The label of a layer in results.json, TensorBoard, report and bench tables.

    A registered name for registered layers ('vanilla'), the spec as written for a string spec
    ('my_conv.py:VanillaConv2d'); for an object, its file spec if convlab loaded the file, else
    'module:Class' (just 'Class' for a notebook's __main__). Does not load or resolve a string spec.
    """
    if isinstance(spec, str):
        return spec.strip()
    return _object_label(spec)
