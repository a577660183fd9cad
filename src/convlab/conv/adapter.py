"""A user's conv layer, as written, presented with `nn.Conv2d`'s face.

Every tool in convlab builds conv layers as `cls(in_channels, out_channels, kernel_size, stride=...,
padding=..., dilation=..., groups=..., bias=..., padding_mode=..., device=..., dtype=...)` and reads
`.weight` (C_out, C_in/groups, kH, kW) and `.bias` (C_out,). A user's layer rarely has that API: it takes
a few of those arguments (perhaps under other names, perhaps `kernel_size` as a tuple only), keeps its
weights under its own names, or is NumPy code with no autograd at all. The adapters here close the gap
without touching the user's code:

- `ModuleAdapter`: an `nn.Module`. The constructor passes only the arguments the layer's signature takes
  (retrying `kernel_size=5` as `(5, 5)` and back); a non-default argument it does not take raises
  `UnsupportedFeature`. `.weight` / `.bias` are the layer's own Parameter objects, found by shape, so
  optimizers, freezing and `state_dict` act on what the layer computes with; `state_dict` names them
  `weight` / `bias`, so an `nn.Conv2d` state dict loads into it and back.
- `NumpyAdapter`: a class whose `forward` (or `__call__`) maps an ndarray (N, C_in, H, W) to an ndarray
  (N, C_out, H_out, W_out), weights in ndarray attributes. The weights live here as torch Parameters and
  are written into the user's attributes before each forward; there is no backward (a clear error if
  autograd asks for one).
- `FunctionAdapter`: a CS231n-style pair `forward(x, w, b, {'stride', 'pad'}) -> (out, cache)`,
  `backward(dout, cache) -> (dx, dw, db)`, wrapped in a `torch.autograd.Function`; stride and symmetric
  integer padding only.

What the adapters do not do: check dtypes or devices in `forward` (that would slow every training step;
`convlab.verify` diagnoses them), or change the numbers the user's code computes.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.modules.utils import _pair

from convlab.conv.errors import SpecError, UnsupportedFeature

# nn.Conv2d's optional arguments and their defaults; a non-default value is a feature the layer must take.
CONV2D_DEFAULTS: dict[str, Any] = {
    "stride": 1,
    "padding": 0,
    "dilation": 1,
    "groups": 1,
    "bias": True,
    "padding_mode": "zeros",
}
# The names users give nn.Conv2d's arguments, first the nn.Conv2d name itself.
ALIASES: dict[str, tuple[str, ...]] = {
    "in_channels": ("in_channels", "in_ch", "in_chans", "c_in", "cin", "in_planes", "input_channels", "n_in"),
    "out_channels": (
        "out_channels",
        "out_ch",
        "out_chans",
        "c_out",
        "cout",
        "out_planes",
        "output_channels",
        "n_out",
        "num_filters",
        "n_filters",
    ),
    "kernel_size": ("kernel_size", "kernel", "k", "ksize", "filter_size", "kernel_shape"),
    "stride": ("stride", "strides"),
    "padding": ("padding", "pad"),
    "dilation": ("dilation",),
    "groups": ("groups",),
    "bias": ("bias", "use_bias", "with_bias"),
    "padding_mode": ("padding_mode",),
    "device": ("device",),
    "dtype": ("dtype",),
}
REQUIRED = ("in_channels", "out_channels", "kernel_size")
# The layer built once at resolve time to find its weight and bias: distinct sizes, so shapes tell them apart.
PROBE = {"in_channels": 2, "out_channels": 5, "kernel_size": 3}


def _is_default(name: str, value: Any) -> bool:
    if name in ("stride", "dilation"):
        return not isinstance(value, str) and _pair(value) == (1, 1)
    if name == "padding":
        return not isinstance(value, str) and _pair(value) == (0, 0)
    return value == CONV2D_DEFAULTS[name]


def _feature(name: str, value: Any) -> str:
    """The feature a non-default argument asks for, as tables name it."""
    if name == "bias":
        return "bias=False"
    if name == "padding" and isinstance(value, str):
        return f"padding='{value}'"
    if name == "padding_mode":
        return f"padding_mode='{value}'"
    return name


@dataclass(frozen=True)
class ConstructorPlan:
    """How nn.Conv2d's arguments map onto a user's constructor, read once from its signature.

    names: nn.Conv2d argument -> the user's parameter name, for those it takes.
    var_keyword: the constructor has **kwargs (non-default features go there under nn.Conv2d's names).
    """

    owner: str
    names: dict[str, str]
    var_keyword: bool
    takes: tuple[str, ...]  # the user's parameter names, for messages

    @classmethod
    def of(cls, user_class: type, label: str) -> ConstructorPlan:
        """Read `user_class`'s constructor; a SpecError if it needs an argument nn.Conv2d cannot give."""
        try:
            signature = inspect.signature(user_class)
        except (TypeError, ValueError):  # a builtin or C-implemented __init__: assume nn.Conv2d's names
            return cls(label, {n: n for n in REQUIRED}, True, ())
        params = signature.parameters
        names = {}
        for conv_name, aliases in ALIASES.items():
            found = [
                a for a in aliases if a in params and params[a].kind is not inspect.Parameter.VAR_KEYWORD
            ]
            if found:
                names[conv_name] = found[0]
        known = set(names.values())
        var_keyword = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
        unknown = [
            name
            for name, p in params.items()
            if name not in known
            and p.default is inspect.Parameter.empty
            and p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
        ]
        missing = [n for n in REQUIRED if n not in names]
        takes = tuple(params)
        if unknown:
            raise SpecError(
                f"{label}: its constructor needs {', '.join(repr(u) for u in unknown)}, which convlab cannot "
                f"give: it builds layers as nn.Conv2d does, from {', '.join(ALIASES)}. Give "
                f"{'that argument' if len(unknown) == 1 else 'those arguments'} a default value, or rename "
                f"{'it' if len(unknown) == 1 else 'them'} to nn.Conv2d's names "
                f"(its constructor takes: {', '.join(takes)})"
            )
        if missing and not var_keyword:
            raise SpecError(
                f"{label}: its constructor takes no {' / '.join(missing)} "
                f"(it takes: {', '.join(takes) or 'nothing'}); convlab builds layers as nn.Conv2d does, "
                f"from in_channels, out_channels, kernel_size, ..."
            )
        return cls(label, names, var_keyword, takes)

    def kwargs(self, requested: dict[str, Any]) -> dict[str, Any]:
        """The keyword arguments for the user's constructor; UnsupportedFeature for one it cannot take."""
        kwargs = {}
        for name, value in requested.items():
            if name in self.names:
                kwargs[self.names[name]] = value
            elif name in ("device", "dtype"):
                continue  # applied after construction instead (see ModuleAdapter)
            elif name in REQUIRED or not _is_default(name, value):
                if not self.var_keyword:
                    feature = _feature(name, value)
                    raise UnsupportedFeature(
                        feature,
                        f"{self.owner} does not support {feature} (asked for {name}={value!r}; its "
                        f"constructor takes: {', '.join(self.takes) or 'nothing'})",
                    )
                kwargs[name] = value
        return kwargs


@contextmanager
def _rng_untouched() -> Iterator[None]:
    """Draws inside leave torch's and NumPy's global generators as they were (probe constructions)."""
    state = np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        try:
            yield
        finally:
            np.random.set_state(state)


def construct(user_class: type, plan: ConstructorPlan, requested: dict[str, Any]) -> Any:
    """An instance of `user_class` for nn.Conv2d's arguments `requested` (without device/dtype).

    If the constructor raises on `kernel_size` as given, it is retried as a pair (5 -> (5, 5)) or as an
    int ((5, 5) -> 5); a non-square kernel it cannot take is UnsupportedFeature("non-square kernel").
    """
    kernel = requested["kernel_size"]
    try:
        return user_class(**plan.kwargs(requested))
    except UnsupportedFeature:
        raise
    except Exception as first:
        pair = _pair(kernel)
        if isinstance(kernel, int):
            retry = pair
        elif pair[0] == pair[1]:
            retry = pair[0]
        else:
            raise UnsupportedFeature(
                "non-square kernel",
                f"{plan.owner} does not support a non-square kernel: kernel_size={kernel} raised "
                f"{type(first).__name__}: {first}",
            ) from first
        try:
            return user_class(**plan.kwargs({**requested, "kernel_size": retry}))
        except Exception:
            raise first from None


def _shape(value: Any) -> tuple[int, ...]:
    return tuple(value.shape)


def find_weight_and_bias(
    candidates: dict[str, Any],
    weight_shape: tuple[int, ...],
    bias_shape: tuple[int, ...],
    owner: str,
    weight: str | None = None,
    bias: str | None = None,
    what: str = "parameter",
) -> tuple[str, str | None]:
    """(weight name, bias name or None) among `candidates` (name -> tensor or ndarray), found by shape.

    weight / bias: names the user gave, checked instead of searched for. A SpecError when there is no
    weight-shaped candidate or more than one of either: it lists what was found and how to name them.
    """

    def listing() -> str:
        shown = [f"{name} {tuple(_shape(v))}" for name, v in candidates.items()]
        return ", ".join(shown) or "none"

    how = (
        "name them: weight=NAME, bias=NAME in Python (convlab.check, resolve_conv), "
        "--weight NAME --bias NAME in python -m convlab.verify, conv.weight=NAME conv.bias=NAME in train.py"
    )

    def pick(role: str, shape: tuple[int, ...], given: str | None, required: bool) -> str | None:
        if given is not None:
            if given not in candidates:
                raise SpecError(f"{owner}: no {what} named {given!r} for the {role}; found: {listing()}")
            if _shape(candidates[given]) != shape:
                layout = "(out, in/groups, kh, kw)" if role == "weight" else "(out,)"
                raise SpecError(
                    f"{owner}: {given!r} has shape {_shape(candidates[given])}, but the {role} here must "
                    f"have shape {shape} {layout}"
                )
            return given
        matches = [name for name, value in candidates.items() if _shape(value) == shape]
        if len(matches) > 1:
            raise SpecError(
                f"{owner}: {len(matches)} {what}s could be the {role} (shape {shape}): "
                f"{', '.join(matches)}; {how}"
            )
        if not matches and required:
            raise SpecError(
                f"{owner}: no weight-shaped {what}: expected one of shape {shape} (out, in/groups, kh, kw) "
                f"for {PROBE['in_channels']} in, {PROBE['out_channels']} out channels and a "
                f"{PROBE['kernel_size']}x{PROBE['kernel_size']} kernel; found: {listing()}. If the layer "
                f"keeps its weight under another shape, store it as (out, in/groups, kh, kw); or {how}"
            )
        return matches[0] if matches else None

    return pick("weight", weight_shape, weight, True), pick("bias", bias_shape, bias, False)


class Conv2dFace(nn.Module):
    """nn.Conv2d's attributes for an adapted layer; subclasses build the layer and compute.

    Class attributes set by `convlab.conv.spec` for each adapted user object: `label` (its spec) and
    `weight_name` / `bias_name` (as the user named them, or None to find them by shape).
    """

    label: ClassVar[str] = ""
    weight_name: ClassVar[str | None] = None
    bias_name: ClassVar[str | None] = None
    transposed = False

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: str | int | tuple[int, int] = 0,
        dilation: int | tuple[int, int] = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size, self.stride, self.dilation = _pair(kernel_size), _pair(stride), _pair(dilation)
        self.padding = padding if isinstance(padding, str) else _pair(padding)
        self.padding_mode = padding_mode
        self.output_padding = (0, 0)
        self._factory = {"device": device, "dtype": dtype}
        # As the caller gave them: the user's constructor gets these, not the normalised pairs above.
        self._requested = {
            "in_channels": in_channels,
            "out_channels": out_channels,
            "kernel_size": kernel_size,
            "stride": stride,
            "padding": padding,
            "dilation": dilation,
            "groups": groups,
            "bias": bias,
            "padding_mode": padding_mode,
        }

    def weight_shape(self) -> tuple[int, int, int, int]:
        return (self.out_channels, self.in_channels // max(self.groups, 1), *self.kernel_size)

    def extra_repr(self) -> str:
        s = f"{self.label}: {self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}"
        s += f", stride={self.stride}"
        if self.padding not in ((0, 0), "valid"):
            s += f", padding={self.padding}"
        if self.dilation != (1, 1):
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        return s


class ModuleAdapter(Conv2dFace):
    """A user's nn.Module conv, held as the child `layer`; `.weight` / `.bias` are its own Parameters."""

    user_class: ClassVar[type[nn.Module]]
    plan: ClassVar[ConstructorPlan]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.layer = self._build(**self._factory)
        self._weight_key, self._bias_key = find_weight_and_bias(
            dict(self.layer.named_parameters()),
            self.weight_shape(),
            (self.out_channels,),
            self.label,
            self.weight_name,
            self.bias_name,
        )
        if not self._requested["bias"]:
            self._bias_key = None
        self.register_state_dict_post_hook(_rename_saved)
        self.register_load_state_dict_pre_hook(_rename_loaded)

    def _build(self, device: Any, dtype: Any) -> nn.Module:
        requested = dict(self._requested)
        takes = self.plan.names
        if "device" in takes:
            requested["device"] = device
        if "dtype" in takes:
            requested["dtype"] = dtype
        layer = construct(self.user_class, self.plan, requested)
        if not isinstance(layer, nn.Module):
            raise SpecError(f"{self.label}: constructing it gave a {type(layer).__name__}, not an nn.Module")
        # A constructor without device=/dtype= builds in the defaults; move it like nn.Module.to would.
        if (device is not None and "device" not in takes) or (dtype is not None and "dtype" not in takes):
            layer.to(
                device=device if "device" not in takes else None,
                dtype=dtype if "dtype" not in takes else None,
            )
        return layer

    def _get(self, key: str | None) -> nn.Parameter | None:
        return None if key is None else self.layer.get_parameter(key)

    @property
    def weight(self) -> nn.Parameter:
        """The user's weight Parameter, (C_out, C_in/groups, kH, kW)."""
        return self._get(self._weight_key)

    @property
    def bias(self) -> nn.Parameter | None:
        """The user's bias Parameter (C_out,), or None."""
        return self._get(self._bias_key)

    def reset_parameters(self) -> None:
        """The layer's own reset_parameters if it has one; else a fresh instance's values copied in place.

        The copy keeps the Parameter objects (an optimizer holding them stays valid); the fresh instance
        draws from the global RNG like the layer's own constructor does.
        """
        if callable(getattr(self.layer, "reset_parameters", None)):
            self.layer.reset_parameters()
            return
        fresh = construct(self.user_class, self.plan, self._requested)
        with torch.no_grad():
            self.layer.load_state_dict(fresh.state_dict())

    def forward(self, input: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        return self.layer(input, *args, **kwargs)


def _rename_saved(module: ModuleAdapter, state_dict: dict, prefix: str, local_metadata: Any) -> None:
    """state_dict hook: the user's weight/bias keys saved under nn.Conv2d's names, weight and bias."""
    for key, name in ((module._weight_key, "weight"), (module._bias_key, "bias")):
        if key is not None and f"{prefix}layer.{key}" in state_dict:
            state_dict[f"{prefix}{name}"] = state_dict.pop(f"{prefix}layer.{key}")


def _rename_loaded(module: ModuleAdapter, state_dict: dict, prefix: str, *args: Any) -> None:
    """load_state_dict pre-hook: nn.Conv2d's weight/bias keys loaded into the user's Parameters."""
    for key, name in ((module._weight_key, "weight"), (module._bias_key, "bias")):
        if key is not None and f"{prefix}{name}" in state_dict:
            state_dict[f"{prefix}layer.{key}"] = state_dict.pop(f"{prefix}{name}")


def _to_numpy(t: Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()


def _from_numpy(value: Any, like: Tensor, what: str) -> Tensor:
    if not isinstance(value, np.ndarray):
        raise TypeError(f"{what} returned a {type(value).__name__}, expected a NumPy array")
    return torch.from_numpy(np.ascontiguousarray(value)).to(device=like.device, dtype=like.dtype)


class _NumpyForward(torch.autograd.Function):
    """out = the user's NumPy forward on x; no backward (NumPy is invisible to autograd)."""

    @staticmethod
    def forward(x: Tensor, weight: Tensor, bias: Tensor | None, adapter: NumpyAdapter) -> Tensor:
        """x (N, C_in, H, W) -> (N, C_out, H_out, W_out), in x's dtype and device."""
        obj = adapter.layer_object
        setattr(obj, adapter._weight_key, _to_numpy(weight))
        if adapter._bias_key is not None:
            setattr(obj, adapter._bias_key, None if bias is None else _to_numpy(bias))
        forward = getattr(obj, "forward", None) or obj
        out = forward(_to_numpy(x).astype(_to_numpy(weight).dtype, copy=False))
        return _from_numpy(out, x, f"{adapter.label}.forward")

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: Tensor) -> None:
        ctx.label = inputs[3].label

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> None:
        raise RuntimeError(
            f"forward-only layer: {ctx.label} has no backward (its forward is NumPy, which autograd cannot "
            "differentiate). Freeze it (probe=frozen_conv trains only the rest), or write the layer as a "
            "forward/backward function pair: file.py:conv_forward,conv_backward"
        )


class NumpyAdapter(Conv2dFace):
    """A NumPy class's forward behind nn.Conv2d's face; its weights are Parameters here.

    Before each forward the Parameters are written (as arrays in the layer's dtype) into the user's
    attributes, so optimizers, probes and `reset_parameters` act on what its forward reads.
    """

    user_class: ClassVar[type]
    plan: ClassVar[ConstructorPlan]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.layer_object = construct(self.user_class, self.plan, self._requested)
        arrays = {k: v for k, v in vars(self.layer_object).items() if isinstance(v, np.ndarray)}
        self._weight_key, self._bias_key = find_weight_and_bias(
            arrays,
            self.weight_shape(),
            (self.out_channels,),
            self.label,
            self.weight_name,
            self.bias_name,
            what="array attribute",
        )
        if not self._requested["bias"]:
            self._bias_key = None
        factory = {**self._factory, "dtype": self._factory["dtype"] or torch.get_default_dtype()}
        self.weight = nn.Parameter(torch.empty(self.weight_shape(), **factory))
        self.bias = nn.Parameter(torch.empty(self.out_channels, **factory)) if self._bias_key else None
        self._copy_from(self.layer_object)

    def _copy_from(self, obj: Any) -> None:
        with torch.no_grad():
            self.weight.copy_(torch.as_tensor(getattr(obj, self._weight_key)))
            if self.bias is not None:
                self.bias.copy_(torch.as_tensor(getattr(obj, self._bias_key)))

    def reset_parameters(self) -> None:
        """The object's own reset_parameters, else a fresh instance's arrays; copied in place."""
        if callable(getattr(self.layer_object, "reset_parameters", None)):
            self.layer_object.reset_parameters()
            self._copy_from(self.layer_object)
        else:
            self._copy_from(construct(self.user_class, self.plan, self._requested))

    def forward(self, input: Tensor) -> Tensor:
        return _NumpyForward.apply(input, self.weight, self.bias, self)


class _FirstOrderOnly(torch.autograd.Function):
    """Passes a NumPy backward's gradients through, connected to the tensors they came from.

    Under create_graph=True, a gradient computed outside autograd would be a constant: differentiating it
    again would give None or zero, silently (a gradient penalty dropped). Tied to grad_out, x and weight
    by this node, the second derivative reaches `backward` here, which refuses it by name.
    """

    @staticmethod
    def forward(ctx: Any, label: str, dx: Tensor, dw: Tensor, db: Tensor, *anchors: Tensor) -> tuple:
        ctx.label = label
        return dx.clone(), dw.clone(), db.clone()

    @staticmethod
    def backward(ctx: Any, *grads: Tensor) -> None:
        raise RuntimeError(
            f"double backward: {ctx.label}'s backward is NumPy code, outside autograd, so its gradients "
            "cannot be differentiated again (create_graph=True: gradient penalties, meta-gradients). "
            "Use a layer written in torch operations for second-order gradients."
        )


class _PairFunction(torch.autograd.Function):
    """The user's forward/backward functions as one autograd node (NumPy in, NumPy out)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor, bias: Tensor, adapter: FunctionAdapter) -> Tensor:
        """x (N, C_in, H, W) -> (N, C_out, H_out, W_out): forward_fn(x, w, b, {'stride', 'pad'})."""
        conv_param = {"stride": adapter.stride[0], "pad": adapter.padding[0]}
        result = adapter.forward_fn(_to_numpy(x), _to_numpy(weight), _to_numpy(bias), conv_param)
        out, cache = result if isinstance(result, tuple) and len(result) == 2 else (result, None)
        ctx.cache, ctx.adapter = cache, adapter
        ctx.save_for_backward(x, weight, bias)
        return _from_numpy(out, x, adapter.forward_fn.__name__)

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor, Tensor, Tensor, None]:
        """grad_out (N, C_out, H_out, W_out) -> dx, dW, db from backward_fn(dout, cache)."""
        adapter = ctx.adapter
        if adapter.backward_fn is None:
            raise RuntimeError(
                f"forward-only layer: {adapter.label} has no backward function. Name one after the "
                f"forward: file.py:{adapter.forward_fn.__name__},my_backward (or define "
                f"{adapter.forward_fn.__name__.replace('forward', 'backward')} next to it)"
            )
        saved = ctx.saved_tensors
        name = adapter.backward_fn.__name__
        grads = adapter.backward_fn(_to_numpy(grad_out), ctx.cache)
        if not isinstance(grads, tuple) or len(grads) != 3:
            raise TypeError(f"{name} must return (dx, dw, db), got {type(grads).__name__}")
        out = []
        for grad, like, label in zip(grads, saved, ("dx", "dw", "db"), strict=True):
            tensor = _from_numpy(grad, like, name)
            if tensor.shape != like.shape:
                raise RuntimeError(
                    f"{name} returned {label} of shape {tuple(tensor.shape)} for a tensor of shape "
                    f"{tuple(like.shape)}"
                )
            out.append(tensor)
        if torch.is_grad_enabled():  # create_graph=True: second derivatives must raise, never vanish
            out = _FirstOrderOnly.apply(adapter.label, *out, grad_out, *saved)
        return out[0], out[1], out[2], None


class FunctionAdapter(Conv2dFace):
    """A forward/backward function pair behind nn.Conv2d's face; weight and bias are Parameters here.

    Supports what `conv_param = {'stride': s, 'pad': p}` can say: one stride and one symmetric integer
    padding; anything else is UnsupportedFeature. Initialised as nn.Conv2d is.
    """

    forward_fn: ClassVar[Callable]
    backward_fn: ClassVar[Callable | None]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        unsupported = {
            "stride": self.stride[0] != self.stride[1],
            "padding": isinstance(self.padding, str) or self.padding[0] != self.padding[1],
            "dilation": self.dilation != (1, 1),
            "groups": self.groups != 1,
            "bias": not self._requested["bias"],
            "padding_mode": self.padding_mode != "zeros",
        }
        for name, refused in unsupported.items():
            if refused:
                value = self._requested[name]
                feature = "asymmetric padding" if name == "padding" and not isinstance(value, str) else None
                feature = feature or ("asymmetric stride" if name == "stride" else _feature(name, value))
                raise UnsupportedFeature(
                    feature,
                    f"{self.label} does not support {feature} ({name}={value!r}): its conv_param holds one "
                    "stride and one symmetric integer pad",
                )
        self.weight = nn.Parameter(torch.empty(self.weight_shape(), **self._factory))
        self.bias = nn.Parameter(torch.empty(self.out_channels, **self._factory))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """nn.Conv2d's init: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weight and bias."""
        bound = 1 / (self.weight[0].numel() ** 0.5)
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, input: Tensor) -> Tensor:
        return _PairFunction.apply(input, self.weight, self.bias, self)


def probe_names(adapter: type[ModuleAdapter | NumpyAdapter]) -> tuple[str, str | None]:
    """(weight name, bias name) of the user's layer, found on a small instance; a SpecError when unclear.

    Run once at resolve time, so that a spec with no or two weight candidates fails before any data loads.
    The probe's random draws leave the global generators untouched.
    """
    with _rng_untouched():
        try:
            layer = adapter(**PROBE)
        except (SpecError, UnsupportedFeature):
            raise
        except Exception as error:
            raise SpecError(
                f"{adapter.label}: constructing it as {adapter.user_class.__name__}"
                f"(in_channels=2, out_channels=5, kernel_size=3) raised {type(error).__name__}: {error}"
            ) from error
    return layer._weight_key, layer._bias_key
