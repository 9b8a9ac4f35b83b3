"""Layout of a compiled model bank: named columns and op codes, no logic.

A bank holds any number of models' forward passes as one program, three arrays:

``models`` int64[N_MODELS, MODEL_COLUMNS]  one row per model id (row 0 and absent models: zeros)
``ops``    int64[n_ops, OP_COLUMNS]        every model's ops, in execution order
``consts`` float32[n_consts]               weights [in, out_pad], biases, gather indices, params

Activations live in a scratch ``float32[2, TILE_ROWS, stride]``: in ``[0]`` each tensor of a
model owns a column range (padded to a multiple of 8 so a dense layer can store whole
vectors), and the batch runs through the program ``TILE_ROWS`` rows at a time so the tile
stays in L1; ``[1]`` is the row-wise ops' work area (operands transposed: rows as lanes).
"""

from __future__ import annotations

#: Rows per pass through the program (a multiple of the dense kernel's 4 rows).
TILE_ROWS = 32
#: Column padding of every tensor and of every weight matrix's output width.
PAD = 8

# models[mid, :]
MODEL_OP_START = 0  # first row of the model's ops
MODEL_OP_STOP = 1  # one past its last op
MODEL_IN = 2  # scratch column of the input features
MODEL_N_IN = 3  # number of features
MODEL_OUT = 4  # scratch column of the raw output
MODEL_N_OUT = 5  # number of raw outputs
MODEL_STRIDE = 6  # scratch columns the model uses
MODEL_VERSION = 7  # manifest version (0: no model)
MODEL_COLUMNS = 8

# ops[i, :]
OP_KIND = 0
OP_OUT = 1  # scratch column of the result
OP_WIDTH = 2  # result width
OP_A = 3  # scratch column of the first operand
OP_A_WIDTH = 4
OP_B = 5  # second operand: scratch column, or consts offset when OP_B_CONST
OP_B_WIDTH = 6
OP_B_CONST = 7  # 1: the second operand is a constant row in consts
OP_W = 8  # dense: consts offset of weights [in, OP_W_STRIDE]; gather: of the indices
OP_W_STRIDE = 9  # dense: padded output width (a multiple of PAD)
OP_BIAS = 10  # dense: consts offset of the padded bias
OP_RELU = 11  # dense: 1 clamps the result at zero
OP_PARAM = 12  # softmax: consts offset of beta
OP_COLUMNS = 13

# OP_KIND values
K_DENSE = 1  # out = act(a @ W + bias)
K_LOGISTIC = 2  # out = 1 / (1 + exp(-a))
K_SOFTMAX = 3  # out = softmax(beta * a) over the row
K_COPY = 4  # out = a (concatenation pieces, casts, unit-stride column slices)
K_GATHER = 5  # out[:, i] = a[:, indices[i]]
K_ADD = 6  # out = a + b (b may be [n, 1] or a constant row; broadcast)
K_MUL = 7
K_DIV = 8
K_GREATER_EQUAL = 9  # out = 1.0 where a >= b else 0.0 (booleans are 0/1 floats)
K_REDUCE_MAX = 10  # out[:, 0] = max over the row
K_REDUCE_SUM = 11  # out[:, 0] = sum over the row
