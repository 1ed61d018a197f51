"""Record the API surface of the real TensorRT, pycuda and ModelOpt Python bindings as JSON manifests under
tests/api_manifests/, so tests/test_api_manifests.py can hold the product code and the test fakes to them
(the TensorRT and pycuda paths only ever run against fakes on boxes without a GPU).

Run by hand (needs PyPI, a C compiler, readelf; no GPU, no CUDA, no NVIDIA index), not by the test suite:

    .venv/bin/python scripts/api_manifests.py                     # all manifests
    .venv/bin/python scripts/api_manifests.py --only tensorrt     # or pycuda, modelopt (repeatable)
    .venv/bin/python scripts/api_manifests.py --work /tmp/apiwork # keep the downloads and stub libraries

TensorRT: ``pip download --no-deps tensorrt-cu12-bindings==V`` for each version in TENSORRT (the wheel for the
CPython running this script; the Python API is the same in each); the extension
module (tensorrt_bindings/tensorrt.so) links libnvinfer, libnvonnxparser and libnvinfer_plugin, which live in
the ``-libs`` wheels on NVIDIA's own index. So a stub library is compiled for each NEEDED entry that this box
cannot load, with that SONAME, defining every unversioned undefined dynamic symbol of the extension (functions
return 0, data symbols are zeroed arrays), and the package is imported in a subprocess with the stubs on
LD_LIBRARY_PATH. Importing only registers the pybind11 types: nothing calls into the stubs. Names, classes,
methods, properties, enum members and the pybind11 signatures (the first lines of ``__doc__``) are recorded.

pycuda: PyPI ships only the source (``pip download --no-deps --no-build-isolation pycuda==V``), so the
``pycuda._driver`` surface is read from the Boost.Python registrations in src/wrapper/ (the default build:
CUDA 12.0 for the ``#if CUDAPP_CUDA_VERSION`` branches, HAVE_CURAND on, HAVE_GL off), and pycuda/driver.py's
own additions from its AST.

ModelOpt: ``inspect.signature`` of the functions the product calls, from the installed nvidia-modelopt.
"""
from __future__ import annotations

import argparse
import ast
import ctypes
import inspect
import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "tests" / "api_manifests"
# manifest version -> the PyPI release of tensorrt-cu12-bindings: JetPack 6's, the newest 10.x, the newest 11.x
TENSORRT = {"10.3.0": "10.3.0", "10.16.1": "10.16.1.11", "11.4.0": "11.4.0.106"}
PYCUDA = "2026.1"
PYCUDA_DEFINES = {"CUDAPP_CUDA_VERSION": 12000, "CUDAPP_POST_30_BETA": 1, "HAVE_CURAND": 1,
                  "NPY_ABI_VERSION": 0x02000000, "PY_VERSION_HEX": 0x030A0000}
# what pycuda._driver's module init registers, in order (wrap_cudagl.cpp needs HAVE_GL, off by default)
PYCUDA_SOURCES = [("wrap_cudadrv.cpp", "BOOST_PYTHON_MODULE(_driver)"), ("mempool.cpp", "void pycuda_expose_tools()"),
                  ("wrap_curand.cpp", "void pycuda_expose_curand()")]
MODELOPT = {"modelopt.onnx.autocast": ["convert_to_mixed_precision"], "modelopt.onnx.quantization": ["quantize"]}
# dunders worth recording: they are how objects get built, called, converted or indexed
DUNDERS = {"__init__", "__call__", "__int__", "__index__", "__len__", "__getitem__", "__setitem__", "__iter__",
           "__enter__", "__exit__"}


