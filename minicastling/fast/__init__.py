"""Fast paths: the same numbers as attention.linear_angular_attention, computed faster.

* `cpu_kernel`: kernel-form attention and the 1-D token conv in one compiled C++ call per layer,
  registered as the operator torch.ops.minicastling.linear_angular_conv (the CPU's path).
* `library_calls`: one autograd.Function over batched matmuls, with a hand-written backward
  (everywhere the CPU kernel does not reach: CUDA, form="official", the 2-D conv, other head dims).

CastlingAttention.attend chooses between them and the readable form in one place. Tests hold both
to the readable form in float64, values and gradients (tests/test_cpu_kernel.py, test_library_calls.py).
"""
