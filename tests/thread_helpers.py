"""``num_threads(n)``: run a block at a given torch (and so sgnn) thread count, restored afterwards."""
import contextlib

import torch


@contextlib.contextmanager
def num_threads(n: int):
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)
