"""A ``.tflite`` graph -> a program of ``models._ops`` rows, and programs -> one bank.

The flatbuffer is read with the schema LiteRT ships (``ai_edge_litert.schema_py_generated``),
so the compiled backend runs exactly the graph and the weights LiteRT runs (the file the
manifest names, sha256 checked by ``load_manifest``), never a re-trained copy. Only the
ops our networks lower to are supported; any other op is refused by name when the model
is loaded, so an unsupported artifact fails at start-up, not on a request.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from . import _ops as o
from . import _program_cache
from ._artifacts import ArtifactError


@dataclass
class Program:
    """One model's forward pass: op rows (consts offsets local), its consts and scratch layout."""

    ops: np.ndarray  # int64[n, OP_COLUMNS]
    consts: np.ndarray  # float32[m]
    n_in: int
    n_out: int
    in_col: int
    out_col: int
    stride: int


class Bank(NamedTuple):
    """Several models' programs, the one descriptor the compiled forward pass takes.

    Replacing a model version is building a new bank and swapping the object between
    passes; a bank is never modified once built.
    """

    models: np.ndarray  # int64[N_MODELS, MODEL_COLUMNS]
    ops: np.ndarray  # int64[n_ops, OP_COLUMNS]
    consts: np.ndarray  # float32[n_consts]


def _pad(n: int) -> int:
    return (n + o.PAD - 1) // o.PAD * o.PAD


