"""vlmops.varlen_attention's ``backend`` argument: which kernels run, and torch's varlen_attn as
the routed backend (CUDA)."""

from pathlib import Path

import pytest
import torch
from conftest import RecordVlmopsCalls

import vlmops
from vlmops.ops import varlen_attention as varlen_module
from vlmops.ops.varlen_attention import TORCH_ROUTES, torch_route, varlen_attention_backend


def packed(lengths, H=2, Hk=2, D=16, dtype=torch.float32, device="cpu"):
    gen = torch.Generator().manual_seed(0)
    N = sum(lengths)
    q = torch.randn(N, H, D, generator=gen).to(device=device, dtype=dtype)
    k, v = (torch.randn(N, Hk, D, generator=gen).to(device=device, dtype=dtype) for _ in range(2))
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32, device=device)
    return q, k, v, cu


def test_unknown_backend_is_refused_by_name():
    q, k, v, cu = packed([3, 5])
    with pytest.raises(ValueError, match="backend must be one of"):
        vlmops.varlen_attention(q, k, v, cu, backend="flash")


@pytest.mark.parametrize("backend", ["auto", "vlmops"])
def test_cpu_runs_vlmops_kernels(backend):
    q, k, v, cu = packed([3, 5])
    with RecordVlmopsCalls() as recorder:
        out = vlmops.varlen_attention(q, k, v, cu, max_seqlen_q=5, backend=backend)
    assert "vlmops::varlen_attention" in recorder.calls
    torch.testing.assert_close(out, vlmops.reference.varlen_attention(q, k, v, cu)[0])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"dtype": torch.float32}, "float16 or bfloat16"),
        ({"D": 36}, "multiples of 8 up to 256"),
        ({"max_seqlen_q": None}, "needs max_seqlen_q"),
        ({"max_seqlen_k": 2.0}, "needs max_seqlen_k"),
        ({}, "runs on CUDA only"),
    ],
)
def test_torch_backend_says_what_it_cannot_take(change, message):
    q, k, v, cu = packed([3, 5], D=change.get("D", 16), dtype=change.get("dtype", torch.bfloat16))
    bounds = {"max_seqlen_q": change.get("max_seqlen_q", 5), "max_seqlen_k": change.get("max_seqlen_k", 5)}
    with pytest.raises(ValueError, match=f"backend='torch' .*{message}"):
        vlmops.varlen_attention(q, k, v, cu, cu, **bounds, backend="torch")
    # "auto" never fails for the same reasons: it runs vlmops' kernels.
    assert varlen_attention_backend(q, k, bounds["max_seqlen_q"], bounds["max_seqlen_k"], "auto") == "vlmops"


def test_auto_compiles_without_graph_breaks():
    q, k, v, cu = packed([3, 5])
    compiled = torch.compile(lambda q, k, v: vlmops.varlen_attention(q, k, v, cu, max_seqlen_q=5), fullgraph=True)
    torch.testing.assert_close(compiled(q, k, v), vlmops.varlen_attention(q, k, v, cu, backend="vlmops"))


def test_routes_are_exactly_the_measured_classes():
    for route in TORCH_ROUTES:
        dtype, D = route.dtypes[0], route.head_dims[0]
        assert torch_route(route.capability, dtype, D, route.min_seqlen_q) is route
        assert torch_route(route.capability, dtype, D, route.min_seqlen_q - 1) is None
        assert torch_route(route.capability + 1, dtype, D, route.min_seqlen_q) is None
        unmeasured = next(d for d in range(8, 257, 8) if d not in route.head_dims)
        assert torch_route(route.capability, dtype, unmeasured, route.min_seqlen_q) is None
        assert torch_route(route.capability, torch.float32, D, route.min_seqlen_q) is None
        assert route.source.startswith("benchmarks/results/")


def test_auto_routes_a_measured_class_to_torch(monkeypatch):
    """The decision on a CUDA device, seen from CPU tensors: torch's refusal reads only the device."""
    route = TORCH_ROUTES[0]
    q, k, _, _ = packed([8], D=route.head_dims[0], dtype=route.dtypes[0])
    monkeypatch.setattr(
        varlen_module, "_torch_refusal", lambda q, k, max_q, max_k: None if isinstance(max_q, int) else "bound"
    )
    monkeypatch.setattr(varlen_module, "_capability", lambda index: route.capability)
    assert varlen_attention_backend(q, k, route.min_seqlen_q, route.min_seqlen_q) == "torch"
    assert varlen_attention_backend(q, k, route.min_seqlen_q - 1, route.min_seqlen_q) == "vlmops"
    assert varlen_attention_backend(q, k, None, None) == "vlmops"
    assert varlen_attention_backend(q, k, route.min_seqlen_q, route.min_seqlen_q, "vlmops") == "vlmops"


@pytest.mark.requires_cuda
@pytest.mark.parametrize(("H", "Hk", "D"), [(4, 4, 80), (4, 4, 72), (4, 2, 64), (2, 2, 128)])
def test_torch_backend_matches_vlmops_forward_and_backward(H, Hk, D):
    api = varlen_module._torch_varlen_attn_api()
    if api is None:
        pytest.skip(f"torch {torch.__version__} has no torch.nn.attention.varlen")
    if Hk != H and not api[2]:
        pytest.skip(f"varlen_attn of torch {torch.__version__} has no enable_gqa")
    lengths = [1, 100, 257, 64]
    q, k, v, cu = packed(lengths, H, Hk, D, torch.bfloat16, "cuda")
    for t in (q, k, v):
        t.requires_grad_(True)
    grad = torch.randn_like(q)
    results = {}
    for backend in ("vlmops", "torch"):
        out, lse = vlmops.varlen_attention(q, k, v, cu, None, 257, 257, return_lse=True, backend=backend)
        results[backend] = (out, lse, *torch.autograd.grad(out, (q, k, v), grad))
    for ours, theirs in zip(results["vlmops"], results["torch"]):
        torch.testing.assert_close(ours.float(), theirs.float(), atol=2e-2, rtol=2e-2)


@pytest.mark.requires_cuda
def test_auto_on_a_routed_class_runs_no_vlmops_kernel():
    route = TORCH_ROUTES[0]
    if torch.cuda.get_device_capability()[0] != route.capability:
        pytest.skip(f"the routes name compute capability {route.capability}.x")
    q, k, v, cu = packed([route.min_seqlen_q, 16], 2, 2, route.head_dims[0], route.dtypes[0], "cuda")
    with RecordVlmopsCalls() as recorder:
        vlmops.varlen_attention(q, k, v, cu, max_seqlen_q=route.min_seqlen_q)
    assert "vlmops::varlen_attention" not in recorder.calls


def test_readme_lists_every_route():
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme[readme.index("### Which attention kernels run") :]
    for route in TORCH_ROUTES:
        dims = ", ".join(str(d) for d in route.head_dims)
        assert f"| {dims} | >= {route.min_seqlen_q} |" in section and f"`{route.source}`" in section
