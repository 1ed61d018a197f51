"""The product's TensorRT, pycuda and ModelOpt calls, and the fakes the tests run them against, held to the real
APIs recorded in tests/api_manifests/ (scripts/api_manifests.py: TensorRT 10.3 = JetPack 6, the newest 10.x and
11.x; pycuda; ModelOpt). The TensorRT paths only ever meet fakes on boxes without a GPU, and ModelOpt's
``quantize`` takes ``**kwargs``, so a misspelled name would otherwise surface only on a GPU box, or never."""
from __future__ import annotations

import ast
import enum
import inspect
import json
import re
import textwrap
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import trt_fakes

ROOT = Path(__file__).resolve().parents[1]
MANIFESTS = Path(__file__).resolve().parent / "api_manifests"
TRT_VERSIONS = ("10.3.0", "10.16.1", "11.4.0")
PYCUDA_VERSION = "2026.1"
MODELOPT_VERSION = "0.47.0"
TRT, CUDA = "tensorrt", "pycuda.driver"
TRT_CODE = (ROOT / "export" / "tensorrt_build.py", ROOT / "aunet" / "backends.py")
MODELOPT_CODE = (ROOT / "export" / "precision.py", ROOT / "calibration" / "quantize.py")

# A name the code uses that some recorded TensorRT lacks: (owner, name) -> (versions lacking it, why the code is
# safe). The use must sit under an `if` on tensorrt_major(...). Empty: today's code uses nothing version-specific.
ALLOWED_MISSING: dict[tuple[str, str], tuple[tuple[str, ...], str]] = {}

# What the scan cannot read from the code: parameters that hold an API object (the module arrives as `trt` /
# `cuda`; `config` is the IBuilderConfig handed to the timing-cache helpers; `marks` the CUDA events a timed
# batch records), and pycuda's return types, which its Boost.Python sources do not declare (TensorRT's come
# from the manifests' pybind11 signatures).
NAME_TYPES = {"trt": ("module", TRT), "cuda": ("module", CUDA), "config": ("obj", TRT, "IBuilderConfig"),
              "marks": ("list", CUDA, "Event")}
PYCUDA_RETURNS = {"mem_alloc": "DeviceAllocation", "Device.retain_primary_context": "Context",
                  "Context.get_current": "Context"}


def load(name: str) -> dict[str, Any]:
    return json.loads((MANIFESTS / f"{name}.json").read_text())


@dataclass
class Api:
    """One recorded module: ``names`` maps dotted names (``ILogger.Severity``) to entries."""

    module: str
    version: str
    names: dict[str, Any]

    @classmethod
    def of(cls, name: str) -> "Api":
        m = load(name)
        return cls(m["module"], m["version"], m["names"])

    def entry(self, path: str) -> dict[str, Any] | None:
        for _ in range(5):  # follow aliases
            e = self.names.get(path)
            if not e or e.get("kind") != "alias":
                return e
            path = e["of"]
        return None

    def canonical(self, path: str) -> str:
        e = self.names.get(path)
        return self.canonical(e["of"]) if e and e.get("kind") == "alias" else path

    def member(self, cls: str, name: str) -> str | None:
        """The kind of ``cls.name`` (member, method, static, property, attribute, class), bases included."""
        cls = self.canonical(cls)
        e = self.entry(cls)
        if not e or e["kind"] not in ("class", "enum"):
            return None
        if name in e.get("members", ()):
            return "member"
        for key, kind in (("methods", "method"), ("static_methods", "static"), ("properties", "property"),
                          ("attributes", "attribute")):
            if name in e.get(key, {}):
                return kind
        if f"{cls}.{name}" in self.names:
            return "class"
        return next((k for b in e.get("bases", ()) if (k := self.member(b, name))), None)

    def signatures(self, cls: str, name: str) -> list[str]:
        if not cls:
            return (self.entry(name) or {}).get("signatures", [])
        cls = self.canonical(cls)
        e = self.entry(cls) or {}
        for key in ("methods", "static_methods"):
            if name in e.get(key, {}):
                return e[key][name]
        return next((s for b in e.get("bases", ()) if (s := self.signatures(b, name))), [])

    def returns(self, cls: str, name: str) -> str | None:
        """The class a method returns: pybind11's ``-> tensorrt.X``, or PYCUDA_RETURNS."""
        if self.module == CUDA:
            return PYCUDA_RETURNS.get(f"{cls}.{name}" if cls else name)
        for sig in self.signatures(cls, name):
            m = re.search(r"-> tensorrt\.([\w.]+)$", sig)
            if m and (self.entry(m.group(1)) or {}).get("kind") in ("class", "enum"):
                return self.canonical(m.group(1))
        return None