class _Builder:
    """Walks the graph's operators once, giving every activation tensor a scratch column range."""

    def __init__(self, path: Path, data: bytes) -> None:
        from ai_edge_litert import schema_py_generated as schema

        self.path = path
        self.schema = schema
        try:
            model = schema.ModelT.InitFromPackedBuf(data, 0)
        except Exception as exc:  # flatbuffers raises plain errors on a damaged file
            raise ArtifactError(f"cannot parse TFLite model: {path}: {exc!r}") from exc
        if len(model.subgraphs) != 1:
            self._refuse(f"subgraphs={len(model.subgraphs)} (need 1)")
        self.model = model
        self.graph = model.subgraphs[0]
        self.op_names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
        self.cols: dict[int, int] = {}
        self.stride = 0
        self.consts: list[np.ndarray] = []
        self.n_consts = 0
        self.rows: list[list[int]] = []

    def _refuse(self, what: str) -> None:
        raise ArtifactError(
            f"the compiled backend cannot run this TFLite model: {self.path}: {what} (serve it with --backend litert)"
        )

    # --- tensors ---

    def const(self, t: int) -> np.ndarray | None:
        """The constant value of tensor ``t``, or None for an activation."""
        tensor = self.graph.tensors[t]
        data = self.model.buffers[tensor.buffer].data
        if data is None or len(data) == 0:
            return None
        dtypes = {self.schema.TensorType.FLOAT32: np.float32, self.schema.TensorType.INT32: np.int32}
        if tensor.type not in dtypes:
            self._refuse(f"constant tensor {tensor.name.decode()!r} has type={tensor.type}")
        shape = [int(s) for s in (tensor.shape if tensor.shape is not None else [])]
        return np.frombuffer(bytes(data), dtypes[tensor.type]).reshape(shape)

    def width(self, t: int) -> int:
        shape = [int(s) for s in self.graph.tensors[t].shape]
        if len(shape) > 2 or (len(shape) == 2 and shape[0] != 1):
            self._refuse(f"tensor {self.graph.tensors[t].name.decode()!r} has shape={shape} (need [1, w])")
        return shape[-1] if shape else 1

    def col(self, t: int) -> int:
        """Scratch column of activation ``t``, allocated on first use."""
        if t not in self.cols:
            self.cols[t] = self.stride
            self.stride += _pad(self.width(t))
        return self.cols[t]

    def put(self, values: np.ndarray) -> int:
        """Append constants (aligned to PAD floats); their offset."""
        offset = self.n_consts
        flat = np.ascontiguousarray(values, np.float32).ravel()
        padded = np.zeros(_pad(max(len(flat), 1)), np.float32)
        padded[: len(flat)] = flat
        self.consts.append(padded)
        self.n_consts += len(padded)
        return offset

    def emit(self, kind: int, out: int, width: int, **cols: int) -> None:
        row = [0] * o.OP_COLUMNS
        row[o.OP_KIND], row[o.OP_OUT], row[o.OP_WIDTH] = kind, out, width
        for name, value in cols.items():
            row[getattr(o, name)] = int(value)
        self.rows.append(row)

    # --- ops ---

    def build(self) -> Program:
        g = self.graph
        if len(g.inputs) != 1 or len(g.outputs) != 1:
            self._refuse(f"inputs={len(g.inputs)}, outputs={len(g.outputs)} (need 1 and 1)")
        self._alias_concatenated()
        in_col = self.col(int(g.inputs[0]))
        for op in g.operators:
            name = self._name(op)
            handler = getattr(self, f"_op_{name.lower()}", None)
            if handler is None:
                self._refuse(f"op={name}")
            ins = [int(i) for i in op.inputs]
            handler(ins, int(op.outputs[0]), op.builtinOptions)
        out_t = int(g.outputs[0])
        return Program(
            ops=np.array(self.rows, np.int64).reshape(-1, o.OP_COLUMNS),
            consts=np.concatenate(self.consts) if self.consts else np.zeros(0, np.float32),
            n_in=self.width(int(g.inputs[0])),
            n_out=self.width(out_t),
            in_col=in_col,
            out_col=self.col(out_t),
            stride=self.stride,
        )

    def _name(self, op) -> str:
        code = self.model.operatorCodes[op.opcodeIndex]
        return self.op_names.get(max(code.builtinCode, code.deprecatedBuiltinCode), "CUSTOM")

    def _alias_concatenated(self) -> None:
        """Place tensors inside the concatenation that first uses them, so it copies less.

        Only tensors written at their exact width qualify (the graph input, element-wise
        results); a dense layer stores whole padded vectors and would overwrite a neighbour.
        """
        dense_out = {int(op.outputs[0]) for op in self.graph.operators if self._name(op) == "FULLY_CONNECTED"}
        for op in self.graph.operators:
            if self._name(op) != "CONCATENATION":
                continue
            at = self.col(int(op.outputs[0]))
            for t in (int(i) for i in op.inputs):
                if t not in self.cols and t not in dense_out and self.const(t) is None:
                    self.cols[t] = at
                at += self.width(t)

    def _no_fused(self, options, name: str) -> None:
        if options is not None and getattr(options, "fusedActivationFunction", 0) != 0:
            self._refuse(f"{name} with fused activation={options.fusedActivationFunction}")

    def _activation(self, t: int, name: str) -> int:
        if self.const(t) is not None:
            self._refuse(f"{name} with a constant first operand")
        return self.col(t)

    def _op_fully_connected(self, ins, out, options) -> None:
        act = options.fusedActivationFunction
        acts = self.schema.ActivationFunctionType
        if act not in (acts.NONE, acts.RELU) or options.weightsFormat != 0:
            self._refuse(f"FULLY_CONNECTED with activation={act}, weights format={options.weightsFormat}")
        w = self.const(ins[1])
        if w is None or w.dtype != np.float32 or w.ndim != 2:
            self._refuse("FULLY_CONNECTED without constant float32 [out, in] weights")
        n_out, n_in = w.shape
        if n_in != self.width(ins[0]):
            self._refuse(f"FULLY_CONNECTED weights {w.shape} for an input of width {self.width(ins[0])}")
        stride = _pad(n_out)
        wt = np.zeros((n_in, stride), np.float32)
        wt[:, :n_out] = w.T  # [in, out_pad]: the kernel loads 8 outputs of one input at a time
        bias = np.zeros(stride, np.float32)
        b = self.const(ins[2]) if len(ins) > 2 and ins[2] >= 0 else None
        if b is not None:
            bias[:n_out] = b
        self.emit(
            o.K_DENSE, self.col(out), n_out, OP_A=self._activation(ins[0], "FULLY_CONNECTED"),
            OP_A_WIDTH=n_in, OP_W=self.put(wt), OP_W_STRIDE=stride, OP_BIAS=self.put(bias),
            OP_RELU=int(act == acts.RELU),
        )  # fmt: skip

    def _unary(self, kind: int, ins, out, name: str, **cols: int) -> None:
        w = self.width(ins[0])
        self.emit(kind, self.col(out), w, OP_A=self._activation(ins[0], name), OP_A_WIDTH=w, **cols)

    def _op_logistic(self, ins, out, options) -> None:
        self._unary(o.K_LOGISTIC, ins, out, "LOGISTIC")

    def _op_softmax(self, ins, out, options) -> None:
        self._unary(o.K_SOFTMAX, ins, out, "SOFTMAX", OP_PARAM=self.put(np.array([options.beta])))

    def _op_cast(self, ins, out, options) -> None:
        # Booleans are held as 0.0/1.0 floats, so bool -> float32 is a copy.
        src, dst = self.graph.tensors[ins[0]].type, self.graph.tensors[out].type
        types = self.schema.TensorType
        if dst != types.FLOAT32 or src not in (types.BOOL, types.FLOAT32):
            self._refuse(f"CAST from type={src} to type={dst}")
        self._unary(o.K_COPY, ins, out, "CAST")

    def _op_concatenation(self, ins, out, options) -> None:
        self._no_fused(options, "CONCATENATION")
        if options.axis not in (-1, 1):
            self._refuse(f"CONCATENATION on axis={options.axis}")
        at = self.col(out)
        for t in ins:
            w, src = self.width(t), self._activation(t, "CONCATENATION")
            if src != at:  # else already in place (see _alias_concatenated)
                self.emit(o.K_COPY, at, w, OP_A=src, OP_A_WIDTH=w)
            at += w

    def _op_gather(self, ins, out, options) -> None:
        idx = self.const(ins[1])
        if idx is None or idx.ndim != 1 or options.axis not in (-1, 1) or options.batchDims != 0:
            self._refuse("GATHER other than constant column indices on axis 1")
        if idx.min() < 0 or idx.max() >= self.width(ins[0]):
            self._refuse(f"GATHER index out of range: indices={idx.tolist()}")
        if len(idx) != self.width(out):
            self._refuse(f"GATHER of {len(idx)} indices into a tensor of width {self.width(out)}")
        # As many columns as indices (not the input's width: it read the next constants as indices).
        self.emit(o.K_GATHER, self.col(out), len(idx), OP_A=self._activation(ins[0], "GATHER"),
                  OP_A_WIDTH=self.width(ins[0]), OP_W=self.put(idx.astype(np.float32)))  # fmt: skip

    def _binary(self, kind: int, ins, out, options, name: str) -> None:
        self._no_fused(options, name)
        b = self.const(ins[1])
        if b is not None:
            if b.size != 1 and b.size != self.width(ins[0]):
                self._refuse(f"{name} with a constant of shape={list(b.shape)}")
            b_cols = {"OP_B": self.put(b), "OP_B_WIDTH": b.size, "OP_B_CONST": 1}
        else:
            b_cols = {"OP_B": self.col(ins[1]), "OP_B_WIDTH": self.width(ins[1])}
        wa, wb = self.width(ins[0]), b_cols["OP_B_WIDTH"]
        if wa != wb and 1 not in (wa, wb):
            self._refuse(f"{name} of widths {wa} and {wb}")
        self.emit(kind, self.col(out), max(wa, wb), OP_A=self._activation(ins[0], name), OP_A_WIDTH=wa, **b_cols)

    def _op_add(self, ins, out, options) -> None:
        self._binary(o.K_ADD, ins, out, options, "ADD")

    def _op_mul(self, ins, out, options) -> None:
        self._binary(o.K_MUL, ins, out, options, "MUL")

    def _op_div(self, ins, out, options) -> None:
        self._binary(o.K_DIV, ins, out, options, "DIV")

    def _op_greater_equal(self, ins, out, options) -> None:
        self._binary(o.K_GREATER_EQUAL, ins, out, options, "GREATER_EQUAL")

    def _reduce(self, kind: int, ins, out, name: str) -> None:
        axis = self.const(ins[1])
        if axis is None or axis.size != 1 or int(axis.ravel()[0]) not in (-1, 1):
            self._refuse(f"{name} over axes other than the last")
        self._unary(kind, ins, out, name)
        self.rows[-1][o.OP_WIDTH] = 1

    def _op_reduce_max(self, ins, out, options) -> None:
        self._reduce(o.K_REDUCE_MAX, ins, out, "REDUCE_MAX")

    def _op_sum(self, ins, out, options) -> None:
        self._reduce(o.K_REDUCE_SUM, ins, out, "SUM")

    def _op_strided_slice(self, ins, out, options) -> None:
        begin, end, strides = (self.const(t) for t in ins[1:4])
        w = self.width(ins[0])
        if (
            begin is None or end is None or strides is None or begin.size != 2 or np.any(strides != 1)
            or options.ellipsisMask or options.newAxisMask or options.shrinkAxisMask
            or not (options.beginMask & 1 or begin[0] == 0) or not (options.endMask & 1)
        ):  # fmt: skip
            self._refuse("STRIDED_SLICE other than a unit-stride column range")
        lo = 0 if options.beginMask & 2 else int(begin[1]) % (w + 1)
        hi = w if options.endMask & 2 else int(end[1]) if end[1] >= 0 else w + int(end[1])
        if not 0 <= lo < hi <= w or hi - lo != self.width(out):
            self._refuse(f"STRIDED_SLICE columns [{lo}, {hi}) of width {w}")
        self.emit(o.K_COPY, self.col(out), hi - lo, OP_A=self._activation(ins[0], "STRIDED_SLICE") + lo,
                  OP_A_WIDTH=hi - lo)  # fmt: skip