def write_manifest(name: str, manifest: dict[str, Any], out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.json"
    path.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    print(f"wrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
    return path


def pip_download(requirement: str, dest: Path, *extra: str) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    before = set(dest.iterdir())
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-d", str(dest), *extra, requirement]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    name = re.split(r"[=<>]", requirement)[0].replace("-", "_").lower()
    found = [p for p in dest.iterdir() if p.name.lower().replace("-", "_").startswith(name)
             and f"-{requirement.split('==')[1]}" in p.name]
    if not found:
        raise SystemExit(f"pip download {requirement}: nothing new in {dest} ({sorted(set(dest.iterdir()) - before)})")
    return found[0]


# --- TensorRT: stub libraries and the import ---


def _loadable(lib: str) -> bool:
    try:
        ctypes.CDLL(lib)
        return True
    except OSError:
        return False


def _readelf(*args: str) -> str:
    return subprocess.run(["readelf", "-W", *args], check=True, capture_output=True, text=True).stdout


def stub_libraries(extension: Path, stub_dir: Path) -> list[str]:
    """Compile a stub for each library ``extension`` needs that this box lacks; returns their SONAMEs."""
    needed = re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", _readelf("-d", str(extension)))
    missing = [lib for lib in needed if not _loadable(lib)]
    system = [ctypes.CDLL(lib) for lib in needed if lib not in missing]
    symbols: dict[str, str] = {}  # name -> FUNC | OBJECT
    for line in _readelf("--dyn-syms", str(extension)).splitlines():
        parts = line.split()
        # Num: Value Size Type Bind Vis Ndx Name: weak references and versioned (glibc, libstdc++) ones resolve
        # elsewhere or not at all without harm
        if len(parts) < 8 or parts[6] != "UND" or parts[4] != "GLOBAL" or "@" in parts[7]:
            continue
        name = parts[7]
        if name.startswith(("Py", "_Py")) or any(hasattr(lib, name) for lib in system):
            continue  # the interpreter's C API, or the C library's
        symbols[name] = "OBJECT" if parts[3] == "OBJECT" else "FUNC"
    # Which stub defines what cannot be told without the real libraries; every stub defines all of them.
    source = ["/* stubs for " + ", ".join(missing) + " (generated by scripts/api_manifests.py) */"]
    for i, (name, kind) in enumerate(sorted(symbols.items())):
        if kind == "OBJECT":
            source.append(f'unsigned char stub_data_{i}[4096] __asm__("{name}") = {{0}};')
        else:
            source.append(f'long stub_fn_{i}(void) __asm__("{name}");\nlong stub_fn_{i}(void) {{ return 0; }}')
    stub_dir.mkdir(parents=True, exist_ok=True)
    c_file = stub_dir / "stubs.c"
    c_file.write_text("\n".join(source) + "\n")
    for lib in missing:
        subprocess.run(["cc", "-shared", "-fPIC", f"-Wl,-soname,{lib}", "-o", str(stub_dir / lib), str(c_file)],
                       check=True)
    return missing


def _normalize(text: str, package: str) -> str:
    return text.replace(f"{package}.tensorrt.", "tensorrt.").replace(f"{package}.", "tensorrt.")


def pybind_signatures(obj: Any, name: str, package: str) -> list[str]:
    """``["(self: tensorrt.Builder, flags: int = 0) -> tensorrt.INetworkDefinition", ...]``: pybind11 writes one
    line per overload at the top of ``__doc__``; Python functions have inspect.signature."""
    doc = getattr(obj, "__doc__", None) or ""
    lines = doc.strip().splitlines()
    if lines and lines[0].startswith(f"{name}("):
        if len(lines) > 1 and lines[1].strip() == "Overloaded function.":
            sigs = [m.group(1) for line in lines if (m := re.match(rf"\d+\. {re.escape(name)}(\(.*)$", line))]
        else:
            sigs = [lines[0][len(name):]]
        return [_normalize(s, package) for s in sigs]
    try:
        return [_normalize(str(inspect.signature(obj)), package)]
    except (TypeError, ValueError):
        return []


def split_params(signature: str) -> tuple[list[str], str]:
    """``"(a: int, b: X = <E.Y: 1>) -> R"`` -> (["a: int", "b: X = <E.Y: 1>"], " -> R"): commas inside brackets,
    angle brackets (pybind11 writes enum defaults as <...>) and strings do not split."""
    end = _matching(signature, 0)
    inner, rest = signature[1:end - 1], signature[end:]
    params, depth, start, quote = [], 0, 0, None
    for i, c in enumerate(inner):
        if quote:
            quote = None if c == quote else quote
        elif c in "'\"":
            quote = c
        elif c in "([{<":
            depth += 1
        elif c in ")]}>" and not (c == ">" and inner[i - 1] == "-"):
            depth -= 1
        elif c == "," and depth == 0:
            params.append(inner[start:i].strip())
            start = i + 1
    if inner.strip():
        params.append(inner[start:].strip())
    return params, rest


def without_instance(signature: str) -> str:
    """A method's signature without its instance parameter (``self: tensorrt.Builder``, ``this``, ...): every
    method has one, so the manifests leave it out."""
    params, rest = split_params(signature)
    params = params[1:]
    if params and params[0] == "/":
        params = params[1:]
    return f"({', '.join(params)}){rest}"


def describe_module(module: Any, package: str) -> dict[str, Any]:
    """The public surface of ``module``: {dotted name: entry}. Classes nested in classes get their own dotted
    entry; a second name for an object already described (``Logger.Severity`` is ``ILogger.Severity``) is an
    alias."""
    import enum

    names: dict[str, Any] = {}
    seen: dict[int, str] = {}

    def is_enum(cls: type) -> bool:
        return isinstance(getattr(cls, "__members__", None), dict) or issubclass(cls, enum.Enum)

    def describe_class(cls: type, path: str) -> None:
        if id(cls) in seen:
            names[path] = {"kind": "alias", "of": seen[id(cls)]}
            return
        seen[id(cls)] = path
        members = sorted(cls.__members__) if is_enum(cls) else []
        entry: dict[str, Any] = {"kind": "enum" if is_enum(cls) else "class",
                                 "bases": [b.__qualname__ for b in cls.__bases__
                                           if b.__module__.split(".")[0] == package]}
        methods, static, props, attrs, nested = {}, {}, {}, {}, []
        for name, raw in sorted(vars(cls).items()):
            if (name.startswith("_") and (name not in DUNDERS or members)) or name in members:
                continue  # enums: members and name/value are what matters, not their int conversions
            if isinstance(raw, property):
                props[name] = "rw" if raw.fset is not None else "ro"
            elif isinstance(raw, (staticmethod, classmethod)):
                static[name] = pybind_signatures(getattr(cls, name), name, package)
            elif isinstance(raw, type):
                nested.append((name, raw))
            elif callable(raw):
                sigs = [without_instance(sig) for sig in pybind_signatures(getattr(cls, name), name, package)]
                if name == "__init__" and sigs == ["(*args, **kwargs)"]:
                    continue  # pybind11's stand-in for a class Python cannot construct
                methods[name] = sigs
            else:
                attrs[name] = _normalize(f"{type(raw).__module__}.{type(raw).__qualname__}", package)
        for key, value in (("members", members), ("methods", methods), ("static_methods", static),
                           ("properties", props), ("attributes", attrs)):
            if value:
                entry[key] = value
        names[path] = entry
        for name, sub in nested:
            describe_class(sub, f"{path}.{name}")

    for name in sorted(dir(module)):
        if name.startswith("_") and name != "__version__":
            continue
        obj = getattr(module, name)
        if inspect.ismodule(obj):
            if obj.__name__.split(".")[0] == package:
                names[name] = {"kind": "module"}
        elif isinstance(obj, type):
            describe_class(obj, name)
        elif callable(obj):
            names[name] = {"kind": "function", "signatures": pybind_signatures(obj, name, package)}
        else:
            names[name] = {"kind": "value", "type": _normalize(f"{type(obj).__module__}.{type(obj).__qualname__}",
                                                               package)}
    return names


def _dump_tensorrt(site: str) -> None:
    """In the subprocess: import tensorrt_bindings from ``site`` (stubs on LD_LIBRARY_PATH), print its surface."""
    sys.path.insert(0, site)
    import tensorrt_bindings as trt

    json.dump({"version": trt.__version__, "names": describe_module(trt, "tensorrt_bindings")}, sys.stdout)


def tensorrt_manifest(version: str, release: str, work: Path) -> dict[str, Any]:
    requirement = f"tensorrt-cu12-bindings=={release}"
    wheel = pip_download(requirement, work / "downloads")
    site = work / f"tensorrt-{release}"
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(site)
    extension = site / "tensorrt_bindings" / "tensorrt.so"
    stubs = stub_libraries(extension, work / f"stubs-{release}")
    env = {**os.environ, "LD_LIBRARY_PATH": str(work / f"stubs-{release}")}
    out = subprocess.run([sys.executable, __file__, "--dump-tensorrt", str(site)], env=env, check=True,
                         capture_output=True, text=True)
    dumped = json.loads(out.stdout)
    if not dumped["version"].startswith(version):
        raise SystemExit(f"{wheel.name} says it is TensorRT {dumped['version']}, expected {version}")
    return {
        "module": "tensorrt",
        "version": dumped["version"],
        "source": (f"pip download --no-deps {requirement} ({wheel.name}); tensorrt_bindings imported in a "
                   f"subprocess with generated stub {', '.join(stubs)} on LD_LIBRARY_PATH (nothing called into them); "
                   "names, classes, methods, properties, enum members and pybind11 signatures from __doc__. "
                   "'tensorrt_bindings.' is written 'tensorrt.' (the name it is imported under)"),
        "names": dumped["names"],
    }


# --- pycuda: the Boost.Python registrations in its C++ sources ---


def preprocess(text: str, defines: dict[str, int]) -> str:
    """Drop the lines of inactive #if branches and expand object-like multi-line macros (the WRAP_* member
    lists); function-like helper macros (DEF_SIMPLE_METHOD, ...) are read by name later."""
    text = re.sub(r"\\\n", " ", text)  # line continuations
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    text = re.sub(r"//[^\n]*", "", text)

    def evaluate(expr: str) -> bool:
        expr = re.sub(r"defined\s*\(\s*(\w+)\s*\)|defined\s+(\w+)",
                      lambda m: "1" if (m.group(1) or m.group(2)) in defines else "0", expr)
        expr = expr.replace("&&", " and ").replace("||", " or ")
        expr = re.sub(r"!(?!=)", " not ", expr)
        expr = re.sub(r"\b[A-Za-z_]\w*\b", lambda m: m.group(0) if m.group(0) in ("and", "or", "not")
                      else str(defines.get(m.group(0), 0)), expr)
        return bool(eval(expr, {"__builtins__": {}}))  # noqa: S307 - integers and operators only

    out, stack, macros = [], [], {}  # stack: (this branch active, some branch taken, parent active)
    for line in text.splitlines():
        d = re.match(r"\s*#\s*(\w+)\s*(.*)", line)
        active = all(s[0] for s in stack)
        if d:
            kind, rest = d.group(1), d.group(2).strip()
            if kind in ("if", "ifdef", "ifndef"):
                cond = (evaluate(rest) if kind == "if" else (rest.split()[0] in defines) == (kind == "ifdef"))
                stack.append([active and cond, cond, active])
            elif kind == "elif":
                top = stack[-1]
                cond = not top[1] and evaluate(rest)
                top[0], top[1] = top[2] and cond, top[1] or cond
            elif kind == "else":
                top = stack[-1]
                top[0], top[1] = top[2] and not top[1], True
            elif kind == "endif":
                stack.pop()
            elif kind == "define" and active:
                m = re.match(r"(\w+)(\([^)]*\))?\s*(.*)", rest)
                if m and not m.group(2) and m.group(3).lstrip().startswith("."):
                    macros[m.group(1)] = m.group(3)
            continue
        if active:
            out.append(line)
    text = "\n".join(out)
    for _ in range(3):  # macros that use macros
        for name, body in macros.items():
            text = re.sub(rf"\b{name}\b", lambda _m, b=body: b, text)
    return text


def _matching(text: str, start: int, open_: str = "(", close: str = ")") -> int:
    """Index just past the bracket that closes the one at ``start`` (string literals skipped)."""
    depth, i = 0, start
    while i < len(text):
        c = text[i]
        if c == '"':
            i += 1
            while i < len(text) and text[i] != '"':
                i += 2 if text[i] == "\\" else 1
        elif c == open_:
            depth += 1
        elif c == close:
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    return len(text)


def _boost_args(call: str) -> str | None:
    """``(dest, src, stream=...)`` from the py::arg / py::args keywords of one registration, None if it has none
    (Boost.Python then knows the arity from the C++ function but names no argument)."""
    names = []
    with_args = re.match(r'\(\s*\w+\s*,\s*\(\s*("[^()]*)\)', call)  # DEF_SIMPLE_*_WITH_ARGS(name, ("a", "b"))
    if with_args:
        names += re.findall(r'"(\w+)"', with_args.group(1))
    for m in re.finditer(r'\bargs\s*(\(\s*"[^()]*\))|\barg\s*\(\s*"(\w+)"\s*\)(\s*=)?', call):
        if m.group(1):
            names += re.findall(r'"(\w+)"', m.group(1))
        else:
            names.append(m.group(2) + ("=..." if m.group(3) else ""))
    return f"({', '.join(names)})" if names else None


def parse_boost_python(text: str, classes: dict[str, Any], module: dict[str, Any]) -> None:
    """Add the classes, enums, functions and module attributes that ``text`` (one preprocessed registration
    body) registers."""
    cpp_names: dict[str, str] = {}  # C++ type -> Python class name (the `typedef X cl;` of each block)
    helpers: dict[str, list[tuple[str, str, str | None]]] = {}  # template<class Wrapper> void f(Wrapper &)
    for m in re.finditer(r"void\s+(\w+)\s*\(\s*Wrapper\s*&\s*\w+\s*\)\s*\{", text):
        helpers[m.group(1)] = list(_members(text[m.end() - 1:_matching(text, m.end() - 1, "{", "}")]))
    current: str | None = None  # the class the last class_/enum_ registered
    typedef = None
    token = re.compile(r'typedef\s+([\w:<> ]+?)\s+cl\s*;|py::class_<|py::enum_<[^>]*>\s*\(\s*"(\w+)"'
                       r'|py::scope\(\)\s*\.attr\(\s*"(\w+)"\s*\)\s*=\s*(\w+)'
                       r'|DECLARE_EXC\(\s*(\w+)|(?:py::|boost::python::)def\s*\(\s*"(\w+)"'
                       r'|DEF_SIMPLE_FUNCTION(?:_WITH_ARGS)?\s*\(\s*(\w+)|\b(\w+)\s*\(\s*wrapper\s*\)\s*;')
    pos = 0
    while (m := token.search(text, pos)):
        pos = m.end()
        if m.group(1):
            typedef = m.group(1).strip()
        elif m.group(0) == "py::class_<":
            end = _matching(text, m.end() - 1, "<", ">")
            template = text[m.end():end - 1]
            head = re.match(r'\s*(\w+)?\s*(\(\s*"(\w+)")', text[end:])
            if not head:
                continue
            current = head.group(3)
            for cpp in {template.split(",")[0].strip(), typedef} - {None}:
                cpp_names[cpp] = current
            bases = [cpp_names.get(b.strip(), b.strip()) for b in re.findall(r"bases<([^>]*)>", template)]
            entry = classes.setdefault(current, {"kind": "class", "bases": bases})
            args_start = end + head.start(2)
            ctor = re.search(r"py::init<[^;]*?>\s*\(", text[args_start:_matching(text, args_start)])
            if ctor:
                init = _boost_args(text[args_start + ctor.end() - 1:_matching(text, args_start + ctor.end() - 1)])
                entry.setdefault("methods", {})["__init__"] = [init] if init else []
            pos = args_start
            _add_members(entry, _members(text[pos:_statement_end(text, pos)]))
            if head.group(1):  # a named wrapper: its members follow in later statements of the block
                var_text = text[pos:_block_end(text, pos)]
                for s in re.finditer(rf"\b{head.group(1)}\s*\.(?!attr\b)", var_text):
                    _add_members(entry, _members(var_text[s.start():_statement_end(var_text, s.start())]))
                for s in re.finditer(rf'\b{head.group(1)}\.attr\(\s*"(\w+)"', var_text):
                    entry.setdefault("attributes", {})[s.group(1)] = "int"
        elif m.group(2):
            current = m.group(2)
            entry = classes.setdefault(current, {"kind": "enum", "bases": []})
            pos = text.rindex("(", m.start(), m.end())  # the chain of .value() follows the enum_'s call
            _add_members(entry, _members(text[pos:_statement_end(text, pos)]))
        elif m.group(3):
            aliased = m.group(4) in ("wrp", "wrapper", "cls") and current is not None
            module[m.group(3)] = {"kind": "alias", "of": current} if aliased else {"kind": "value", "type": "int"}
        elif m.group(5):
            module[m.group(5)] = {"kind": "class", "bases": [] if m.group(5) == "Error" else ["Error"]}
        elif m.group(6) or m.group(7):
            open_ = text.index("(", m.start())
            args = _boost_args(text[open_:_matching(text, open_)])
            if not (m.group(6) or m.group(7)).startswith("_"):
                module[m.group(6) or m.group(7)] = {"kind": "function", "signatures": [args] if args else []}
        elif m.group(8) in helpers and current is not None:
            _add_members(classes[current], helpers[m.group(8)])


def _statement_end(text: str, pos: int) -> int:
    depth = 0
    for i in range(pos, len(text)):
        c = text[i]
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
            if depth < 0:
                return i
        elif c == ";" and depth == 0:
            return i
    return len(text)


def _block_end(text: str, pos: int) -> int:
    depth = 0
    for i in range(pos, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth < 0:
                return i
    return len(text)


def _members(chain: str):
    """(kind, name, signature) for each member registration in one chained class_ statement."""
    token = re.compile(r'\.\s*(def|def_readwrite|def_readonly|add_property|staticmethod|value)\s*\(\s*"(\w+)"'
                       r'|\.\s*(DEF_SIMPLE_METHOD(?:_WITH_ARGS)?|ENUM_VALUE|DEF_SIMPLE_R[OW]_MEMBER)\s*\(\s*(\w+)')
    for m in token.finditer(chain):
        kind, name = (m.group(1), m.group(2)) if m.group(1) else (m.group(3), m.group(4))
        call = chain[chain.index("(", m.start()):_matching(chain, chain.index("(", m.start()))]
        yield kind, name, _boost_args(call)


def _add_members(entry: dict[str, Any], members) -> None:
    for kind, name, args in members:
        if kind in ("value", "ENUM_VALUE"):
            entry.setdefault("members", []).append(name)
        elif kind in ("def_readwrite", "DEF_SIMPLE_RW_MEMBER"):
            entry.setdefault("properties", {})[name] = "rw"
        elif kind in ("def_readonly", "add_property", "DEF_SIMPLE_RO_MEMBER"):
            entry.setdefault("properties", {})[name] = "ro"
        elif kind == "staticmethod":  # Boost.Python: .def(name) then .staticmethod(name)
            sigs = entry.get("methods", {}).pop(name, [])
            entry.setdefault("static_methods", {})[name] = sigs
        elif name.startswith("_") and name not in DUNDERS:
            continue
        else:
            sigs = entry.setdefault("methods", {}).setdefault(name, [])
            if args and args.startswith(("(self,", "(self)")):  # Boost.Python names self only sometimes
                args = without_instance(args)
            if args and args not in sigs:
                sigs.append(args)
    for key in ("members",):
        if key in entry:
            entry[key] = sorted(set(entry[key]))


def _python_signature(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> str:
    return "(" + ast.unparse(fn.args) + ")"


def driver_py_additions(source: str, classes: dict[str, Any], module: dict[str, Any]) -> None:
    """pycuda/driver.py: its top-level functions, classes and names, and the methods _add_functionality() sets
    on the Boost.Python classes (the CUDA >= 4 branch)."""
    tree = ast.parse(source)
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and not node.name.startswith("_"):
            module[node.name] = {"kind": "function", "signatures": [_python_signature(node)]}
        elif isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
            methods = {f.name: [without_instance(_python_signature(f))] for f in node.body
                       if isinstance(f, ast.FunctionDef) and (not f.name.startswith("_") or f.name in DUNDERS)}
            entry = {"kind": "class", "bases": [ast.unparse(b) for b in node.bases]}
            if methods:
                entry["methods"] = methods
            classes[node.name] = entry
        elif isinstance(node, (ast.Assign, ast.Try)):
            for sub in ast.walk(node):
                if isinstance(sub, ast.Assign):
                    for t in sub.targets:
                        if isinstance(t, ast.Name) and not t.id.startswith("_") and t.id not in module:
                            module[t.id] = {"kind": "value", "type": "?"}
        if isinstance(node, ast.FunctionDef) and node.name == "_add_functionality":
            local = {f.name: f for f in ast.walk(node) if isinstance(f, ast.FunctionDef)}

            def visit(stmts):
                for stmt in stmts:
                    if isinstance(stmt, ast.If) and "get_version" in ast.unparse(stmt.test):
                        visit(stmt.body)  # every CUDA pycuda 2026.1 builds for is >= 4
                    elif isinstance(stmt, ast.Assign):
                        for t in stmt.targets:
                            if (isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name)
                                    and t.value.id in classes and (not t.attr.startswith("_") or t.attr in DUNDERS)):
                                fn = local.get(getattr(stmt.value, "id", ""))
                                sigs = [without_instance(_python_signature(fn))] if fn else []
                                classes[t.value.id].setdefault("methods", {})[t.attr] = sigs

            visit(node.body)


def pycuda_manifest(work: Path) -> dict[str, Any]:
    requirement = f"pycuda=={PYCUDA}"
    sdist = pip_download(requirement, work / "downloads", "--no-build-isolation")
    with tarfile.open(sdist) as tf:
        tf.extractall(work, filter="data")
    src = work / f"pycuda-{PYCUDA}"
    classes: dict[str, Any] = {}
    module: dict[str, Any] = {}
    for name, entry_point in PYCUDA_SOURCES:
        text = (src / "src" / "wrapper" / name).read_text()
        helpers_start = text.find("template<class Wrapper>")
        start = text.index(entry_point)
        body = preprocess(text[start:], PYCUDA_DEFINES)
        if 0 <= helpers_start < start:  # mempool.cpp's expose_memory_pool(wrapper), used by the entry point
            body = preprocess(text[helpers_start:start], PYCUDA_DEFINES) + "\n" + body
        parse_boost_python(body, classes, module)
    driver_py_additions((src / "pycuda" / "driver.py").read_text(), classes, module)
    names = {**module, **classes}
    return {
        "module": "pycuda.driver",
        "version": PYCUDA,
        "source": (f"pip download --no-deps --no-build-isolation {requirement} ({sdist.name}, source only on "
                   "PyPI): the Boost.Python registrations (class_, enum_, def, .def, .staticmethod, add_property, "
                   "def_readwrite, scope().attr) of " + ", ".join(n for n, _ in PYCUDA_SOURCES) +
                   " for the default build (CUDA 12.0 for the #if CUDAPP_CUDA_VERSION branches, HAVE_CURAND on, "
                   "HAVE_GL off), plus pycuda/driver.py's functions, classes and the methods _add_functionality() "
                   "adds. Signatures only where the source names the arguments (py::arg / py::args)"),
        "names": names,
    }


# --- ModelOpt ---


def modelopt_manifest() -> dict[str, Any]:
    import importlib

    import modelopt

    functions = {}
    for module_name, attrs in MODELOPT.items():
        module = importlib.import_module(module_name)
        for attr in attrs:
            sig = inspect.signature(getattr(module, attr))
            functions[f"{module_name}.{attr}"] = {
                "signature": str(sig),
                "parameters": {n: p.kind.name for n, p in sig.parameters.items()},
            }
    return {
        "module": "modelopt",
        "version": modelopt.__version__,
        "source": (f"inspect.signature of the installed nvidia-modelopt {modelopt.__version__} "
                   "(pip install 'nvidia-modelopt[onnx]')"),
        "functions": functions,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", choices=["tensorrt", "pycuda", "modelopt"])
    parser.add_argument("--work", type=Path, help="keep downloads, unpacked packages and stub libraries here")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--dump-tensorrt", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.dump_tensorrt:
        _dump_tensorrt(args.dump_tensorrt)
        return 0
    only = set(args.only or ["tensorrt", "pycuda", "modelopt"])
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        if "tensorrt" in only:
            for version, release in TENSORRT.items():
                write_manifest(f"tensorrt-{version}", tensorrt_manifest(version, release, work), args.out)
        if "pycuda" in only:
            write_manifest(f"pycuda-{PYCUDA}", pycuda_manifest(work), args.out)
        if "modelopt" in only:
            manifest = modelopt_manifest()
            write_manifest(f"modelopt-{manifest['version']}", manifest, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