def trt_apis() -> list[Api]:
    return [Api.of(f"tensorrt-{v}") for v in TRT_VERSIONS]


def cuda_api() -> Api:
    return Api.of(f"pycuda-{PYCUDA_VERSION}")


def params(signature: str) -> list[str]:
    """Parameter names of a recorded signature (``*args``/``**kwargs`` as written, ``/`` dropped)."""
    inner = signature[1:signature.rfind(")", 0, signature.find(" -> ") if " -> " in signature else None)]
    names, depth, start = [], 0, 0
    for i, c in enumerate(inner + ","):
        if c in "([{<":
            depth += 1
        elif c in ")]}>" and not (c == ">" and inner[i - 1:i] == "-"):
            depth -= 1
        elif c == "," and depth == 0:
            part = inner[start:i].strip()
            start = i + 1
            if part and part != "/":
                names.append(re.split(r"[:=]", part)[0].strip())
    return names


# --- (a) the product code's TensorRT and pycuda uses ---


@dataclass(frozen=True)
class Use:
    api: str  # TRT or CUDA
    owner: str  # "" for the module, else a class path
    name: str
    line: int
    guarded: bool  # under an `if` on tensorrt_major(...)

    def __str__(self) -> str:
        return f"{self.api}.{self.owner + '.' if self.owner else ''}{self.name} (line {self.line})"


