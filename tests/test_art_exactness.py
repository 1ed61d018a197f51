"""The fast formulations are proven equal to the paper's plain ones, in float64, gradients included."""
import pytest


def rel_err(a, b):
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-300)).item()


@pytest.mark.parametrize("shape", [(2, 6, 14, 14), (3, 5, 5, 7), (1, 4, 2, 3)])
def test_fast_au_embedding_equals_k_convolutions(torch, shape):
    from aunet.model.art import AUEmbedding

    torch.manual_seed(0)
    b, c, h, w = shape
    k = 15
    emb = AUEmbedding(c).double()
    torch.nn.init.normal_(emb.conv.bias)
    f = torch.randn(b, c, h, w, dtype=torch.float64, requires_grad=True)
    m = torch.rand(b, k, h, w, dtype=torch.float64, requires_grad=True)
    grad_out = torch.randn(b, k, c, dtype=torch.float64)

    results = []
    for forward in (emb.forward_fast, emb.forward_naive):
        emb.zero_grad()
        f.grad = m.grad = None
        e = forward(f, m)
        (e * grad_out).sum().backward()
        results.append((e.detach(), f.grad.clone(), m.grad.clone(), emb.conv.weight.grad.clone(), emb.conv.bias.grad.clone()))
    fast, naive = results
    for name, a, b_ in zip(("E", "dF", "dM", "dW", "db"), fast, naive):
        assert rel_err(a, b_) <= 1e-10, name


def test_fast_au_embedding_is_the_conv_not_a_lookalike(torch):
    """Guard against a test that cannot fail: a different conv weight changes the result."""
    from aunet.model.art import AUEmbedding

    torch.manual_seed(1)
    emb = AUEmbedding(4).double()
    f = torch.randn(1, 4, 6, 6, dtype=torch.float64)
    m = torch.rand(1, 15, 6, 6, dtype=torch.float64)
    before = emb.forward_fast(f, m)
    with torch.no_grad():
        emb.conv.weight[0, 0, 0, 0] += 1.0  # a corner tap: only the border-aware windows see it right
    assert rel_err(emb.forward_fast(f, m), before) > 1e-3
    assert rel_err(emb.forward_fast(f, m), emb.forward_naive(f, m)) <= 1e-10


def plain_importance(e):
    a = e @ e.transpose(1, 2)  # Eq. 3: a_ij = E_i · E_j
    return a.sum(-1) / a.sum((-1, -2)).unsqueeze(-1)  # Eq. 4


def test_importance_equals_correlation_matrix_formula(torch):
    from aunet.model.art import au_importance

    torch.manual_seed(0)
    e = (torch.randn(4, 15, 728, dtype=torch.float64) + 0.3).requires_grad_(True)
    w_fast = au_importance(e, eps=1e-30)
    w_plain = plain_importance(e)
    assert rel_err(w_fast, w_plain) <= 1e-10
    g_out = torch.randn(4, 15, dtype=torch.float64)  # not ones: Σ_i W_i = 1 has zero gradient
    (g_fast,) = torch.autograd.grad((w_fast * g_out).sum(), e)
    (g_plain,) = torch.autograd.grad((w_plain * g_out).sum(), e)
    assert rel_err(g_fast, g_plain) <= 1e-8


def test_importance_is_float16_safe_where_plain_dot_products_overflow(torch):
    from aunet.model.art import au_importance

    torch.manual_seed(0)
    e = torch.rand(2, 15, 728, dtype=torch.float64) * 40 + 10  # E_i · E_j ~ 4e5 > float16 max 65504
    assert not torch.isfinite(plain_importance(e.half())).all()
    w16 = au_importance(e.half())
    assert torch.isfinite(w16).all()
    assert rel_err(w16.double(), plain_importance(e)) < 5e-3


def test_importance_zero_embeddings_stay_finite(torch):
    from aunet.model.art import au_importance

    w = au_importance(torch.zeros(2, 15, 8))
    assert torch.isfinite(w).all()


def test_whole_model_fast_equals_naive(torch):
    import aunet

    torch.manual_seed(0)
    fast = aunet.build_model("small").double().eval()
    naive = aunet.build_model(fast.cfg.replace(au_embedding="naive")).double().eval()
    naive.load_state_dict(fast.state_dict())
    x = torch.rand(2, 3, 112, 112, dtype=torch.float64)
    with torch.no_grad():
        a, b = fast(x), naive(x)
    for name in ("cls_logits", "patch_logits", "score"):
        assert rel_err(getattr(a, name), getattr(b, name)) <= 1e-10, name
