"""automoe's ONNX Runtime operator library: int8 kernels with one activation scale per row.

`csrc/automoe_ops.cc` (with `csrc/int8_math.h` and `csrc/ort_abi.h`) holds three ONNX Runtime
custom operators (see that file for why and for their arithmetic): `automoe.Top1MoE`, a whole top-1
MoE feed-forward layer for the few rows of a decode step, and `automoe.Int8Linear` /
`Int8LinearColumns`, one linear layer (all its columns, or a shortlist of them) with the same
arithmetic, which "int8-row" exports use for every linear layer (`int8_rows`). This module
  builds it       `build_library()` compiles it with the local C++ compiler, once per source and
                  compiler, into ~/.cache/automoe/kernels (`AUTOMOE_KERNEL_CACHE` overrides);
                  `available()` says whether that works here
  packs weights   `quantize_columns` and `pack_weights` write a layer's experts as the op reads them
  states it       `reference_top1_moe`: the reference top-1 layer (automoe.moe.top1_moe) with
                  experts that compute as the kernel does (tests compare)
An export that uses the operator copies the library into its folder and names it in
export_info.json ("custom_ops_library"); any ONNX Runtime session then loads it with
`SessionOptions.register_custom_ops_library(path)`: nothing of automoe is needed to run it.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import torch

SOURCE = Path(__file__).resolve().parent / "csrc" / "automoe_ops.cc"
LIBRARY_FILE = "libautomoe_ops.so"
DOMAIN, OP_TYPE = "automoe", "Top1MoE"
FLAGS = ["-O3", "-std=c++17", "-shared", "-fPIC", "-fvisibility=hidden", "-ffp-contract=off"]


class KernelUnavailable(RuntimeError):
    """The operator library cannot be built or loaded on this machine."""


def compiler() -> str | None:
    """The C++ compiler `build_library` uses: $CXX, else c++ / g++ / clang++ on PATH, else None."""
    return os.environ.get("CXX") or next((c for c in ("c++", "g++", "clang++") if shutil.which(c)), None)


def cache_dir() -> Path:
    """Where built libraries are kept: $AUTOMOE_KERNEL_CACHE, else ~/.cache/automoe/kernels."""
    return Path(os.environ.get("AUTOMOE_KERNEL_CACHE") or Path.home() / ".cache" / "automoe" / "kernels")


def build_library() -> Path:
    """The path of the compiled operator library, compiling it first if these sources (csrc/*.cc,
    *.h) have not been compiled with this compiler on this machine. Raises KernelUnavailable (with
    the compiler's own message) where there is no C++ compiler or the build fails."""
    cxx = compiler()
    if cxx is None:
        raise KernelUnavailable("no C++ compiler found (set CXX or install g++) to build automoe's int8 MoE "
                                "operator; or export with moe_dispatch='compact'")
    try:
        version = subprocess.run([cxx, "--version"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError) as e:
        raise KernelUnavailable(f"the C++ compiler {cxx!r} does not run: {e}") from e
    sources = b"".join(path.read_bytes() for path in sorted(SOURCE.parent.iterdir()) if path.suffix in (".cc", ".h"))
    key = hashlib.sha256(sources + version.encode() + " ".join(FLAGS).encode()
                         + platform.machine().encode()).hexdigest()[:16]
    out = cache_dir() / key / LIBRARY_FILE
    if out.is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    # compile beside the target and rename: concurrent builders never see a half-written library
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=out.parent)
    os.close(fd)
    try:
        done = subprocess.run([cxx, *FLAGS, "-o", tmp, str(SOURCE)], capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            raise KernelUnavailable(f"building {SOURCE.name} with {cxx} failed:\n{done.stderr[-2000:]}")
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out


@functools.lru_cache(maxsize=1)
def available() -> bool:
    """Whether the operator library builds and loads here (checked once per process)."""
    try:
        isa(build_library())
        return True
    except (KernelUnavailable, OSError):
        return False


def isa(library: str | Path) -> str:
    """The instruction set the library's kernel runs with on this CPU: "avx512-vnni" or "portable"."""
    lib = ctypes.CDLL(str(library))
    lib.AutomoeKernelIsa.restype = ctypes.c_char_p
    return lib.AutomoeKernelIsa().decode()


def quantize_columns(weight: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Symmetric per-column int8 quantization of a [K, N] weight (y = x @ weight):
    (codes int8 [K, N], scales fp32 [N], column sums of the codes int32 [N])."""
    w = weight.detach().double()
    scale = w.abs().amax(0) / 127.0
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))  # an all-zero column: any scale is exact
    codes = torch.round(w / scale).clamp(-127, 127).to(torch.int8)
    return codes.numpy(), scale.float().numpy(), codes.int().sum(0).numpy().astype(np.int32)


def _padded(K: int, N: int) -> tuple[int, int]:
    """A K x N matrix's dims in the kernel's layout: K rounded up to 4, N to 16."""
    return -(-K // 4) * 4, -(-N // 16) * 16


def packed_size(K: int, N: int) -> int:
    """Bytes of a K x N matrix in the kernel's layout (`pack_weights`)."""
    k4, n16 = _padded(K, N)
    return k4 * n16


def pack_weights(codes: np.ndarray) -> np.ndarray:
    """int8 [K, N] -> the kernel's layout, flat: [ceil(N/16)][ceil(K/4)][16][4], zero-padded (one
    64-byte load then holds 4 consecutive k of 16 consecutive columns)."""
    K, N = codes.shape
    k4, n16 = _padded(K, N)
    padded = np.zeros((k4, n16), np.int8)
    padded[:K, :N] = codes
    return np.ascontiguousarray(padded.reshape(k4 // 4, 4, n16 // 16, 16).transpose(2, 0, 3, 1)).reshape(-1)


def unpack_weights(packed: torch.Tensor, K: int, N: int) -> torch.Tensor:
    """The inverse of `pack_weights`: a packed K x N matrix (flat) -> [K, N]."""
    k4, n16 = _padded(K, N)
    return packed.reshape(n16 // 16, k4 // 4, 16, 4).permute(1, 3, 0, 2).reshape(k4, n16)[:K, :N]


def packed_depth(packed: np.ndarray, N: int) -> int:
    """K rounded up to 4 of a packed matrix of N columns (`pack_weights`' layout): the rows past K
    are zeros, so unpacking it as that many rows gives the same products."""
    return packed.size // _padded(0, N)[1]


def layer_inputs(experts: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]) -> list[torch.Tensor]:
    """A layer's experts, each (fc1.weight [W, d], fc1.bias, fc2.weight [d, W], fc2.bias) as
    torch.nn.Linear holds them, -> the operator's inputs 2..10: w1, s1, c1, b1, w2, s2, c2, b2,
    widths (tensors; experts concatenated in order)."""
    parts: list[list[np.ndarray]] = [[] for _ in range(8)]
    for fc1_w, fc1_b, fc2_w, fc2_b in experts:
        for offset, (w, b) in ((0, (fc1_w, fc1_b)), (4, (fc2_w, fc2_b))):
            codes, scales, sums = quantize_columns(w.t())
            parts[offset] += [pack_weights(codes)]
            parts[offset + 1] += [scales]
            parts[offset + 2] += [sums]
            parts[offset + 3] += [b.detach().float().numpy()]
    tensors = [torch.from_numpy(np.concatenate(p)) for p in parts]
    return tensors + [torch.tensor([w.shape[0] for w, _, _, _ in experts], dtype=torch.int64)]


def _quantize_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-row asymmetric uint8 quantization as the kernel does it, in fp32 like the kernel:
    (codes as float64 [n, K], scales fp32 [n, 1], zero points float64 [n, 1])."""
    lo = x.amin(-1, keepdim=True).clamp(max=0)
    hi = x.amax(-1, keepdim=True).clamp(min=0)
    s = (hi - lo) / 255.0
    s = torch.where(s == 0, torch.ones_like(s), s)
    z = torch.round(-lo / s).clamp(0, 255)
    q = (torch.round(x * (1.0 / s)) + z).clamp(0, 255)
    return q.double(), s, z.double()


def int8_linear(x: torch.Tensor, codes: torch.Tensor, scale: torch.Tensor, sums: torch.Tensor,
                bias: torch.Tensor) -> torch.Tensor:
    """The kernel's int8 linear layer in PyTorch: x [n, K] quantized per row, times per-column int8
    `codes` [K, N] (`quantize_columns`: scales [N], column sums [N]), plus `bias` -> [n, N]."""
    q, s, z = _quantize_rows(x)
    acc = (q @ codes.double() - z * sums.double()).float()  # exact integers
    return acc * scale * s + bias


def reference_top1_moe(x: torch.Tensor, router_weight: torch.Tensor, inputs: list[torch.Tensor],
                       router_scale: bool = True) -> torch.Tensor:
    """What `automoe.Top1MoE` computes, in PyTorch: the reference top-1 layer `automoe.moe.top1_moe`
    with experts that compute as the kernel does (`int8_linear`). x [..., d], the router's weight
    [E, d] (as torch.nn.Linear holds it), `inputs` the operator's inputs 2..10 (`layer_inputs`) ->
    [..., d]. Equal to the kernel's output up to fp32 rounding (of the router logits too: a row whose
    two best logits tie to the last bit may pick the other expert)."""
    from automoe.moe import top1_moe

    w1, s1, c1, b1, w2, s2, c2, b2, widths = inputs
    d = x.shape[-1]
    experts, col, off1, off2 = [], 0, 0, 0
    for e, width in enumerate(widths.tolist()):
        size1, size2 = packed_size(d, width), packed_size(width, d)
        fc1 = (unpack_weights(w1[off1: off1 + size1], d, width), s1[col: col + width], c1[col: col + width],
               b1[col: col + width])
        fc2 = (unpack_weights(w2[off2: off2 + size2], width, d), s2[e * d: (e + 1) * d], c2[e * d: (e + 1) * d],
               b2[e * d: (e + 1) * d])
        experts.append(lambda rows, fc1=fc1, fc2=fc2: int8_linear(int8_linear(rows, *fc1).relu(), *fc2))
        col, off1, off2 = col + width, off1 + size1, off2 + size2
    return top1_moe(x.reshape(-1, d).float(), router_weight.float(), experts, router_scale)[0].view_as(x)