class UseScanner:
    """Attribute chains on the tensorrt / pycuda.driver modules and the objects their calls return, typed by
    assignments (flow-insensitive, per function; ``self.x`` per class) and the manifests' return types."""

    def __init__(self, source: str, api: dict[str, Api]):
        self.tree = ast.parse(source)
        self.api = api
        self.uses: set[Use] = set()
        for node in ast.walk(self.tree):
            for child in ast.iter_child_nodes(node):
                child.parent = node  # type: ignore[attr-defined]
        for cls in [n for n in ast.walk(self.tree) if isinstance(n, ast.ClassDef)] + [self.tree]:
            funcs = [f for f in (cls.body if isinstance(cls, ast.ClassDef) else self.tree.body)
                     if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))]
            attrs: dict[str, tuple] = {}
            envs = {f: {} for f in funcs}
            for _ in range(3):  # self.x assigned in one method, used in another
                for f in funcs:
                    self._infer(f, envs[f], attrs)
            for f in funcs:
                self._record(f, envs[f], attrs)

    def type_of(self, node: ast.AST, env: dict, attrs: dict) -> tuple | None:
        if isinstance(node, ast.Name):
            return env.get(node.id) or NAME_TYPES.get(node.id)
        if isinstance(node, ast.ListComp):  # [cuda.Event() for _ in range(4)]
            elt = self.type_of(node.elt, env, attrs)
            return ("list", *elt[1:]) if elt and elt[0] == "obj" else None
        if isinstance(node, ast.Subscript):
            seq = self.type_of(node.value, env, attrs)
            return ("obj", *seq[1:]) if seq and seq[0] == "list" else None
        if isinstance(node, ast.IfExp):
            return self.type_of(node.body, env, attrs) or self.type_of(node.orelse, env, attrs)
        if isinstance(node, ast.Attribute):
            if isinstance(node.value, ast.Name) and node.value.id == "self":
                return attrs.get(node.attr)
            base = self.type_of(node.value, env, attrs)
            if base and base[0] == "module":
                api = self.api[base[1]]
                if (api.entry(node.attr) or {}).get("kind") in ("class", "enum"):
                    return ("class", base[1], api.canonical(node.attr))
                return None
            if base and base[0] == "class":
                kind = self.api[base[1]].member(base[2], node.attr)
                if kind == "class":
                    return ("class", base[1], self.api[base[1]].canonical(f"{base[2]}.{node.attr}"))
                if kind == "member":
                    return ("obj", base[1], base[2])
            return None
        if isinstance(node, ast.Call):
            callee = self.type_of(node.func, env, attrs)
            if callee and callee[0] == "class":  # a constructor
                return ("obj", callee[1], callee[2])
            if isinstance(node.func, ast.Attribute):
                base = self.type_of(node.func.value, env, attrs)
                if base and base[0] in ("obj", "class"):
                    ret = self.api[base[1]].returns(base[2], node.func.attr)
                    return ("obj", base[1], ret) if ret else None
                if base and base[0] == "module":
                    ret = self.api[base[1]].returns("", node.func.attr)
                    return ("obj", base[1], ret) if ret else None
            if isinstance(node.func, ast.Name) and node.func.id == "_import_pycuda_driver":
                return ("module", CUDA)
        return None

    def _infer(self, func: ast.AST, env: dict, attrs: dict) -> None:
        for node in ast.walk(func):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name in (TRT, CUDA):
                        env[alias.asname or alias.name] = ("module", alias.name)
            if not isinstance(node, ast.Assign):
                continue
            for target in node.targets:
                pairs = [(target, node.value)]
                if isinstance(target, ast.Tuple) and isinstance(node.value, ast.Tuple):
                    pairs = list(zip(target.elts, node.value.elts))
                for t, v in pairs:
                    typ = self.type_of(v, env, attrs)
                    if typ is None:
                        continue
                    if isinstance(t, ast.Name):
                        env[t.id] = typ
                    elif isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name) and t.value.id == "self":
                        attrs[t.attr] = typ

    def _guarded(self, node: ast.AST) -> bool:
        while (node := getattr(node, "parent", None)) is not None:
            calls = [n for n in ast.walk(node.test) if isinstance(n, ast.Call)] if isinstance(node, ast.If) else []
            if any(getattr(c.func, "id", "") == "tensorrt_major" for c in calls):
                return True
        return False

    def _record(self, func: ast.AST, env: dict, attrs: dict) -> None:
        for node in ast.walk(func):
            if isinstance(node, ast.Attribute):
                base, name = self.type_of(node.value, env, attrs), node.attr
            elif (isinstance(node, ast.Call) and getattr(node.func, "id", "") in ("getattr", "hasattr")
                  and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant)):
                base, name = self.type_of(node.args[0], env, attrs), node.args[1].value
            else:
                continue
            if base is not None and base[0] in ("module", "class", "obj"):
                owner = "" if base[0] == "module" else base[2]
                self.uses.add(Use(base[1], owner, name, node.lineno, self._guarded(node)))


def has(api: Api, use: Use) -> bool:
    if not use.owner:
        return use.name in api.names
    return api.member(use.owner, use.name) is not None


def api_problems(sources: dict[str, str], trt: list[Api], cuda: Api,
                 allowed: dict[tuple[str, str], tuple[tuple[str, ...], str]]) -> tuple[list[str], set[Use]]:
    """Every use the real APIs lack, except allowed ones that a tensorrt_major(...) check guards."""
    problems, uses = [], set()
    for label, source in sources.items():
        for version_api in trt:
            scan = UseScanner(source, {TRT: version_api, CUDA: cuda})
            uses |= scan.uses
            for use in scan.uses:
                apis = [version_api] if use.api == TRT else [cuda]
                for api in apis:
                    if has(api, use):
                        continue
                    ok = allowed.get((use.owner, use.name))
                    if ok and api.version.startswith(ok[0]) and use.guarded:
                        continue
                    why = "" if not ok else " (allowed there, but not under a tensorrt_major() check)"
                    problems.append(f"{label}: {use} is not in {use.api} {api.version}{why}")
    return sorted(set(problems)), uses