_LAYOUT = ("n_in", "n_out", "in_col", "out_col", "stride")


def program_from_tflite(path: Path) -> Program:
    """The forward pass of the ``.tflite`` at ``path`` as a program (raises ``ArtifactError``).

    Built once per file content and code version, then read from ``_program_cache``.
    """
    path = Path(path)
    data = path.read_bytes()
    entry = _program_cache.key(data)
    cached = _program_cache.load(entry)
    if cached is not None and (prog := _from_arrays(cached)) is not None:
        return prog
    prog = _Builder(path, data).build()
    _program_cache.store(entry, {"ops": prog.ops, "consts": prog.consts,
                                 "layout": np.array([getattr(prog, f) for f in _LAYOUT], np.int64)})  # fmt: skip
    return prog


def _from_arrays(a: dict[str, np.ndarray]) -> Program | None:
    """A cached program, or None when the entry is not one this code wrote."""
    ops, consts, layout = a.get("ops"), a.get("consts"), a.get("layout")
    if (
        ops is None or consts is None or layout is None or ops.dtype != np.int64 or ops.ndim != 2
        or ops.shape[1] != o.OP_COLUMNS or consts.dtype != np.float32 or consts.ndim != 1
        or layout.dtype != np.int64 or layout.shape != (len(_LAYOUT),)
    ):  # fmt: skip
        return None
    return Program(ops, consts, **{f: int(v) for f, v in zip(_LAYOUT, layout, strict=True)})


