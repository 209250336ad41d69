"""A GRU with exactly PyTorch's equations and parameter layout.

PyTorch stacks the gates r, z, n in the rows of `weight_ih_l0` / `weight_hh_l0` and keeps two bias
vectors; the candidate gate multiplies the *whole* hidden projection (including its bias) by r:

    r  = σ(W_ir x + b_ir + W_hr h + b_hr)
    z  = σ(W_iz x + b_iz + W_hz h + b_hz)
    n  = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn))
    h' = (1 − z) ⊙ n + z ⊙ h

`flax.linen.GRUCell` places the biases differently, so converted weights would not give the same
function; this module keeps PyTorch's layout: `input.kernel = weight_ih_l0.T`,
`input.bias = bias_ih_l0`, `hidden.kernel = weight_hh_l0.T`, `hidden.bias = bias_hh_l0`.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp


def torch_uniform_init(bound: float):
    """U(−bound, bound), PyTorch's default for recurrent weights and linear biases."""
    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)
    return init


def torch_dense(features: int, fan_in: int, name: str | None = None) -> nn.Dense:
    """A Dense initialised like `torch.nn.Linear` (weights and bias U(±1/√fan_in))."""
    return nn.Dense(features, name=name,
                    kernel_init=nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform"),
                    bias_init=torch_uniform_init(fan_in ** -0.5))


class _LinearParams(nn.Module):
    """Holds the kernel `[in, out]` and bias `[out]` of a linear map without applying it, so the
    recurrence can use them inside `jax.lax.scan`."""
    in_features: int
    out_features: int
    bound: float

    @nn.compact
    def __call__(self):
        init = torch_uniform_init(self.bound)
        kernel = self.param("kernel", init, (self.in_features, self.out_features))
        bias = self.param("bias", init, (self.out_features,))
        return kernel, bias


def _gru_update(h, input_gates, hidden_gates):
    """One PyTorch GRU update from precomputed input and hidden projections `[N, 3H]`."""
    i_r, i_z, i_n = jnp.split(input_gates, 3, axis=-1)
    h_r, h_z, h_n = jnp.split(hidden_gates, 3, axis=-1)
    r = jax.nn.sigmoid(i_r + h_r)
    z = jax.nn.sigmoid(i_z + h_z)
    n = jnp.tanh(i_n + r * h_n)
    return (1.0 - z) * n + z * h


def _compute_dtype(x: jnp.ndarray):
    """float32 for inputs of at most float32 precision, float64 for float64 inputs."""
    return jnp.promote_types(jnp.float32, x.dtype)


class GRU(nn.Module):
    """Single-layer GRU over `[N, T, D]` sequences (batch first), PyTorch semantics.

    Computes in float32, or float64 for float64 inputs (bfloat16 / float16 inputs are cast up): the
    recurrence is a tiny part of the FLOPs, and a fixed carry dtype keeps `lax.scan`'s carry type
    stable under bfloat16 models; float64 stays float64 for the exact parity checks.

    Attributes:
      hidden_dim: H.
    """
    hidden_dim: int

    def setup(self):
        bound = self.hidden_dim ** -0.5
        self.input = nn.Dense(3 * self.hidden_dim, kernel_init=torch_uniform_init(bound),
                              bias_init=torch_uniform_init(bound))
        self.hidden = _LinearParams(self.hidden_dim, 3 * self.hidden_dim, bound)

    def __call__(self, inputs: jnp.ndarray, initial_state: jnp.ndarray | None = None):
        """Runs the GRU over time with `lax.scan`.

        Args:
          inputs: `[N, T, D]`.
          initial_state: `[N, H]`, zeros if None.

        Returns:
          (outputs `[N, T, H]` = hidden state after each step, final state `[N, H]`).
        """
        kernel, bias = self.hidden()
        # float64 parameters (parity checks under x64) make a float64 state even from float32
        # inputs, so the carry takes the promoted type from the start.
        dtype = jnp.promote_types(_compute_dtype(inputs), kernel.dtype)
        inputs = inputs.astype(dtype)
        n = inputs.shape[0]
        h0 = (jnp.zeros((n, self.hidden_dim), dtype) if initial_state is None
              else initial_state.astype(dtype))
        input_gates = self.input(inputs)  # all steps in one matmul: [N, T, 3H]

        def step(h, gates_t):
            h = _gru_update(h, gates_t, h @ kernel + bias)
            return h, h

        h_last, outputs = jax.lax.scan(step, h0, jnp.swapaxes(input_gates, 0, 1))
        return jnp.swapaxes(outputs, 0, 1), h_last

    def step(self, state: jnp.ndarray, inputs: jnp.ndarray) -> jnp.ndarray:
        """One update for a batch of (state `[..., H]`, input `[..., D]`) pairs → new state `[..., H]`."""
        kernel, bias = self.hidden()
        dtype = _compute_dtype(inputs)
        state = state.astype(dtype)
        return _gru_update(state, self.input(inputs.astype(dtype)), state @ kernel + bias)