def product_sources(paths=TRT_CODE) -> dict[str, str]:
    return {str(p.relative_to(ROOT)): p.read_text() for p in paths}


def test_manifests_are_the_recorded_versions():
    for v in TRT_VERSIONS:
        m = load(f"tensorrt-{v}")
        assert m["version"].startswith(v) and m["module"] == TRT and "stub" in m["source"]
        assert {"Builder", "Runtime", "OnnxParser", "ICudaEngine", "nptype", "__version__"} <= set(m["names"])
    assert load(f"pycuda-{PYCUDA_VERSION}")["module"] == CUDA
    assert load(f"modelopt-{MODELOPT_VERSION}")["version"] == MODELOPT_VERSION


def test_every_tensorrt_and_pycuda_name_the_code_uses_is_real_in_every_recorded_version():
    problems, uses = api_problems(product_sources(), trt_apis(), cuda_api(), ALLOWED_MISSING)
    seen = {(u.api, u.owner, u.name) for u in uses}
    # the scan reaches every object kind the code drives; without these it would pass by seeing nothing
    for expected in [(TRT, "", "Builder"), (TRT, "NetworkDefinitionCreationFlag", "STRONGLY_TYPED"),
                     (TRT, "Builder", "create_network"), (TRT, "OnnxParser", "parse_from_file"),
                     (TRT, "IBuilderConfig", "set_timing_cache"), (TRT, "ITimingCache", "serialize"),
                     (TRT, "IOptimizationProfile", "set_shape"), (TRT, "Runtime", "deserialize_cuda_engine"),
                     (TRT, "ICudaEngine", "get_tensor_profile_shape"), (TRT, "IExecutionContext", "execute_async_v3"),
                     (TRT, "Logger", "WARNING"), (CUDA, "", "pagelocked_empty"), (CUDA, "Context", "pop"),
                     (CUDA, "Context", "push"), (CUDA, "Context", "handle"), (CUDA, "Stream", "synchronize"),
                     (CUDA, "Stream", "handle"), (CUDA, "DeviceAllocation", "free"),
                     (CUDA, "Device", "retain_primary_context"), (CUDA, "Event", "record"),
                     (CUDA, "Event", "time_since")]:
        assert expected in seen, f"the scan no longer sees {expected}"
    assert not problems, "\n".join(problems)


def test_allow_list_entries_are_really_missing_somewhere():
    for (owner, name), (versions, why) in ALLOWED_MISSING.items():
        assert why
        use = Use(TRT, owner, name, 0, True)
        missing = [api.version for api in trt_apis() if not has(api, use)]
        assert missing and all(any(m.startswith(v) for v in versions) for m in missing), (owner, name, missing)


SYNTHETIC = '''
import tensorrt as trt

def build(path):
    builder = trt.Builder(trt.Logger(trt.Logger.WARNING))
    network = builder.create_network({flag})
    config = builder.create_builder_config()
    cache = config.create_timing_cache(b"")
    config.{set_cache}(cache, False)
    bytes(config.get_timing_cache().serialize())
    engine = trt.Runtime(trt.Logger()).deserialize_cuda_engine(b"")
    engine.create_execution_context().{execute}(0)

def flags(trt):
    {guard}return 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    return 0

class Backend:
    def __init__(self, cuda):
        self._ctx = cuda.Device(0).retain_primary_context()
        self._stream = cuda.{stream}()

    def close(self):
        self._stream.{sync}()
        self._ctx.{detach}()
'''
GOOD = dict(flag="0", set_cache="set_timing_cache", execute="execute_async_v3", sync="synchronize", stream="Stream",
            detach="detach", guard="if tensorrt_major(trt) == 10:\n        ")