_CONST_COLUMNS = (o.OP_W, o.OP_BIAS, o.OP_PARAM)


def make_bank(programs: dict[int, tuple[Program, int]], n_models: int) -> Bank:
    """One bank of ``{model_id: (program, version)}``; consts offsets are relocated."""
    models = np.zeros((n_models, o.MODEL_COLUMNS), np.int64)
    ops, consts, n_ops, n_consts = [], [], 0, 0
    for mid, (prog, version) in sorted(programs.items()):
        rows = prog.ops.copy()
        for col in _CONST_COLUMNS:
            rows[:, col] += n_consts
        rows[:, o.OP_B] += n_consts * rows[:, o.OP_B_CONST]
        models[mid] = [n_ops, n_ops + len(rows), prog.in_col, prog.n_in, prog.out_col, prog.n_out,
                       prog.stride, version]  # fmt: skip
        ops.append(rows)
        consts.append(prog.consts)
        n_ops += len(rows)
        n_consts += len(prog.consts)
    return Bank(
        models,
        np.concatenate(ops) if ops else np.zeros((0, o.OP_COLUMNS), np.int64),
        np.concatenate(consts) if consts else np.zeros(0, np.float32),
    )


def scratch_for(bank: Bank) -> np.ndarray:
    """A scratch for every model of ``bank`` (one per thread of callers): float32[2, TILE_ROWS, cols].

    ``[0]`` holds the activations; ``[1]`` is the work area of row-wise ops, which see it
    as [cols, TILE_ROWS] and need an op's width plus two rows of it.
    """
    widest_op = int(bank.ops[:, o.OP_WIDTH].max()) + 2 if len(bank.ops) else 0
    cols = max(int(bank.models[:, o.MODEL_STRIDE].max()), widest_op, o.PAD)
    return np.zeros((2, o.TILE_ROWS, cols), np.float32)
