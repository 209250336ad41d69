"""Our GRU against torch.nn.GRU with the same weights (PyTorch's gate equations and layout)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adafocus_jax.models.recurrent import GRU

torch = pytest.importorskip("torch")


def test_gru_matches_torch():
    torch.manual_seed(0)
    ref = torch.nn.GRU(6, 5, batch_first=True)
    with torch.no_grad():
        for p in ref.parameters():
            p.uniform_(-0.8, 0.8)
    x = torch.randn(3, 4, 6)
    h0 = torch.randn(1, 3, 5)
    want_out, want_h = ref(x, h0)
    sd = {k: v.detach().numpy() for k, v in ref.state_dict().items()}
    params = {"input": {"kernel": sd["weight_ih_l0"].T, "bias": sd["bias_ih_l0"]},
              "hidden": {"kernel": sd["weight_hh_l0"].T, "bias": sd["bias_hh_l0"]}}
    gru = GRU(5)
    out, h = gru.apply({"params": params}, jnp.asarray(x.numpy()), jnp.asarray(h0[0].numpy()))
    np.testing.assert_allclose(out, want_out.detach().numpy(), atol=1e-6)
    np.testing.assert_allclose(h, want_h[0].detach().numpy(), atol=1e-6)
    # One step from an arbitrary state equals torch's single step.
    step = gru.apply({"params": params}, jnp.asarray(h0[0].numpy()), jnp.asarray(x[:, 0].numpy()),
                     method=GRU.step)
    np.testing.assert_allclose(step, want_out[:, 0].detach().numpy(), atol=1e-6)


def test_gru_param_shapes():
    variables = GRU(7).init(jax.random.key(0), jnp.zeros((2, 3, 4)))
    shapes = jax.tree.map(lambda x: x.shape, variables["params"])
    assert shapes == {"input": {"kernel": (4, 21), "bias": (21,)},
                      "hidden": {"kernel": (7, 21), "bias": (21,)}}