EXPLICIT_BATCH = {("NetworkDefinitionCreationFlag", "EXPLICIT_BATCH"): (("11.",), "gone in 11; only set on 10")}


def synthetic_problems(allowed=EXPLICIT_BATCH, **changes) -> list[str]:
    source = SYNTHETIC.format(**{**GOOD, **changes})
    return api_problems({"snippet": source}, trt_apis(), cuda_api(), allowed)[0]


def test_the_api_scan_passes_a_correct_snippet():
    assert synthetic_problems() == []


@pytest.mark.parametrize("change, missing", [
    (dict(set_cache="set_timing_cach"), "tensorrt.IBuilderConfig.set_timing_cach"),
    (dict(execute="execute_async_v4"), "tensorrt.IExecutionContext.execute_async_v4"),
    (dict(sync="sync"), "pycuda.driver.Stream.sync"),
    (dict(stream="CudaStream"), "pycuda.driver.CudaStream"),
    (dict(detach="release"), "pycuda.driver.Context.release"),
    (dict(flag="trt.NetworkDefinitionCreationFlag.EXPLCIT_BATCH"), "NetworkDefinitionCreationFlag.EXPLCIT_BATCH"),
])
def test_the_api_scan_catches_a_bogus_name(change, missing):
    problems = synthetic_problems(**change)
    assert problems and all(missing in p for p in problems), problems


def test_a_name_missing_in_one_version_needs_the_allow_list_and_a_version_check():
    unguarded = synthetic_problems(guard="")
    assert unguarded and all("EXPLICIT_BATCH" in p and "11.4" in p and "tensorrt_major" in p for p in unguarded)
    not_allowed = synthetic_problems(allowed={})
    assert not_allowed and all("EXPLICIT_BATCH" in p and "11.4" in p for p in not_allowed)


# --- (b) the fakes offer nothing the real modules lack ---


def _public(name: str) -> bool:
    return not name.startswith("_")


def fake_classes(source: str, factory: str) -> dict[str, set[str]]:
    """{class: the public names it offers} for every class defined in ``factory`` (source-level, so attributes
    set on instances count: a test passing on ``config.cache`` would fail on TensorRT)."""
    tree = ast.parse(source)
    func = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == factory)
    out: dict[str, set[str]] = {}
    for cls in (n for n in ast.walk(func) if isinstance(n, ast.ClassDef)):
        names = set()
        for node in cls.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                names.add(node.name)
            elif isinstance(node, (ast.Assign, ast.AnnAssign)):
                for t in node.targets if isinstance(node, ast.Assign) else [node.target]:
                    names |= {e.id for e in (t.elts if isinstance(t, ast.Tuple) else [t]) if isinstance(e, ast.Name)}
        for node in ast.walk(cls):
            if (isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store)
                    and getattr(node.value, "id", "") == "self"):
                names.add(node.attr)
        out[cls.name] = {n for n in names if _public(n)}
    return out


def fake_signatures(source: str, factory: str) -> dict[tuple[str, str], list[str]]:
    """{(class, method): its parameter names} for the classes defined in ``factory``."""
    tree = ast.parse(source)
    func = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == factory)
    out = {("", f.name): [a.arg for a in f.args.posonlyargs + f.args.args + f.args.kwonlyargs]
           for f in func.body if isinstance(f, ast.FunctionDef) and _public(f.name)}
    for cls in (n for n in ast.walk(func) if isinstance(n, ast.ClassDef)):
        for f in cls.body:
            if isinstance(f, ast.FunctionDef) and (_public(f.name) or f.name == "__init__"):
                static = any(getattr(d, "id", "") == "staticmethod" for d in f.decorator_list)
                args = [a.arg for a in f.args.posonlyargs + f.args.args][0 if static else 1:]
                out[(cls.name, f.name)] = args + [a.arg for a in f.args.kwonlyargs]
    return out


