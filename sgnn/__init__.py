"""sgnn: sparse GNN inference on CPU, compiled from sparse tensor expressions.

>>> import sgnn, torch
>>> A = sgnn.SparseTensor.from_edge_index(torch.tensor([[0, 1], [1, 2]]), num_nodes=3)
>>> sgnn.einsum("ik,kj->ij", A, torch.ones(3, 4)).sum().item()
8.0
"""
from .config import config, settings
from .engine import COO, CSC, CSR, DCSR, Format, Level, SparseTensor, einsum, evaluate, explain
from .engine.expr import (abs_, compute, elu, exp, indices, leaky_relu, log, max_, maximum, min_, minimum,
                          pattern, relu, sigmoid, softmax, sqrt, sum_, tanh, tensors)
from .errors import CompilerError, InternalError, NotSupported, OutOfMemory, SgnnError, UserError

__version__ = "0.1.0"

__all__ = [
    "SparseTensor", "Format", "Level", "CSR", "CSC", "COO", "DCSR", "einsum", "evaluate", "explain",
    "config", "settings", "indices", "tensors", "compute", "sum_", "max_", "min_", "softmax", "pattern",
    "exp", "log", "relu", "leaky_relu", "elu", "sigmoid", "tanh", "sqrt", "abs_", "maximum", "minimum",
    "SgnnError", "UserError", "NotSupported", "InternalError", "CompilerError", "OutOfMemory",
]