def module_extras(fake: types.ModuleType, api: Api) -> list[str]:
    """Public names of a fake module (and members of its enums) that the real module lacks."""
    extras = []
    for name, value in vars(fake).items():
        if not _public(name) and name != "__version__":
            continue
        if name not in api.names:
            extras.append(name)
        elif isinstance(value, type) and issubclass(value, enum.Enum):
            extras += [f"{name}.{m}" for m in value.__members__ if api.member(name, m) != "member"]
    return extras


def class_extras(classes: dict[str, set[str]], apis: list[Api]) -> list[str]:
    """Fake classes not named as a real class, and names they offer that the real class lacks."""
    extras = []
    for cls, names in classes.items():
        for api in apis:
            if (api.entry(cls) or {}).get("kind") not in ("class", "enum"):
                extras.append(f"{cls} (no class {cls} in {api.module} {api.version})")
                continue
            extras += [f"{cls}.{n} (not in {api.module} {api.version} {cls})" for n in sorted(names)
                       if api.member(cls, n) is None]
    return extras


def signature_mismatches(fakes: dict[tuple[str, str], list[str]], api: Api) -> list[str]:
    """A fake function or method whose parameters are not named as the real ones, in order (keyword calls would
    differ), or that takes more than the real one accepts. Real ones without a recorded signature are skipped."""
    out = []
    for (cls, name), fake in fakes.items():
        real_sigs = api.signatures(cls, name)
        if not real_sigs:
            continue
        if not any(fake == params(s)[:len(fake)] or any(p.startswith("*") for p in params(s)) for s in real_sigs):
            out.append(f"{cls}.{name}({', '.join(fake)}) vs {api.module} {api.version}: {' | '.join(real_sigs)}")
    return out


FAKES = (ROOT / "tests" / "trt_fakes.py").read_text()


@pytest.mark.parametrize("fake_version, real_versions", [("10.3.0", ("10.3.0", "10.16.1")), ("11.4.0", ("11.4.0",))])
def test_the_tensorrt_fake_offers_only_real_names(fake_version, real_versions):
    fake = trt_fakes.fake_tensorrt(trt_fakes.TrtWorld(version=fake_version))
    apis = [Api.of(f"tensorrt-{v}") for v in real_versions]
    extras = [f"tensorrt.{e} (not in {api.version})" for api in apis for e in module_extras(fake, api)]
    extras += class_extras(fake_classes(FAKES, "fake_tensorrt"), apis)
    assert not extras, "\n".join(extras)


def test_the_pycuda_fake_offers_only_real_names():
    api = cuda_api()
    extras = module_extras(trt_fakes.fake_pycuda_driver(trt_fakes.Driver()), api)
    extras += class_extras(fake_classes(FAKES, "fake_pycuda_driver"), [api])
    assert not extras, "\n".join(extras)


def test_the_fakes_name_their_parameters_as_the_bindings_do():
    mismatches = []
    for api in trt_apis():
        mismatches += signature_mismatches(fake_signatures(FAKES, "fake_tensorrt"), api)
    mismatches += signature_mismatches(fake_signatures(FAKES, "fake_pycuda_driver"), cuda_api())
    assert not mismatches, "\n".join(sorted(set(mismatches)))


def offered(obj: Any) -> set[str]:
    """Public names an object of a fake answers to: its own attributes and its class's (not builtins')."""
    names = set(vars(obj)) if hasattr(obj, "__dict__") and not isinstance(obj, type) else set()
    cls = obj if isinstance(obj, type) else type(obj)
    if cls.__module__ not in ("builtins", "types"):
        for klass in cls.__mro__[:-1]:
            names |= set(vars(klass))
    return {n for n in names if _public(n)}


def test_the_backend_plumbing_fake_offers_only_real_names():
    """tests/test_backends.py's own stand-ins, driven the way TensorRTBackend drives them."""
    from test_backends import fake_tensorrt_and_cuda

    trt, cuda, _ = fake_tensorrt_and_cuda(max_batch=4, calls=[])
    trt_api, cuda_api_ = Api.of("tensorrt-10.3.0"), cuda_api()  # it says it is 10.3.0
    runtime = trt.Runtime(None)
    engine = runtime.deserialize_cuda_engine(b"")
    device = cuda.Device(0)
    objects = [(trt_api, "Runtime", runtime), (trt_api, "ICudaEngine", engine),
               (trt_api, "IExecutionContext", engine.create_execution_context()), (trt_api, "Logger", trt.Logger),
               (trt_api, "TensorIOMode", trt.TensorIOMode), (cuda_api_, "Device", device),
               (cuda_api_, "Context", device.retain_primary_context()), (cuda_api_, "Context", cuda.Context),
               (cuda_api_, "Stream", cuda.Stream()), (cuda_api_, "DeviceAllocation", cuda.mem_alloc(8))]
    extras = [f"tensorrt.{n}" for n in offered(trt) | {"__version__"} if n not in trt_api.names]
    extras += [f"pycuda.driver.{n}" for n in offered(cuda) if n not in cuda_api_.names]
    for api, cls, obj in objects:
        extras += [f"{cls}.{n} (not in {api.module} {api.version})" for n in sorted(offered(obj))
                   if api.member(cls, n) is None]
    assert set(extras) == PENDING_IN_TEST_BACKENDS, "\n".join(sorted(set(extras) ^ PENDING_IN_TEST_BACKENDS))


# What tests/test_backends.py's stand-ins still offer that the real objects lack: state kept on public names
# (that file is not this check's to change). Making them private there empties this set; the test above then
# fails until the entry here goes too, and any new extra fails it at once.
PENDING_IN_TEST_BACKENDS: set[str] = set()


def test_the_fake_checks_catch_a_bogus_name():
    fake = trt_fakes.fake_tensorrt(trt_fakes.TrtWorld(version="10.3.0"))
    api = Api.of("tensorrt-10.3.0")
    fake.build_engine = lambda network: None  # TensorRT 7's, long gone
    fake.DataType = enum.IntEnum("DataType", {"FLOAT": 0, "FP64": 9})
    assert sorted(module_extras(fake, api)) == ["DataType.FP64", "build_engine"]
    assert class_extras({"IBuilderConfig": {"set_timing_cache", "max_workspace_size", "cache"}}, [api]) == [
        "IBuilderConfig.cache (not in tensorrt 10.3.0 IBuilderConfig)",
        "IBuilderConfig.max_workspace_size (not in tensorrt 10.3.0 IBuilderConfig)"]
    assert class_extras({"IBuilderCfg": set()}, [api]) == ["IBuilderCfg (no class IBuilderCfg in tensorrt 10.3.0)"]
    source = textwrap.dedent('''
        def fake_tensorrt(world):
            class IOptimizationProfile:
                def __init__(self):
                    self.profiles = {}

                def set_shape(self, name, min, opt, max):
                    pass
        ''')
    assert class_extras(fake_classes(source, "fake_tensorrt"), [api]) == [
        "IOptimizationProfile.profiles (not in tensorrt 10.3.0 IOptimizationProfile)"]
    mismatches = signature_mismatches(fake_signatures(source, "fake_tensorrt"), api)
    assert [m.split(" vs ")[0] for m in mismatches] == ["IOptimizationProfile.set_shape(name, min, opt, max)"]


# --- (c) ModelOpt keyword arguments ---

MODELOPT_FUNCTIONS = ("modelopt.onnx.autocast.convert_to_mixed_precision", "modelopt.onnx.quantization.quantize")


def modelopt_calls(source: str) -> list[tuple[str, ast.Call]]:
    """(qualified function, call) for every call that resolves, through this file's imports, to a recorded
    ModelOpt function (so calibration's own ``quantize`` is not mistaken for ModelOpt's)."""
    tree = ast.parse(source)
    names: dict[str, str] = {}  # local name -> qualified
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            for a in node.names:
                names[a.asname or a.name] = f"{node.module}.{a.name}"
        elif isinstance(node, ast.Import):
            for a in node.names:
                names[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
    calls = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        parts, f = [], node.func
        while isinstance(f, ast.Attribute):
            parts.insert(0, f.attr)
            f = f.value
        if isinstance(f, ast.Name) and f.id in names:
            qualified = ".".join([names[f.id], *parts])
            if qualified in MODELOPT_FUNCTIONS:
                calls.append((qualified, node))
    return calls


def modelopt_problems(sources: dict[str, str], manifest: dict[str, Any]) -> tuple[list[str], list[str]]:
    problems, found = [], []
    for label, source in sources.items():
        for qualified, call in modelopt_calls(source):
            found.append(qualified)
            params_ = manifest["functions"][qualified]["parameters"]
            positional = [n for n, k in params_.items() if k in ("POSITIONAL_ONLY", "POSITIONAL_OR_KEYWORD")]
            where = f"{label}:{call.lineno} {qualified.rsplit('.', 1)[1]}"
            if len(call.args) > len(positional) or any(isinstance(a, ast.Starred) for a in call.args):
                problems.append(f"{where}: positional arguments that cannot be checked or are too many")
            for kw in call.keywords:
                if kw.arg is None:
                    problems.append(f"{where}: **{ast.unparse(kw.value)} cannot be checked against the signature")
                elif params_.get(kw.arg) not in ("POSITIONAL_OR_KEYWORD", "KEYWORD_ONLY"):
                    problems.append(f"{where}: {kw.arg}= is not a parameter of ModelOpt {manifest['version']}"
                                    " (its **kwargs would swallow it)" if "quantize" in qualified else
                                    f"{where}: {kw.arg}= is not a parameter of ModelOpt {manifest['version']}")
    return problems, found


def test_every_modelopt_keyword_the_code_passes_is_a_real_parameter():
    problems, found = modelopt_problems(product_sources(MODELOPT_CODE), load(f"modelopt-{MODELOPT_VERSION}"))
    assert sorted(set(found)) == sorted(MODELOPT_FUNCTIONS), f"the scan no longer finds the ModelOpt calls: {found}"
    assert not problems, "\n".join(problems)


def test_the_modelopt_check_catches_a_bogus_keyword():
    source = textwrap.dedent('''
        import modelopt.onnx.quantization as mq
        from modelopt.onnx.autocast import convert_to_mixed_precision as cast
        from aunet.calibration import quantize

        def run(opts):
            quantize("m.onnx", calibration_methd="ours, not ModelOpt's")
            mq.quantize("m.onnx", quantize_mode="int8", calibration_methd="max")
            cast(onnx_path="m.onnx", keep_io_type=True)
            mq.quantize("m.onnx", **opts)
        ''')
    problems, found = modelopt_problems({"snippet": source}, load(f"modelopt-{MODELOPT_VERSION}"))
    assert sorted(found) == [MODELOPT_FUNCTIONS[0], MODELOPT_FUNCTIONS[1], MODELOPT_FUNCTIONS[1]]
    assert len(problems) == 3, problems
    assert "calibration_methd=" in problems[0] or any("calibration_methd=" in p for p in problems)
    assert any("keep_io_type=" in p for p in problems) and any("**opts" in p for p in problems)


def test_the_modelopt_manifest_matches_the_installed_modelopt():
    modelopt = pytest.importorskip("modelopt")
    if modelopt.__version__ != MODELOPT_VERSION:
        pytest.skip(f"modelopt {modelopt.__version__} installed, the manifest records {MODELOPT_VERSION}")
    import importlib

    manifest = load(f"modelopt-{MODELOPT_VERSION}")
    for qualified in MODELOPT_FUNCTIONS:
        module, name = qualified.rsplit(".", 1)
        sig = inspect.signature(getattr(importlib.import_module(module), name))
        assert {n: p.kind.name for n, p in sig.parameters.items()} == manifest["functions"][qualified]["parameters"]
